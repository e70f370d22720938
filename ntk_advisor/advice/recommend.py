"""recommend(): turn a profile into a placement at a parameter budget, written as a Recipe.

The profile folder holds the probe sample and the head, so the exact profiled model is
rebuilt and one forward / C backward passes give each module's x and δ again; from them the
kernel of any row or column set is exact (ntk.rows_cols). The advised RoCoFT placement seeds
every module with its best-aligned row (or rows, --allocation uniform), aligned meaning the
profile's label-gradient score over 1,024 examples (ntk.signal) when it has one, then runs a
greedy search (ntk.select) over the best candidate rows / columns of every module. LoRA ranks
follow the label gradient's singular values (diminishing returns per module), or, without
them or with --allocation free, a greedy search over rank steps with LoRA's expected kernel
E[K_LoRA(r)] = r·σ²·K_W (docs/method.md §5; α = r, PEFT's kaiming-uniform A has σ² = 1/(3·d_in)).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from ..errors import RecipeError
from ..ntk import kernel_report
from ..ntk.rows_cols import per_col_kernels, per_row_kernels
from ..ntk.select import OBJECTIVES, greedy_select, objective_value
from ..profiling.capture import Captured, capture
from ..profiling.folder import load_profile
from ..recipe.schema import SCHEMA_VERSION, DataSpec, ModelSpec, Proximal, Recipe, Target, Training, peft_section
from .baselines import baseline_placement, placement_weights, unit_cost
from .config import ALLOCATIONS, DEFAULT_OBJECTIVE, RecommendConfig  # noqa: F401 - re-exported
from .signal_rules import coverage_order, lora_by_spectrum, signal_captured, unit_alignment

Progress = Callable[[str, int, int], None]


def placement_parts(captured: Captured, placement: dict, method: str) -> dict[str, torch.Tensor]:
    """Each placed module's part of K_S (LoRA: its expectation over A's init)."""
    if method == "lora":
        return {n: r * captured.profile.kernels[n] / (3.0 * captured.targets[n].d_in) for n, r in placement.items()}
    return {n: captured.slice_kernel(n, axis, idx) for n, (axis, idx) in placement.items()}


def placement_kernel(captured: Captured, placement: dict, method: str) -> torch.Tensor:
    """The restricted kernel K_S of a placement."""
    return sum(placement_parts(captured, placement, method).values(),
               torch.zeros_like(captured.profile.kernels["total"]))


def _advised(captured: Captured, config: RecommendConfig, budget: int, ridge: float):
    """Greedy search; returns (placement, per-module score, search statistics)."""
    if config.method == "lora" and config.allocation == "greedy" and captured.profile.scores.get("signal_spectrum"):
        return lora_by_spectrum(captured, config, budget)
    items, kernels, costs, alignments = [], [], [], []
    for name, t in captured.targets.items():
        if config.method == "lora":
            step = 2
            base = captured.profile.kernels[name] / (3.0 * t.d_in)
            for _ in range(config.module_rank * 4 // step):
                items.append((name, step))
                kernels.append(step * base)
                costs.append(step * unit_cost(t, "rank"))
            continue
        align = unit_alignment(captured.profile, config.axis, name)
        group = "rows" if config.axis == "rows" else "cols"
        energy = captured.profile.scores[group][name]
        half = max(1, config.candidates_per_module // 2)
        chosen = torch.unique(torch.cat([torch.argsort(align, descending=True)[:half],
                                         torch.argsort(energy, descending=True)[:half]]))
        chosen = chosen[torch.argsort(align[chosen], descending=True)]  # best-aligned first: the coverage seed
        per_unit = per_row_kernels if config.axis == "rows" else per_col_kernels
        block = sum(per_unit(captured.x[name], d, chosen.tolist()) for d in captured.deltas[name])
        for position, index in enumerate(chosen.tolist()):
            items.append((name, index))
            kernels.append(block[position])
            costs.append(unit_cost(t, config.axis))
            alignments.append(float(align[index]))
    stacked = torch.stack(kernels).to(torch.float64)
    start = None
    if config.method == "rocoft" and config.allocation != "free":
        rounds = 1 if config.allocation == "greedy" else config.candidates_per_module
        start = coverage_order(items, costs, alignments, rounds)
    spec = captured.spec
    selection = greedy_select(stacked, torch.tensor(costs), budget, config.objective, spec.centred_targets(),
                              spec.regression_targets(), ridge, start=start)
    placement: dict = {}
    scores: dict[str, float] = {}
    for index, gain in zip(selection.chosen, selection.gains):
        name, unit = items[index]
        if config.method == "lora":
            placement[name] = placement.get(name, 0) + unit
        else:
            placement.setdefault(name, (config.axis, []))[1].append(unit)
        scores[name] = scores.get(name, 0.0) + (gain if math.isfinite(gain) else 0.0) * costs[index]
    if config.method == "rocoft":
        placement = {n: (a, sorted(idx)) for n, (a, idx) in placement.items()}
    stats = {"candidate_items": len(items), "exact_evaluations": selection.exact_evaluations,
             "skipped_by_weyl_bound": selection.skipped_by_bound, "capped_steps": selection.capped_steps,
             "steps": len(selection.chosen), "objective_value": selection.value}
    return placement, scores, stats


def _report(captured: Captured, kernel: torch.Tensor, ridge: float, full: torch.Tensor, excluded_lmax: float) -> dict:
    spec = captured.spec
    report = kernel_report(kernel, spec.centred_targets(), spec.regression_targets(), spec.labels,
                           spec.predicted_classes, absolute_ridge=ridge)
    scale = float(torch.linalg.matrix_norm(full, ord=2))  # 0 when a zero head blocks every gradient
    report["distance_to_full"] = float(torch.linalg.matrix_norm(full - kernel, ord=2)) / scale if scale else math.nan
    report["distance_bound"] = excluded_lmax / scale if scale else math.nan
    return {k: v for k, v in report.items() if k not in ("stable_rank",)}


def _excluded_lambda_max(captured: Captured, parts: dict[str, torch.Tensor], method: str) -> float:
    """Σ_m λ_max(K_m − K_{S∩m}): a Weyl bound on ‖K_full − K_S‖₂ (each difference is PSD)."""
    total = 0.0
    for name in captured.targets:
        rest = captured.profile.kernels[name]
        if name in parts:
            if method == "lora":
                continue  # LoRA's expected kernel is a scaled K_m, not a part of it: no partition bound
            rest = rest - parts[name]
        total += float(torch.linalg.eigvalsh(0.5 * (rest + rest.T))[-1].clamp_min(0))
    return total


def weight_budget(captured: Captured, config: RecommendConfig) -> tuple[int, int, int]:
    """(weights for the placement, head parameters, bias parameters) of the total budget."""
    head_params = captured.head_parameters if config.train_head else 0
    bias_params = sum(t.d_out for t in captured.targets.values()) if config.train_bias == "all" else 0
    budget = config.budget - head_params - bias_params
    if budget <= 0:
        raise RecipeError(f"--budget {config.budget} does not cover the head ({head_params}) and biases "
                          f"({bias_params}): raise it or pass --no-train-head")
    return budget, head_params, bias_params


def full_kernel(captured: Captured) -> torch.Tensor:
    """Σ over the placeable modules of their kernels: what every placement is a part of."""
    return sum(captured.profile.kernels[n] for n in captured.targets)


def search_ridge(captured: Captured, proximal: float) -> float:
    """The proximal λ plus 1e-3 of the full kernel's mean diagonal, so λ = 0 stays well posed.

    A head that blocks every gradient (a zero probe) leaves the block kernels zero; the
    total kernel's scale, or 1, keeps the ridge positive then.
    """
    scales = (float(torch.diagonal(k).mean()) for k in (full_kernel(captured), captured.profile.kernels["total"]))
    return proximal + 1e-3 * next((s for s in scales if s > 0), 1.0)


def place(captured: Captured, config: RecommendConfig, budget: int, ridge: float) -> tuple[dict, dict, dict]:
    """(placement, per-module score, search statistics) of ``config.placement`` at ``budget`` weights."""
    if config.placement == "advised":
        return _advised(captured, config, budget, ridge)
    common = dict(weights=captured.weights, inputs=captured.x, mask=captured.profile.inputs["attention_mask"],
                  grad_norms=captured.grad_norms if config.placement == "grad-norm" else None,
                  module_rank=config.module_rank, seed=config.seed)
    placement = baseline_placement(config.placement, config.method, config.axis, list(captured.targets.values()),
                                   budget, **common)
    return placement, {}, {}


def predicted_report(captured: Captured, placement: dict, method: str, ridge: float) -> dict:
    """What the profile predicts for one placement: K_S's spectrum, alignment, LOO accuracy, distance."""
    full = full_kernel(captured)
    parts = placement_parts(captured, placement, method)  # slice kernels once, for K_S and the bound
    kernel = sum(parts.values(), torch.zeros_like(full))
    report = _report(captured, kernel, ridge, full, _excluded_lambda_max(captured, parts, method))
    report["weights"] = placement_weights(placement, captured.targets, method)
    report["label_signal"] = signal_captured(captured, placement, method)
    spec = captured.spec
    report["objectives"] = {name: objective_value(kernel, name, spec.centred_targets(), spec.regression_targets(),
                                                  ridge) for name in OBJECTIVES}
    return report


