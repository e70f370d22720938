"""Budgeted greedy selection of kernel items (rows, columns, modules, LoRA rank steps).

Each candidate item i has a kernel K_i (R×R, PSD) and a cost c_i in trainable parameters;
training a set S gives the kernel K_S = Σ_{i∈S} K_i (docs/method.md §3-5). Greedy adds, while the
budget lasts, the affordable item with the best gain per parameter
(f(K_S + K_i) − f(K_S)) / c_i for an objective f of the restricted kernel:

=============  ==================================================  =========================
objective      f(K), with ridge ρ (the proximal λ in kernel units)  how a step is searched
=============  ==================================================  =========================
alignment      ⟨K, T⟩_F / (‖K‖_F ‖T‖_F), T = ỸỸᵀ                    exact for all items, O(I·R²)
trace          tr K                                                 exact, additive
lambda_min     λ_min(K + ρI)                                        branch and bound (Weyl)
condition      −(λ_max + ρ)/(λ_min + ρ)                             branch and bound (Weyl)
loo            −mean LOO squared error of kernel ridge with ρ        exact on a shortlist
=============  ==================================================  =========================

Weyl pruning: λ_min(K_S + K_i) ≤ λ_min(K_S) + λ_max(K_i), so the gain of λ_min is at most
λ_max(K_i); and κ(K_S + K_i) ≥ λ_max(K_S)/(λ_min(K_S) + λ_max(K_i)). Items are visited in
order of that bound per parameter and the search stops once no remaining bound can beat
the best exact gain found: the step is exact, with far fewer eigendecompositions.
The LOO objective has no such bound; it evaluates the ``shortlist`` items whose alignment
gain per parameter is best. Row kernels are low rank, so λ_min gains are often far below
their bound; a step therefore evaluates at most ``max_evaluations`` items (in bound order)
and is reported as capped when the bound had not yet closed the search.

Cost per step: I·R² for the alignment bookkeeping (one matvec), plus R³ per exact evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .spectral import symmetrize

OBJECTIVES = ("alignment", "loo", "lambda_min", "condition", "trace")
LABELLED_OBJECTIVES = ("alignment", "loo")  # undefined without labels (supervised fine-tuning)


@dataclass
class Selection:
    chosen: list[int] = field(default_factory=list)  # item indices in the order added
    gains: list[float] = field(default_factory=list)  # objective gain per parameter of each step
    value: float = math.nan  # objective of the final kernel
    exact_evaluations: int = 0
    skipped_by_bound: int = 0
    capped_steps: int = 0  # steps where max_evaluations ran out before the bound closed the search


def objective_value(kernel: torch.Tensor, objective: str, centred: torch.Tensor, targets: torch.Tensor,
                    ridge: float) -> float:
    """f(K) of the table above for one kernel."""
    if objective == "trace":
        return float(torch.trace(kernel))
    if objective == "alignment":
        norm = torch.linalg.norm(kernel) * torch.linalg.norm(centred.T @ centred)
        return float(torch.trace(centred.T @ kernel @ centred) / norm) if norm > 0 else 0.0
    eye = torch.eye(kernel.shape[0], dtype=kernel.dtype)
    if objective == "loo":
        inverse = torch.linalg.inv(symmetrize(kernel) + ridge * eye)
        residual = (inverse @ targets) / torch.diagonal(inverse)[:, None]
        return -float(residual.square().mean())
    eig = torch.linalg.eigvalsh(symmetrize(kernel))
    if objective == "lambda_min":
        return float(eig[0]) + ridge
    if objective == "condition":
        return -(float(eig[-1]) + ridge) / max(float(eig[0]) + ridge, 1e-300)
    raise ValueError(f"unknown objective '{objective}': use one of {', '.join(OBJECTIVES)}")


def greedy_select(
    item_kernels: torch.Tensor,
    costs: torch.Tensor,
    budget: float,
    objective: str,
    centred: torch.Tensor,
    targets: torch.Tensor,
    ridge: float,
    start: list[int] | None = None,
    shortlist: int = 24,
    max_evaluations: int = 64,
) -> Selection:
    """Greedy gain-per-parameter selection; ``start`` items are taken first (e.g. coverage).

    item_kernels (I, R, R) float64, costs (I,) parameters, centred (R, k) centred targets,
    targets (R, k) regression targets. Memory: the item kernels themselves (I·R² floats).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective '{objective}': use one of {', '.join(OBJECTIVES)}")
    count, rows, _ = item_kernels.shape
    flat = item_kernels.reshape(count, -1)
    costs = costs.to(torch.float64)
    target_gram = (centred @ centred.T).reshape(-1)
    target_norm = float(torch.linalg.norm(centred.T @ centred))
    item_align = flat @ target_gram  # ⟨K_i, T⟩
    item_sq = flat.square().sum(1)  # ‖K_i‖²
    item_trace = torch.diagonal(item_kernels, dim1=1, dim2=2).sum(1)
    need_bounds = objective in ("lambda_min", "condition")
    item_lmax = torch.linalg.eigvalsh(item_kernels)[:, -1] if need_bounds else None

    selection = Selection()
    kernel = torch.zeros(rows, rows, dtype=torch.float64)
    cross = torch.zeros(count, dtype=torch.float64)  # ⟨K_S, K_i⟩, updated by one matvec per step
    available = torch.ones(count, dtype=torch.bool)
    spent = 0.0
    current = objective_value(kernel, objective, centred, targets, ridge) if objective != "alignment" else 0.0

    def add(index: int, gain: float):
        nonlocal kernel, spent, current
        kernel = kernel + item_kernels[index]
        cross.add_(flat @ flat[index])
        available[index] = False
        spent += float(costs[index])
        selection.chosen.append(index)
        selection.gains.append(gain)
        current = objective_value(kernel, objective, centred, targets, ridge)

    for index in start or []:
        if available[index] and spent + float(costs[index]) <= budget:
            before = current
            add(index, math.nan)
            selection.gains[-1] = (current - before) / float(costs[index])

    while True:
        affordable = available & (costs <= budget - spent)
        if not affordable.any():
            break
        candidates = affordable.nonzero().flatten()
        align_num = float((kernel.reshape(-1) @ target_gram)) + item_align[candidates]
        align_den = (float(kernel.square().sum()) + 2 * cross[candidates] + item_sq[candidates]).clamp_min(1e-300)
        alignment_after = align_num / (align_den.sqrt() * max(target_norm, 1e-300))
        if objective == "alignment":
            gains = (alignment_after - current) / costs[candidates]
            best = int(gains.argmax())
            index, gain = int(candidates[best]), float(gains[best])
        elif objective == "trace":
            gains = item_trace[candidates] / costs[candidates]
            best = int(gains.argmax())
            index, gain = int(candidates[best]), float(gains[best])
        else:
            index, gain = _searched_step(objective, candidates, kernel, current, item_kernels, costs, item_lmax,
                                         alignment_after, centred, targets, ridge, shortlist, max_evaluations,
                                         selection)
        if index < 0:
            break
        add(index, gain)
    selection.value = current
    return selection


