"""Spectral summaries of PSD kernels, kernel-target alignment, LOO kernel ridge, Weyl bounds.

All inputs are float64 kernels K (R×R, symmetric PSD up to round-off). Eigenvalues come from
``eigvalsh`` of (K + Kᵀ)/2: O(R³), R ≤ a few hundred in a profile, so milliseconds.
"""

from __future__ import annotations

import math

import torch


def symmetrize(kernel: torch.Tensor) -> torch.Tensor:
    return 0.5 * (kernel + kernel.T)


def eigenvalues(kernel: torch.Tensor) -> torch.Tensor:
    """Ascending eigenvalues of the symmetrized kernel (float64)."""
    return torch.linalg.eigvalsh(symmetrize(kernel.to(torch.float64)))


def kernel_target_alignment(kernel: torch.Tensor, centred_targets: torch.Tensor) -> float:
    """A(K, T) = ⟨K, T⟩_F / (‖K‖_F ‖T‖_F) with T = Ỹ Ỹᵀ; NaN when K or T is zero.

    ⟨K, ỸỸᵀ⟩ = tr(Ỹᵀ K Ỹ) and ‖ỸỸᵀ‖_F = ‖ỸᵀỸ‖_F, so T is never formed: O(R²·k).
    """
    y = centred_targets.to(kernel.dtype)
    numerator = torch.trace(y.T @ kernel @ y)
    denominator = torch.linalg.norm(kernel) * torch.linalg.norm(y.T @ y)
    return float(numerator / denominator) if denominator > 0 else math.nan


def loo_kernel_ridge(kernel: torch.Tensor, targets: torch.Tensor, ridge: float) -> torch.Tensor:
    """Leave-one-out predictions of kernel ridge regression, (R, k), in closed form.

    With A = K + ridge·I, α = A⁻¹ Y, the LOO residual is e_i = α_i / (A⁻¹)_ii, so the
    prediction for i trained on the others is Y_i − e_i (docs/method.md §6). One R×R inverse.
    ``ridge`` is absolute; callers scale it by tr K / R so it means the same for every module.
    """
    a = symmetrize(kernel) + ridge * torch.eye(kernel.shape[0], dtype=kernel.dtype)
    inverse = torch.linalg.inv(a)
    alpha = inverse @ targets
    return targets - alpha / torch.diagonal(inverse)[:, None]


def relative_ridge(kernel: torch.Tensor, ridge: float) -> float:
    """ridge × mean diagonal: a scale-free proximal strength (kernels differ by decades)."""
    return ridge * float(torch.diagonal(kernel).mean().clamp_min(1e-300))


def spectral_summary(eigvals: torch.Tensor, rel_tol: float = 1e-12) -> dict[str, float]:
    """trace, λ_max, λ_min, κ = λ_max/λ_min, stable rank tr/λ_max, entropy effective rank.

    λ_min ≤ rel_tol·λ_max counts as zero, so κ is reported as inf instead of a round-off ratio.
    Effective rank is exp(H(p)), p_i = λ_i / Σλ (Roy & Vetterli, 2007).
    """
    ev = eigvals.clamp_min(0.0)
    lam_max = float(ev[-1])
    lam_min = float(eigvals[0])
    trace = float(ev.sum())
    if lam_max <= 0:
        return {"trace": trace, "lambda_max": lam_max, "lambda_min": lam_min, "condition_number": math.inf,
                "stable_rank": 0.0, "effective_rank": 0.0}
    p = ev / ev.sum()
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    return {
        "trace": trace,
        "lambda_max": lam_max,
        "lambda_min": lam_min,
        "condition_number": lam_max / lam_min if lam_min > rel_tol * lam_max else math.inf,
        "stable_rank": trace / lam_max,
        "effective_rank": math.exp(entropy),
    }


def weyl_eigenvalue_bounds(eig_s: torch.Tensor, eig_l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on the ascending eigenvalues of K_S + K_l from those of K_S and K_l (both PSD).

    λ_i(K_S) + λ_min(K_l) ≤ λ_i(K_S + K_l) ≤ λ_i(K_S) + λ_max(K_l)   (Weyl)
    """
    return eig_s + eig_l[0], eig_s + eig_l[-1]


def condition_number_bounds(eig_s: torch.Tensor, eig_l: torch.Tensor) -> tuple[float, float]:
    """(lower, upper) bounds on κ(K_S + K_l) from both spectra (docs/method.md §7).

    upper: (λ_max(S) + λ_max(l)) / (λ_min(S) + λ_min(l)); lower: λ_max(S) / (λ_min(S) + λ_max(l)).
    """
    s_min, s_max = float(eig_s[0].clamp_min(0)), float(eig_s[-1])
    l_min, l_max = float(eig_l[0].clamp_min(0)), float(eig_l[-1])
    upper = (s_max + l_max) / (s_min + l_min) if s_min + l_min > 0 else math.inf
    lower = s_max / (s_min + l_max) if s_min + l_max > 0 else math.inf
    return lower, upper


def distance_bound(excluded_lambda_max: list[float] | torch.Tensor) -> float:
    """‖K_full − K_S‖₂ ≤ Σ_{l∉S} λ_max(K_l): how far a restricted kernel can be from the full one."""
    return float(torch.as_tensor(excluded_lambda_max, dtype=torch.float64).sum())


def kernel_report(kernel: torch.Tensor, centred: torch.Tensor | None, targets: torch.Tensor | None,
                  classes: torch.Tensor | None, predict, ridge: float = 1e-3,
                  absolute_ridge: float | None = None) -> dict[str, float]:
    """Spectral summary + alignment + LOO kernel-ridge accuracy of one kernel.

    ``predict`` maps LOO predictions (R, k) to class ids (N,); ``classes`` are the true ids.
    The ridge is ``ridge`` × mean diagonal of this kernel, or ``absolute_ridge`` when given
    (to compare several kernels under one proximal strength). Alignment and accuracy are NaN
    when no labels are given (or, for alignment, a single class).
    """
    report = spectral_summary(eigenvalues(kernel))
    report["alignment"] = kernel_target_alignment(kernel, centred) if centred is not None else math.nan
    if targets is not None and report["trace"] > 0:
        strength = absolute_ridge if absolute_ridge is not None else relative_ridge(kernel, ridge)
        loo = loo_kernel_ridge(kernel, targets, strength)
        report["loo_accuracy"] = float((predict(loo) == classes).double().mean())
    else:
        report["loo_accuracy"] = math.nan
    return report