def recommend(profile_dir: str | Path, config: RecommendConfig, on_progress: Progress | None = None) -> Recipe:
    config.validate()
    progress = on_progress or (lambda *a: None)
    started = time.perf_counter()
    profile = load_profile(profile_dir)
    progress("rebuild model", 0, 1)
    captured = capture(profile)
    progress("rebuild model", 1, 1)
    budget, head_params, bias_params = weight_budget(captured, config)
    ridge = search_ridge(captured, config.proximal)
    progress("search", 0, 1)
    placement, scores, search = place(captured, config, budget, ridge)
    progress("search", 1, 1)
    evidence_for = {"placement": (placement, config.method)}
    reference = dict(config=config, budget=budget, ridge=ridge)
    evidence_for["first-k"] = (_baseline(captured, "first-k", "rocoft", **reference), "rocoft")
    if any(t.role in ("query", "value") for t in captured.targets.values()):
        evidence_for["lora-qv"] = (_baseline(captured, "lora-qv", "lora", **reference), "lora")
    reports = {key: predicted_report(captured, value, method, ridge) for key, (value, method) in evidence_for.items()}
    weights_used = reports["placement"]["weights"]
    evidence = {
        "profile": str(profile_dir),
        "placement": config.placement,
        "objective": search.get("objective", config.objective) if config.placement == "advised" else None,
        "budget": config.budget,
        "trainable": {"weights": weights_used, "head": head_params, "biases": bias_params,
                      "total": weights_used + head_params + bias_params},
        "ridge": ridge,
        "predicted": reports.pop("placement"),
        "baselines_same_budget": reports,
        "search": search | {"seconds": round(time.perf_counter() - started, 3)},
        "notes": "kernels are on the profile's probe sample; LoRA kernels are expectations over A's init (docs/method.md §5)",
    }
    return build_recipe(profile.settings, config, placement, scores, evidence)


