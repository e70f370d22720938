"""The parts of a profile that every kind of model shares: which modules, their kernels by
either route, and the spectral summaries (profiler.py for classifiers, sft.py for causal LMs)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import ProfileError
from ..inputs import models
from ..ntk import OutputSpec, jacobian_kernels, kernel_report, structured_kernels
from ..ntk.spectral import eigenvalues
from .config import ProfileConfig
from .folder import ModuleSummary

Progress = Callable[[str, int, int], None]


def selected_targets(loaded: models.LoadedModel, config: ProfileConfig) -> list[models.TargetModule]:
    """Every Linear module, or the ones ``config.modules`` names."""
    targets = models.discover_targets(loaded.backbone)
    if config.modules:
        unknown = sorted(set(config.modules) - {t.name for t in targets})
        if unknown:
            raise ProfileError(f"unknown module '{unknown[0]}': list them with ntk-advisor models show MODEL")
        targets = [t for t in targets if t.name in set(config.modules)]
    return targets


def module_kernels(loaded: models.LoadedModel, batch: dict, targets, spec: OutputSpec, route: str,
                    capture_mib: int, progress: Progress) -> dict:
    """{module name: ModuleKernel on the CPU} of ``targets``, by the structured or the Jacobian route."""
    prefix = models.SequenceLogits.prefix
    with torch.enable_grad():
        if route == "structured":
            modules = {prefix + t.name: loaded.backbone.get_submodule(t.name) for t in targets}
            raw = structured_kernels(loaded.logits_model, batch, modules, spec, on_progress=progress,
                                     max_group_bytes=capture_mib * 2**20)
        else:
            weights = {prefix + t.name: (prefix + t.name + ".weight", t.transposed) for t in targets}
            raw = jacobian_kernels(loaded.logits_model, batch, weights, spec, on_progress=progress)
    return {name[len(prefix):]: value.to("cpu") for name, value in raw.items()}


def kernel_summaries(targets, results, spec: OutputSpec, labels: torch.Tensor, config: ProfileConfig):
    """Each module's spectral summary, and the total kernel's (with its whole spectrum)."""
    labelled = spec.defined_alignment
    report_args = dict(centred=spec.centred_targets() if labelled else None,
                       targets=spec.regression_targets() if labelled else None,
                       classes=labels if labelled else None, predict=spec.predicted_classes, ridge=config.ridge)
    summaries = []
    for t in targets:
        stats = results[t.name]
        route = "jacobian" if config.route == "jacobian" else stats.route
        summaries.append(ModuleSummary(t.name, t.role, t.layer, t.d_out, t.d_in, t.num_weights, route,
                                       **kernel_report(stats.kernel, **report_args)))
    total_kernel = sum(r.kernel for r in results.values())
    total = kernel_report(total_kernel, **report_args)
    total["spectrum"] = eigenvalues(total_kernel).tolist()
    return summaries, total_kernel, total


def library_versions() -> dict[str, str]:
    from ..recipe.provenance import library_versions as versions

    return versions(("ntk-advisor", "torch", "transformers", "safetensors", "scikit-learn"))
