"""Placement rules driven by the label-gradient scores of a profile (ntk.signal).

The profile's ``rows_signal`` / ``cols_signal`` say which rows (columns) of a module the
labels point at, over 1,024 examples; ``signal_spectrum`` (σ_j(G)²) says how much of a
module's label-gradient energy a rank-r update can hold. The methods use them to choose each
module's rows, to spread LoRA rank, and to report ``label_signal`` for any placement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import RecipeError
from ..profiling.capture import Captured
from ..profiling.folder import NtkProfile
from .baselines import unit_cost

if TYPE_CHECKING:  # annotations only: the methods import this module, and the config imports the methods
    from .config import RecommendConfig


def coverage_order(items: list, costs: list, alignments: list[float], rounds: int) -> list[int]:
    """Round r takes every module's r-th best-aligned candidate, best alignment per parameter
    first, so that when the budget runs out inside a round the most promising modules got
    their row, not the first layers in model order."""
    per_module: dict[str, list[int]] = {}
    for i, (name, _) in enumerate(items):
        per_module.setdefault(name, []).append(i)  # candidates are listed best-aligned first
    order = []
    for r in range(rounds):
        layer = [indices[r] for indices in per_module.values() if len(indices) > r]
        order += sorted(layer, key=lambda i: -alignments[i] / float(costs[i]))
    return order


def unit_alignment(profile: NtkProfile, axis: str, name: str) -> torch.Tensor:
    """The score that picks a module's rows (or columns): the label-gradient score over the
    profile's M examples when it has one (ntk.signal), else the probe sample's alignment
    numerator. Both measure how far a row's kernel points at the labels (the first is the
    `full` reduction's ⟨K_row, vec(Ỹ)vec(Ỹ)ᵀ⟩/M², the second the profile reduction's
    ⟨K_row, ỸỸᵀ⟩); the first on 16× more examples by default, which is what makes the chosen
    rows repeat across probe seeds (README, "Stability")."""
    group = "rows" if axis == "rows" else "cols"
    signal = profile.scores.get(f"{group}_signal", {})
    return signal[name] if name in signal else profile.scores[f"{group}_alignment"][name]


def lora_by_spectrum(captured: Captured, config: RecommendConfig, budget: int, step: int = 2):
    """LoRA ranks where the label gradient's energy is: rank step j of module m is worth
    σ_2j² + σ_2j+1² of G_m per d_in + d_out weights each. σ_j falls with j, so every module's
    returns diminish and the greedy by value per weight, which takes each module's steps in
    order, spreads rank over modules instead of piling it into one."""
    spectra = captured.profile.scores["signal_spectrum"]
    steps = []
    for name, t in captured.targets.items():
        values = spectra[name][: config.module_rank * 4]
        cost = step * unit_cost(t, "rank")
        for j in range(0, len(values) - step + 1, step):  # whole steps only: rank ≤ min(d_out, d_in)
            value = float(values[j:j + step].sum())
            steps.append((value / cost, name, cost, value))
    steps.sort(key=lambda item: -item[0])  # stable: equal ratios keep module order
    placement: dict[str, int] = {}
    scores: dict[str, float] = {}
    spent = 0
    for _, name, cost, value in steps:
        if spent + cost <= budget:
            placement[name] = placement.get(name, 0) + step
            scores[name] = scores.get(name, 0.0) + value
            spent += cost
    if not placement:
        raise RecipeError(f"--budget {config.budget} buys no LoRA rank step of {step}: raise it")
    return placement, scores, {"objective": "label_signal", "candidate_items": len(steps),
                               "steps": sum(r // step for r in placement.values())}