def _baseline(captured: Captured, name: str, method: str, config: RecommendConfig, budget: int, ridge: float) -> dict:
    return place(captured, replace(config, placement=name, method=method), budget, ridge)[0]


def build_recipe(settings: dict, config: RecommendConfig, placement: dict, scores: dict, evidence: dict) -> Recipe:
    if config.method == "lora":
        targets = tuple(Target(module=m, rank=r, score=scores.get(m)) for m, r in placement.items())
    else:
        targets = tuple(Target(module=m, axis=a, indices=tuple(idx), score=scores.get(m))
                        for m, (a, idx) in placement.items())
    ranks = {m: (r if config.method == "lora" else len(placement[m][1])) for m, r in placement.items()}
    lora_like = tuple(Target(module=m, rank=r) for m, r in ranks.items())
    default_rank = max(set(ranks.values()), key=list(ranks.values()).count)
    training = Training(**({"seed": config.seed, "train_head": config.train_head, "train_bias": config.train_bias}
                           | config.training))
    prompt = settings.get("prompt")
    return Recipe(
        schema_version=SCHEMA_VERSION,
        model=ModelSpec(name=settings["model"], num_labels=settings["num_outputs"],
                        task="label-words" if prompt else "classifier"),
        data=DataSpec(source=settings["data"], text_column=settings.get("text_column", "text"),
                      label_column=settings.get("label_column", "label"), seed=settings["seed"],
                      max_length=settings["max_length"], template=prompt["template"] if prompt else None,
                      label_words=tuple(prompt["label_words"]) if prompt else None),
        method=config.method,
        targets=targets,
        proximal=Proximal(strength=config.proximal, mode=config.proximal_mode),
        training=training,
        evidence=evidence,
        peft=peft_section(lora_like, default_rank, None, training.lora_dropout),
        axolotl=axolotl_section(config.method, placement, ranks, default_rank),
    )


def axolotl_section(method: str, placement: dict, ranks: dict, default_rank: int) -> dict:
    """axolotl keys: LoRA targets and ranks, or RoCoFT rows as unfrozen_parameters row ranges."""
    if method == "lora":
        return {"adapter": "lora", "lora_r": default_rank, "lora_alpha": default_rank,
                "lora_target_modules": list(placement), "lora_rank_pattern": {m: r for m, r in ranks.items()}}
    patterns = []
    for name, (axis, indices) in placement.items():
        stem = "^" + name.replace(".", r"\.") + r"\.weight$"
        if axis != "rows":  # axolotl slices rows only; columns need the whole weight unfrozen
            patterns.append(stem)
            continue
        runs, start = [], indices[0]
        for previous, current in zip(indices, indices[1:] + [None]):
            if current != previous + 1:
                runs.append((start, previous + 1))
                start = current
        patterns.extend(f"{stem}[{a}:{b}]" for a, b in runs)
    return {"unfrozen_parameters": patterns}
