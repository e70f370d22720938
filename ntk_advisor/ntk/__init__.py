"""The math: empirical NTK per module, rows and columns, spectra and bounds. Imports only torch."""

from .contractions import ModuleKernel, choose_route, gram_route, per_example_route
from .kernels import jacobian_kernels, structured_kernels
from .spectral import (
    condition_number_bounds,
    distance_bound,
    eigenvalues,
    kernel_report,
    kernel_target_alignment,
    loo_kernel_ridge,
    spectral_summary,
    weyl_eigenvalue_bounds,
)
from .signal import label_gradient_scores
from .targets import REDUCTIONS, OutputSpec

__all__ = [
    "REDUCTIONS", "ModuleKernel", "OutputSpec", "choose_route", "condition_number_bounds", "distance_bound",
    "eigenvalues", "gram_route", "jacobian_kernels", "kernel_report", "kernel_target_alignment", "label_gradient_scores",
    "loo_kernel_ridge", "per_example_route", "spectral_summary", "structured_kernels", "weyl_eigenvalue_bounds",
]
