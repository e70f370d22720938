"""Greedy selection: the pruned / incremental search must equal brute-force greedy."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ntk_advisor.ntk import OutputSpec
from ntk_advisor.ntk.select import greedy_select, objective_value


def problem(seed: int, items: int = 14, rows: int = 6):
    g = torch.Generator().manual_seed(seed)
    factors = torch.randn(items, rows, 3, generator=g, dtype=torch.float64)
    kernels = factors @ factors.transpose(1, 2) * torch.rand(items, 1, 1, generator=g, dtype=torch.float64)
    costs = torch.randint(1, 5, (items,), generator=g).double()
    spec = OutputSpec("margin", 2, torch.tensor([0, 1, 1, 0, 1, 0]))
    return kernels, costs, spec


def brute_force(kernels, costs, budget, objective, spec, ridge):
    chosen, spent, kernel = [], 0.0, torch.zeros(kernels.shape[1:], dtype=torch.float64)
    args = (spec.centred_targets(), spec.regression_targets(), ridge)
    current = objective_value(kernel, objective, *args) if objective != "alignment" else 0.0
    while True:
        best, best_gain = -1, -math.inf
        for i in range(len(kernels)):
            if i in chosen or spent + costs[i] > budget:
                continue
            gain = (objective_value(kernel + kernels[i], objective, *args) - current) / float(costs[i])
            if gain > best_gain:
                best, best_gain = i, gain
        if best < 0:
            return chosen
        chosen.append(best)
        kernel = kernel + kernels[best]
        spent += float(costs[best])
        current = objective_value(kernel, objective, *args)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 1000), st.sampled_from(["alignment", "trace", "lambda_min", "condition"]),
       st.floats(0.01, 1.0))  # a zero ridge makes κ infinite until K_S is full rank
def test_greedy_equals_brute_force(seed, objective, ridge):
    kernels, costs, spec = problem(seed)
    budget = 12.0
    got = greedy_select(kernels, costs, budget, objective, spec.centred_targets(), spec.regression_targets(), ridge)
    assert got.chosen == brute_force(kernels, costs, budget, objective, spec, ridge)
    assert float(costs[got.chosen].sum()) <= budget


def test_weyl_bounds_skip_work_without_changing_the_answer():
    kernels, costs, spec = problem(7, items=40)
    got = greedy_select(kernels, costs, 20.0, "lambda_min", spec.centred_targets(), spec.regression_targets(), 0.1)
    assert got.skipped_by_bound > 0
    assert got.exact_evaluations < 40 * len(got.chosen)
    assert got.chosen == brute_force(kernels, costs, 20.0, "lambda_min", spec, 0.1)


def test_start_items_come_first_and_budget_holds():
    kernels, costs, spec = problem(3)
    got = greedy_select(kernels, costs, 10.0, "loo", spec.centred_targets(), spec.regression_targets(), 0.5,
                        start=[4, 2])
    assert got.chosen[:2] == [4, 2]
    assert float(costs[got.chosen].sum()) <= 10.0
    assert len(got.gains) == len(got.chosen)


def test_unknown_objective():
    kernels, costs, spec = problem(0)
    with pytest.raises(ValueError, match="unknown objective"):
        greedy_select(kernels, costs, 5.0, "vibes", spec.centred_targets(), spec.regression_targets(), 0.1)


def test_evaluation_cap_is_reported():
    kernels, costs, spec = problem(11, items=40)
    capped = greedy_select(kernels, costs, 20.0, "lambda_min", spec.centred_targets(), spec.regression_targets(), 0.1,
                           max_evaluations=2)
    exact = greedy_select(kernels, costs, 20.0, "lambda_min", spec.centred_targets(), spec.regression_targets(), 0.1)
    assert exact.capped_steps == 0 and capped.capped_steps > 0
    assert capped.exact_evaluations <= 2 * len(capped.chosen)
    assert float(costs[capped.chosen].sum()) <= 20.0