def _searched_step(objective, candidates, kernel, current, item_kernels, costs, item_lmax, alignment_after,
                   centred, targets, ridge, shortlist, max_evaluations, selection) -> tuple[int, float]:
    """One step by branch and bound on Weyl bounds (λ_min, κ), or on an alignment shortlist (loo).

    Exact unless ``max_evaluations`` items are evaluated before the bound closes the search;
    then the best of those (the highest bounds) is taken and the step counted as capped.
    """
    if objective == "loo":
        order = candidates[torch.argsort(alignment_after / costs[candidates], descending=True)][:shortlist]
        bounds = None
    else:
        eig = torch.linalg.eigvalsh(symmetrize(kernel))
        s_min, s_max = float(eig[0]), float(eig[-1])
        if objective == "lambda_min":
            bound_gain = item_lmax[candidates]  # λ_min(S + i) − λ_min(S) ≤ λ_max(K_i)
        else:
            kappa_low = (s_max + ridge) / (s_min + ridge + item_lmax[candidates]).clamp_min(1e-300)
            bound_gain = -current - kappa_low  # current = −κ_S, so gain ≤ κ_S − κ_lower
        per_param = bound_gain / costs[candidates]
        ranking = torch.argsort(per_param, descending=True)
        order, bounds = candidates[ranking], per_param[ranking]
    best_index, best_gain = -1, -math.inf
    for position, index in enumerate(order.tolist()):
        if bounds is not None and float(bounds[position]) < best_gain:
            selection.skipped_by_bound += len(order) - position
            break
        if position == max_evaluations:
            selection.capped_steps += 1
            break
        value = objective_value(kernel + item_kernels[index], objective, centred, targets, ridge)
        selection.exact_evaluations += 1
        gain = (value - current) / float(costs[index])
        if gain > best_gain or (gain == best_gain and index < best_index):  # ties: lowest index, as argmax
            best_index, best_gain = index, gain
    return best_index, best_gain
