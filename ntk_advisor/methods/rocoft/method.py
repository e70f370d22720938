"""RoCoFT as a registered method: rows or columns of each weight, chosen by the profile."""

from __future__ import annotations

import math

import numpy as np
import torch

from ...advice.baselines import axis_size, baseline_counts, unit_cost, wanda_scores
from ...advice.signal_rules import coverage_order, rows_by_signal, unit_alignment
from ...ntk.rows_cols import per_col_kernels, per_row_kernels
from ...recipe.conversions import axolotl_unfrozen, default_rank, peft_section
from ...recipe.schema import Target
from ..base import Candidates, Method, Slices
from . import apply_rocoft, load_rocoft_adapter, merge_rocoft, save_rocoft_adapter


class RoCoFT(Method):
    """Train chosen rows (output units) or columns (input features) of each Linear, W = W0 + Δ
    with Δ non-zero on the index set (Kowsher et al., ACL 2025; docs/method.md §9)."""

    name = "rocoft"
    part_type = Slices
    baselines = ("first-k", "random", "wanda-min", "wanda-max", "weight-kappa", "grad-norm")
    reference = "first-k"
    allocations = ("greedy", "uniform", "signal", "free")
    # Chosen on the suite's validation split (docs/suite.md): at 100k greedy had the best mean
    # and the best worst task there; uniform, the "safe" spread, was the one rule that harmed.
    default_allocation = "greedy"
    safe_allocations = ("uniform",)  # first-k's row counts; only which rows follows the profile
    cross_arms = (("lora-qv", "lora"),)
    unit_label = "rows"

    def part_cost(self, module, part: Slices) -> int:
        return len(part.indices) * unit_cost(module, part.axis)

    def check_part(self, module, part: Slices) -> str | None:
        size = axis_size(module, part.axis)
        bad = [i for i in part.indices if i >= size]
        return f"index {bad[0]} is out of range for {part.axis} of '{module.name}' ({size} {part.axis})" if bad else None

    # ------------------------------------------------------------------ advice
    def kernel_part(self, captured, name: str, part: Slices) -> torch.Tensor:
        return captured.slice_kernel(name, part.axis, part.indices)

    def candidates(self, captured, config) -> Candidates:
        """Per module, the best candidates by alignment and by energy (half each); listed
        best-aligned first, which is the order the coverage seed takes them in."""
        found = Candidates([], [], [])
        alignments: list[float] = []
        per_unit = per_row_kernels if config.axis == "rows" else per_col_kernels
        for name, t in captured.targets.items():
            align = unit_alignment(captured.profile, config.axis, name)
            energy = captured.profile.scores["rows" if config.axis == "rows" else "cols"][name]
            half = max(1, config.candidates_per_module // 2)
            chosen = torch.unique(torch.cat([torch.argsort(align, descending=True)[:half],
                                             torch.argsort(energy, descending=True)[:half]]))
            chosen = chosen[torch.argsort(align[chosen], descending=True)]
            block = sum(per_unit(captured.x[name], d, chosen.tolist()) for d in captured.deltas[name])
            captured.keep_unit_kernels(name, config.axis, chosen.tolist(), block)
            for position, index in enumerate(chosen.tolist()):
                found.items.append((name, index))
                found.kernels.append(block[position])
                found.costs.append(unit_cost(t, config.axis))
                alignments.append(float(align[index]))
        if config.allocation != "free":
            rounds = 1 if config.allocation == "greedy" else config.candidates_per_module
            found.start = coverage_order(found.items, found.costs, alignments, rounds)
        return found

    def allocate(self, captured, config, budget: int):
        """allocation signal: rows by the label-gradient score with diminishing returns per module."""
        if config.allocation != "signal":
            return None
        rows, scores, stats = rows_by_signal(captured, config, budget)
        placement = {name: Slices(config.axis, tuple(sorted(indices))) for name, indices in rows.items()}
        stats["objective_value"] = self.signal_captured(captured, placement)
        return placement, scores, stats

    def collect(self, chosen, config) -> dict[str, Slices]:
        rows: dict[str, list[int]] = {}
        for name, index in chosen:
            rows.setdefault(name, []).append(index)
        return {name: Slices(config.axis, tuple(sorted(indices))) for name, indices in rows.items()}

    def baseline(self, name: str, captured, config, budget: int) -> dict[str, Slices]:
        targets = list(captured.targets.values())
        counts = baseline_counts(name, config.axis, targets, budget, weights=captured.weights,
                                 grad_norms=captured.grad_norms if name == "grad-norm" else None,
                                 module_rank=config.module_rank, seed=config.seed)
        rng = np.random.default_rng(config.seed)
        mask = captured.profile.inputs["attention_mask"]
        placement = {}
        for t in targets:
            k = counts.get(t.name, 0)
            if k == 0:
                continue
            size = axis_size(t, config.axis)
            if name == "random":
                indices = sorted(rng.choice(size, size=k, replace=False).tolist())
            elif name.startswith("wanda"):
                scores = wanda_scores(captured.weights[t.name], captured.x[t.name], mask, config.axis)
                indices = sorted(torch.argsort(scores, descending=name == "wanda-max")[:k].tolist())
            else:  # first-k and the module-level rules take the first units
                indices = list(range(k))
            placement[t.name] = Slices(config.axis, tuple(indices))
        return placement

    def signal_captured(self, captured, placement: dict[str, Slices]) -> float:
        """The rows' (columns') label-gradient scores over every placeable module's ‖G‖²_F."""
        rows = captured.profile.scores.get("rows_signal", {})
        if not all(name in rows for name in captured.targets):
            return math.nan
        total = sum(float(rows[name].sum()) for name in captured.targets)
        held = sum(float(unit_alignment(captured.profile, part.axis, name)[list(part.indices)].sum())
                   for name, part in placement.items())
        return held / total if total > 0 else math.nan

    # ------------------------------------------------------------------ models
    def apply(self, model, recipe, extra_trainable, head_name):
        apply_rocoft(model, [(t.module, t.axis, t.indices) for t in recipe.targets], extra_trainable=extra_trainable)
        return model

    def save(self, model, folder, recipe) -> None:
        save_rocoft_adapter(model, folder, {"base_model": recipe.model.name, "num_labels": recipe.model.num_labels})

    def owns_adapter(self, config: dict) -> bool:
        return config.get("method") == self.name

    def load(self, model, folder):
        load_rocoft_adapter(model, folder)
        return model

    def merge(self, model):
        return merge_rocoft(model)

    # ------------------------------------------------------------------ other tools' keys
    def peft_section(self, placement: dict[str, Slices], training) -> dict:
        """The nearest LoRA: rank = rows per module."""
        ranks = {name: part.units for name, part in placement.items()}
        return peft_section(tuple(Target(module=m, rank=r) for m, r in ranks.items()), default_rank(ranks), None,
                            training.lora_dropout)

    def axolotl_section(self, placement: dict[str, Slices], training) -> dict:
        return axolotl_unfrozen({name: (part.axis, part.indices) for name, part in placement.items()})

    def conversion_note(self, tool: str, placement: dict[str, Slices], training=None) -> str | None:
        if tool == "peft":
            return "RoCoFT slices have no exact equivalent there; this is the nearest LoRA (rank = rows per module)"
        if any(part.axis == "cols" for part in placement.values()):
            return "axolotl unfreezes row ranges only; columns are given as whole weights unfrozen"
        return None
