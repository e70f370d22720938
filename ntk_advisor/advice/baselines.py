"""Named baseline placements, as units per module; each method turns the counts into its parts.

Baselines by name (docs/method.md §10), all filled to the same weight budget:

==============  =========================================================================
name            rule
==============  =========================================================================
first-k         RoCoFT's default: the first k rows (columns) of every module
random          k random rows (columns) of every module, seeded
wanda-min/max   k rows (columns) with the lowest / highest Wanda score of every module:
                row i: ‖Y[:, i]‖₂ · Σ_j |W_ij|; column j: ‖X[:, j]‖₂ · Σ_i |W_ij|, with X, Y the
                module's real inputs / outputs on the probe tokens
weight-kappa    whole modules by weight condition number σ_max/σ_min, lowest first (KappaTune)
grad-norm       whole modules by relative loss-gradient norm ‖∇_W L‖/‖W‖, highest first
lora-qv         LoRA of one rank on every query and value (PEFT's default for BERT-like models)
lora-all        LoRA of one rank on every module
lora-mlp        LoRA of one rank on every FFN module only (PEFT's MetaMathQA benchmark found
                it 1.6-3.1 points better than q,v at equal parameters)
==============  =========================================================================

k is the largest count that fits the budget in every module; the remainder buys one more
row for modules in model order. Module-level rules give each chosen module ``module_rank``
rows (or LoRA rank) until the budget is spent.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import RecipeError
from ..inputs.models import TargetModule
from ..settings import ModuleGroup


def unit_cost(target: TargetModule, axis: str) -> int:
    """Trainable weights of one row (d_in), one column (d_out) or one LoRA rank (d_in + d_out)."""
    return {"rows": target.d_in, "cols": target.d_out, "rank": target.d_in + target.d_out}[axis]


def axis_size(target: TargetModule, axis: str) -> int:
    return target.d_out if axis == "rows" else target.d_in


def uniform_counts(targets: list[TargetModule], axis: str, budget: int, cap: int | None = None) -> dict[str, int]:
    """Same count k in every module, the remainder as one extra unit in model order."""
    costs = [unit_cost(t, axis) for t in targets]
    limits = [cap or (axis_size(t, axis) if axis != "rank" else min(t.d_in, t.d_out)) for t in targets]
    k = budget // sum(costs)
    counts = {t.name: min(k, lim) for t, lim in zip(targets, limits)}
    left = budget - sum(counts[t.name] * c for t, c in zip(targets, costs))
    for t, c, lim in zip(targets, costs, limits):
        if c <= left and counts[t.name] < lim:
            counts[t.name] += 1
            left -= c
    if not any(counts.values()):
        cheapest = min(costs)
        raise RecipeError(f"budget {budget} is below the cheapest item ({cheapest} weights): raise --budget")
    return {name: k for name, k in counts.items() if k > 0}


def module_order_fill(ordered: list[TargetModule], axis: str, budget: int, per_module: int) -> dict[str, int]:
    """Give modules, in the given order, ``per_module`` units each until the budget is spent."""
    counts, left = {}, budget
    for t in ordered:
        cost = unit_cost(t, axis)
        k = min(per_module, left // cost, axis_size(t, axis) if axis != "rank" else per_module)
        if k > 0:
            counts[t.name] = k
            left -= k * cost
    if not counts:
        raise RecipeError(f"budget {budget} is below the cheapest item: raise --budget")
    return counts


def wanda_scores(weight: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, axis: str) -> torch.Tensor:
    """RoCoFT's pruning score on real activations; weight is W[d_out, d_in], x (N, T, d_in)."""
    tokens = x.reshape(-1, x.shape[-1])[mask.reshape(-1).bool()] if x.shape[1] == mask.shape[1] else x.reshape(
        -1, x.shape[-1])
    w = weight.detach().to(torch.float64)
    tokens = tokens.to(torch.float64)
    if axis == "rows":
        return (tokens @ w.T).norm(dim=0) * w.abs().sum(1)
    return tokens.norm(dim=0) * w.abs().sum(0)


def weight_condition_number(weight: torch.Tensor) -> float:
    s = torch.linalg.svdvals(weight.detach().to(torch.float64))
    return float(s[0] / s[-1]) if s[-1] > 0 else float("inf")


def baseline_counts(name: str, unit: str, targets: list[TargetModule], budget: int, *,
                    weights: dict[str, torch.Tensor], grad_norms: dict[str, float] | None = None,
                    module_rank: int = 8, seed: int = 0) -> dict[str, int]:
    """Units per module of a named baseline at ``budget`` weights (see the module table); the
    method turns counts into parts (which rows, or the rank)."""
    if name in ("weight-kappa", "grad-norm"):
        if name == "weight-kappa":
            ordered = sorted(targets, key=lambda t: weight_condition_number(weights[t.name]))
        else:
            ordered = sorted(targets, key=lambda t: -grad_norms[t.name])
        return module_order_fill(ordered, unit, budget, module_rank)
    if name == "random" and unit == "rank":  # LoRA: random modules; RoCoFT: random rows in every module
        order = np.random.default_rng(seed).permutation(len(targets))
        return module_order_fill([targets[i] for i in order], unit, budget, module_rank)
    if name == "lora-qv":
        chosen = [t for t in targets if t.role in ("query", "value")]
        if not chosen:
            raise RecipeError("lora-qv needs query/value modules; this model has none: use lora-all")
        return uniform_counts(chosen, unit, budget)
    if name == "lora-mlp":
        chosen = [t for t in targets if t.role in ModuleGroup.roles(ModuleGroup.FFN.value)]  # --modules ffn's set
        if not chosen:
            raise RecipeError("lora-mlp needs FFN modules; this model has none: use lora-all")
        return uniform_counts(chosen, unit, budget)
    return uniform_counts(targets, unit, budget)
