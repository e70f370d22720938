"""Spectral summaries, alignment, LOO kernel ridge and Weyl bounds against independent computations."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.kernel_ridge import KernelRidge

from ntk_advisor.ntk import (
    OutputSpec,
    condition_number_bounds,
    distance_bound,
    eigenvalues,
    kernel_report,
    kernel_target_alignment,
    loo_kernel_ridge,
    spectral_summary,
    weyl_eigenvalue_bounds,
)


def random_psd(seed: int, n: int, rank: int | None = None, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, rank or n, generator=g, dtype=torch.float64) * scale
    return a @ a.T


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(2, 12), st.floats(1e-3, 1e3))
def test_weyl_bounds_bracket_exact_eigenvalues(seed_s, seed_l, n, scale):
    k_s, k_l = random_psd(seed_s, n), random_psd(seed_l + 10_001, n, scale=math.sqrt(scale))
    exact = eigenvalues(k_s + k_l)
    lower, upper = weyl_eigenvalue_bounds(eigenvalues(k_s), eigenvalues(k_l))
    tol = 1e-9 * float(exact[-1])
    assert bool((lower <= exact + tol).all()) and bool((exact <= upper + tol).all())
    kappa = float(exact[-1] / exact[0])
    low, high = condition_number_bounds(eigenvalues(k_s), eigenvalues(k_l))
    assert low * (1 - 1e-9) <= kappa <= high * (1 + 1e-9)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 5), st.integers(3, 10))
def test_distance_bound_holds(seed, parts, n):
    kernels = [random_psd(seed + i, n, rank=2) for i in range(parts)]
    full = sum(kernels)
    kept = kernels[: parts // 2]
    restricted = sum(kept) if kept else torch.zeros(n, n, dtype=torch.float64)
    gap = torch.linalg.matrix_norm(full - restricted, ord=2)
    bound = distance_bound([float(eigenvalues(k)[-1]) for k in kernels[parts // 2:]])
    assert float(gap) <= bound * (1 + 1e-9)


def test_alignment_equals_explicit_formula():
    k = random_psd(0, 8)
    y = torch.tensor([0, 1, 1, 0, 2, 2, 1, 0])
    spec = OutputSpec("trace", 3, y)
    centred = spec.centred_targets()
    target_gram = centred @ centred.T
    expected = float((k * target_gram).sum() / (k.norm() * target_gram.norm()))
    assert math.isclose(kernel_target_alignment(k, centred), expected, rel_tol=1e-12)
    # A kernel equal to the target Gram is perfectly aligned.
    assert math.isclose(kernel_target_alignment(target_gram, centred), 1.0, rel_tol=1e-12)


def test_loo_kernel_ridge_matches_refitting_without_each_point():
    k = random_psd(3, 10, rank=6)
    y = torch.randn(10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ridge = 0.3
    loo = loo_kernel_ridge(k, y, ridge)
    for i in range(10):
        keep = [j for j in range(10) if j != i]
        model = KernelRidge(alpha=ridge, kernel="precomputed").fit(k[keep][:, keep].numpy(), y[keep].numpy())
        refit = model.predict(k[i : i + 1, keep].numpy())
        np.testing.assert_allclose(loo[i].numpy(), refit[0], rtol=1e-8, atol=1e-10)


def test_spectral_summary_of_known_spectrum():
    eig = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    k = torch.diag(eig)
    s = spectral_summary(eigenvalues(k))
    assert s["trace"] == 7.0 and s["lambda_max"] == 4.0 and s["lambda_min"] == 1.0
    assert s["condition_number"] == 4.0 and math.isclose(s["stable_rank"], 7 / 4)
    p = eig / 7
    assert math.isclose(s["effective_rank"], math.exp(float(-(p * p.log()).sum())))
    singular = spectral_summary(eigenvalues(torch.diag(torch.tensor([0.0, 1.0], dtype=torch.float64))))
    assert singular["condition_number"] == math.inf


def test_kernel_report_accuracy_on_separable_kernel():
    # Labels are a linear function of features: LOO kernel ridge must classify them perfectly.
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 1] * 10)
    feats = torch.randn(20, 3, generator=g, dtype=torch.float64) * 0.05
    feats[:, 0] += 2.0 * y - 1.0
    k = feats @ feats.T
    spec = OutputSpec("margin", 2, y)
    report = kernel_report(k, spec.centred_targets(), spec.regression_targets(), y, spec.predicted_classes)
    assert report["loo_accuracy"] == 1.0 and report["alignment"] > 0.9
    noise = random_psd(5, 20, rank=20)
    assert kernel_report(noise, spec.centred_targets(), spec.regression_targets(), y,
                         spec.predicted_classes)["alignment"] < report["alignment"]
