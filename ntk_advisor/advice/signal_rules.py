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
    for key in (f"{group}_signal", f"{group}_alignment", group):  # an SFT profile without M has only energy
        if name in profile.scores.get(key, {}):
            return profile.scores[key][name]
    raise KeyError(f"the profile holds no {group} scores of '{name}'")


def lora_by_spectrum(captured: Captured, config: RecommendConfig, budget: int, step: int = 2,
                     coverage: bool = False):
    """LoRA ranks where the label gradient's energy is: rank step j of module m is worth
    σ_2j² + σ_2j+1² of G_m per d_in + d_out weights each. σ_j falls with j, so every module's
    returns diminish and the greedy by value per weight, which takes each module's steps in
    order, spreads rank over modules instead of piling it into one.

    ``coverage`` (allocation ``signal``) first gives every module rank 1 (worth σ_1², best
    value per weight first, so a budget too small for all modules covers the most promising),
    then spends the rest in steps of ``step`` ranks from each module's second singular value:
    lora-all's spread, with the extra rank where the spectrum says."""
    spectra = captured.profile.scores["signal_spectrum"]
    placement: dict[str, int] = {}
    scores: dict[str, float] = {}
    spent = 0
    if coverage:
        firsts = [(float(spectra[name][0]), name, unit_cost(t, "rank")) for name, t in captured.targets.items()]
        for value, name, cost in sorted(firsts, key=lambda item: -item[0] / item[2]):  # stable: ties in model order
            if spent + cost <= budget:
                placement[name], scores[name] = 1, value
                spent += cost
    offset = 1 if coverage else 0  # the rank each module already has before its steps
    steps = []
    for name, t in captured.targets.items():
        if coverage and name not in placement:
            continue  # its rank 1 did not fit: its later steps are not on offer either
        values = spectra[name][: config.module_rank * 4]
        cost = step * unit_cost(t, "rank")
        for j in range(offset, len(values) - step + 1, step):  # whole steps only: rank ≤ min(d_out, d_in)
            value = float(values[j:j + step].sum())
            steps.append((value / cost, name, cost, value))
    steps.sort(key=lambda item: -item[0])  # stable: equal ratios keep module order
    taken = 0
    for _, name, cost, value in steps:
        if spent + cost <= budget:
            placement[name] = placement.get(name, 0) + step
            scores[name] = scores.get(name, 0.0) + value
            spent += cost
            taken += 1
    if not placement:
        smallest = "rank 1 of any module" if coverage else f"LoRA rank step of {step}"
        raise RecipeError(f"--budget {config.budget} buys no {smallest}: raise it")
    offered = len(steps) + (len(captured.targets) if coverage else 0)
    return placement, scores, {"objective": "label_signal", "candidate_items": offered,
                               "steps": taken + (len(placement) if coverage else 0)}


def rows_by_signal(captured: Captured, config: RecommendConfig, budget: int):
    """RoCoFT rows by the label-gradient score with diminishing returns: every module first
    gets its best row (coverage), then the next row of whichever module offers the most score
    per weight. A module's rows are taken best first, so each further row is worth less than
    the one before: the objective is concave in each module's row count, unlike tr K_S."""
    import heapq

    ordered = {name: torch.argsort(unit_alignment(captured.profile, config.axis, name), descending=True)
               for name in captured.targets}
    scores_of = {name: unit_alignment(captured.profile, config.axis, name) for name in captured.targets}
    costs = {name: unit_cost(t, config.axis) for name, t in captured.targets.items()}
    chosen: dict[str, list[int]] = {name: [] for name in captured.targets}
    spent = 0
    first = sorted(captured.targets, key=lambda n: -float(scores_of[n][ordered[n][0]]) / costs[n])
    for name in first:  # the coverage round, most promising modules first
        if spent + costs[name] <= budget:
            chosen[name].append(int(ordered[name][0]))
            spent += costs[name]
    heap = [(-float(scores_of[n][ordered[n][1]]) / costs[n], n) for n in captured.targets
            if chosen[n] and len(ordered[n]) > 1]
    heapq.heapify(heap)
    while heap:
        _, name = heapq.heappop(heap)
        if spent + costs[name] > budget:
            continue  # this module's row no longer fits; a cheaper module's may
        chosen[name].append(int(ordered[name][len(chosen[name])]))
        spent += costs[name]
        if len(chosen[name]) < len(ordered[name]):
            heapq.heappush(heap, (-float(scores_of[name][ordered[name][len(chosen[name])]]) / costs[name], name))
    placement = {name: rows for name, rows in chosen.items() if rows}
    if not placement:
        raise RecipeError(f"--budget {config.budget} buys no row of any module: raise it")
    module_scores = {name: float(scores_of[name][rows].sum()) for name, rows in placement.items()}
    return placement, module_scores, {"objective": "label_signal", "steps": sum(map(len, placement.values()))}
