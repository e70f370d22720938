"""recommend(): turn a profile into a placement at a parameter budget, written as a Recipe.

The profile folder holds the probe sample and the head, so the exact profiled model is
rebuilt and one forward / C backward passes give each module's x and δ again; from them the
kernel of any row or column set is exact (ntk.rows_cols). The method (methods/) offers the
candidates and the kernel of each part; this module runs the budgeted greedy search
(ntk.select) over them, or the method's own allocation rule, and writes the evidence: the
advised RoCoFT placement seeds every module with its best-aligned row (or rows, --allocation
uniform) by the profile's label-gradient score (ntk.signal), then searches; LoRA ranks follow
the label gradient's singular values (diminishing returns per module), or, without them or
with --allocation free, a greedy search over rank steps with LoRA's expected kernel
E[K_LoRA(r)] = r·σ²·K_W (docs/method.md §5).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from ..errors import RecipeError
from ..methods import Placement, get_method, method_names, target_fields
from ..ntk import kernel_report
from ..ntk.select import LABELLED_OBJECTIVES, OBJECTIVES, greedy_select, objective_value
from ..ntk.spectral import symmetrize
from ..profiling.capture import Captured, capture
from ..profiling.folder import load_profile
from ..recipe.conversions import axolotl_with_head
from ..recipe.io import check_method
from ..recipe.schema import SCHEMA_VERSION, DataSpec, ModelSpec, Proximal, Recipe, Target, Training
from ..settings import ModuleGroup
from ..tasks import Task, get_task, task_names
from .config import (DEFAULT_OBJECTIVE, RecommendConfig, advised_rule, resolve_allocation,  # noqa: F401 - re-exported
                     resolve_method)
from .uncertainty import sft_uncertainty, uncertainty

Progress = Callable[[str, int, int], None]
log = logging.getLogger(__name__)


def placement_parts(captured: Captured, placement: Placement, method: str,
                    training: Training | None = None) -> dict[str, torch.Tensor]:
    """Each placed module's part of K_S (LoRA: its expectation over A's init), at the scale
    ``training`` trains it at (None: the method's own, α = r for LoRA)."""
    kind = get_method(method)
    scale = (lambda part: 1.0) if training is None else (lambda part: kind.kernel_scale(part, training))
    return {name: kind.kernel_part(captured, name, part) * scale(part) for name, part in placement.items()}


def placement_kernel(captured: Captured, placement: Placement, method: str,
                     training: Training | None = None) -> torch.Tensor:
    """The restricted kernel K_S of a placement."""
    return sum(placement_parts(captured, placement, method, training).values(),
               torch.zeros_like(captured.profile.kernels["total"]))


def placement_weights(placement: Placement, captured: Captured, method: str) -> int:
    kind = get_method(method)
    return sum(kind.part_cost(captured.targets[name], part) for name, part in placement.items())


def _advised(captured: Captured, config: RecommendConfig, budget: int, ridge: float):
    """The method's allocation rule, or the greedy search over its candidates; returns
    (placement, per-module score, search statistics)."""
    method = get_method(config.method)
    captured = within_group(captured, config.modules)
    allocated = method.allocate(captured, config, budget)
    if allocated is not None:
        return allocated
    found = method.candidates(captured, config)
    spec = captured.spec
    selection = greedy_select(torch.stack(found.kernels).to(torch.float64), torch.tensor(found.costs), budget,
                              config.objective, spec.centred_targets(), spec.regression_targets(), ridge,
                              start=found.start)
    scores: dict[str, float] = {}
    for index, gain in zip(selection.chosen, selection.gains):
        name = found.items[index][0]
        scores[name] = scores.get(name, 0.0) + (gain if math.isfinite(gain) else 0.0) * found.costs[index]
    placement = method.collect([found.items[i] for i in selection.chosen], config)
    stats = {"candidate_items": len(found.items), "exact_evaluations": selection.exact_evaluations,
             "skipped_by_weyl_bound": selection.skipped_by_bound, "capped_steps": selection.capped_steps,
             "steps": len(selection.chosen), "objective_value": selection.value}
    return placement, scores, stats


def within_group(captured: Captured, group: str) -> Captured:
    """The capture seen through one module group (settings.ModuleGroup): the search's candidates,
    and the label signal its placement is a share of, are that group's modules. The x/δ passes
    and the kernels kept from them stay shared, so a restricted search never reruns them."""
    roles = ModuleGroup.roles(group)
    if roles is None:
        return captured
    targets = {name: t for name, t in captured.targets.items() if t.role in roles}
    if not targets:
        raise RecipeError(f"--modules {group} matches none of this model's modules (roles found: "
                          f"{', '.join(sorted({t.role for t in captured.targets.values()}))}): use --modules all")
    return replace(captured, targets=targets)


def _report(captured: Captured, kernel: torch.Tensor, ridge: float, full: torch.Tensor, excluded_lmax: float) -> dict:
    spec = captured.spec
    labelled = spec.defined_alignment  # an SFT profile has no labels: no alignment, no LOO accuracy
    report = kernel_report(kernel, spec.centred_targets() if labelled else None,
                           spec.regression_targets() if labelled else None, spec.labels, spec.predicted_classes,
                           absolute_ridge=ridge)
    scale = float(torch.linalg.matrix_norm(full, ord=2))  # 0 when a zero head blocks every gradient
    report["distance_to_full"] = float(torch.linalg.matrix_norm(full - kernel, ord=2)) / scale if scale else math.nan
    report["distance_bound"] = excluded_lmax / scale if scale else math.nan
    if not labelled:  # every SFT residual is −1/τ, so a first step of rate η lowers the loss by ≈ (η/τ²)·1ᵀK_S1
        report["first_step"] = float(kernel.sum()) / kernel.shape[0] ** 2  # per probe pair: ∝ that decrease
    return {k: v for k, v in report.items() if k not in ("stable_rank",)}


def _excluded_lambda_max(captured: Captured, parts: dict[str, torch.Tensor], method: str) -> float:
    """Σ_m λ_max(K_m − K_{S∩m}): a Weyl bound on ‖K_full − K_S‖₂ (each difference is PSD)."""
    total = 0.0
    for name in captured.targets:
        rest = captured.profile.kernels[name]
        if name in parts:
            if not get_method(method).kernel_is_a_part:
                continue  # e.g. LoRA's expected kernel is a scaled K_m, not a part of it: no partition bound
            rest = rest - parts[name]
        total += float(torch.linalg.eigvalsh(symmetrize(rest))[-1].clamp_min(0))
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


def place(captured: Captured, config: RecommendConfig, budget: int, ridge: float) -> tuple[Placement, dict, dict]:
    """(placement, per-module score, search statistics) of ``config.placement`` at ``budget`` weights."""
    if config.placement == "advised":
        return _advised(captured, config, budget, ridge)
    method = get_method(config.method)
    if config.placement not in method.baselines:
        raise RecipeError(f"unknown placement '{config.placement}' for {method.name}: use advised or one of "
                          f"{', '.join(method.baselines)}")
    return method.baseline(config.placement, captured, config, budget), {}, {}


def predicted_report(captured: Captured, placement: dict, method: str, ridge: float,
                     training: Training | None = None) -> dict:
    """What the profile predicts for one placement: K_S's spectrum, alignment, LOO accuracy, distance."""
    full = full_kernel(captured)
    parts = placement_parts(captured, placement, method, training)  # slice kernels once, for K_S and the bound
    kernel = sum(parts.values(), torch.zeros_like(full))
    report = _report(captured, kernel, ridge, full, _excluded_lambda_max(captured, parts, method))
    report["weights"] = placement_weights(placement, captured, method)
    report["label_signal"] = get_method(method).signal_captured(captured, placement)
    spec = captured.spec
    names = OBJECTIVES if spec.defined_alignment else [o for o in OBJECTIVES if o not in LABELLED_OBJECTIVES]
    report["objectives"] = {name: objective_value(kernel, name, spec.centred_targets(), spec.regression_targets(),
                                                  ridge) for name in names}
    return report


def recommend(profile_dir: str | Path, config: RecommendConfig, on_progress: Progress | None = None) -> Recipe:
    config.check()
    config, method_choice = resolve_method(config)
    config.check()
    config = resolve_allocation(config)
    progress = on_progress or (lambda *a: None)
    started = time.perf_counter()
    profile = load_profile(profile_dir)
    if not profiled_task(profile.settings).labelled and config.objective in LABELLED_OBJECTIVES:
        raise RecipeError(f"--objective {config.objective} needs labels, and {profile_dir} is a profile without them "
                          f"(supervised fine-tuning): use "
                          f"{', '.join(o for o in OBJECTIVES if o not in LABELLED_OBJECTIVES)}")
    progress("rebuild model", 0, 1)
    captured = capture(profile, config.capture_mib)
    progress("rebuild model", 1, 1)
    budget, head_params, bias_params = weight_budget(captured, config)
    ridge = search_ridge(captured, config.proximal)
    progress("search", 0, 1)
    placement, scores, search = place(captured, config, budget, ridge)
    progress("search", 1, 1)
    evidence_for = {"placement": (placement, config.method)} | _references(captured, config, budget, ridge)
    trainings = {key: trained_as(config, key, method, profile.settings) for key, (_, method) in evidence_for.items()}
    reports = {key: predicted_report(captured, value, method, ridge, trainings[key])
               for key, (value, method) in evidence_for.items()}
    weights_used = reports["placement"]["weights"]
    if weights_used < 0.9 * budget and config.placement == "advised":
        log.warning("--budget %s is more than this placement can use: it trains %s weights + head %s + biases %s; "
                    "a smaller budget gives the same recipe", f"{config.budget:,}", f"{weights_used:,}",
                    f"{head_params:,}", f"{bias_params:,}")
    certainty = (_uncertainty(captured, config, evidence_for, trainings, ridge)
                 if config.placement == "advised" else None)
    evidence = {
        "profile": str(profile_dir),
        "placement": config.placement,
        "modules": config.modules,
        "objective": search.get("objective", config.objective) if config.placement == "advised" else None,
        "budget": config.budget,
        "trainable": {"weights": weights_used, "head": head_params, "biases": bias_params,
                      "total": weights_used + head_params + bias_params},
        "ridge": ridge,
        "predicted": reports.pop("placement"),
        "baselines_same_budget": reports,
        "search": search | {"seconds": round(time.perf_counter() - started, 3)},
        "notes": "kernels are on the profile's probe sample; LoRA kernels are expectations over A's init, at the "
                 "scale each placement's recipe trains at (docs/method.md §5)",
    }
    if certainty is not None:
        evidence["uncertainty"] = certainty
    if method_choice is not None:
        evidence["method_choice"] = method_choice
    recipe = build_recipe(profile.settings, config, placement, scores, evidence, captured.head_name)
    return recipe.model_copy(update={"provenance": _provenance(profile.settings)})


def _references(captured: Captured, config: RecommendConfig, budget: int, ridge: float) -> dict:
    """{name: (placement, method)} of every method's default placement at the same budget."""
    found, may_rerun = {}, profiled_task(captured.profile.settings).references_rerun_capture or captured.passes_ran
    for name in method_names():
        default = get_method(name).reference
        if default is None or (name != config.method and not may_rerun):
            continue  # another method's slices would rerun the capture passes
        try:
            found[default] = (_baseline(captured, default, name, config=config, budget=budget, ridge=ridge), name)
        except RecipeError:
            continue  # e.g. lora-qv on a model without query/value modules
    return found


def _uncertainty(captured: Captured, config: RecommendConfig, evidence_for: dict, trainings: dict[str, Training],
                 ridge: float) -> dict:
    """The predicted gain over this method's default placement, on the profile and on the suite;
    ``trainings`` holds each evidence entry's training section (trained_as)."""
    method = get_method(config.method)
    reference = method.reference
    if not profiled_task(captured.profile.settings).labelled:
        training = trainings["placement"]
        return sft_uncertainty(reference, config.method, advised_rule(config),
                               config.allocation in method.safe_allocations, config.budget,
                               training.lora_init, training.use_rslora)
    reference_kernel = None
    if reference in evidence_for:
        placed, kind = evidence_for[reference]
        reference_kernel = placement_kernel(captured, placed, kind, trainings[reference])
    kernel = placement_kernel(captured, evidence_for["placement"][0], config.method, trainings["placement"])
    return uncertainty(captured, kernel, reference or "none",
                       reference_kernel, ridge, config.method, advised_rule(config), config.budget,
                       safe=config.allocation in method.safe_allocations, seed=config.seed)


def _baseline(captured: Captured, name: str, method: str, config: RecommendConfig, budget: int,
              ridge: float) -> Placement:
    return place(captured, replace(config, placement=name, method=method), budget, ridge)[0]


def training_fields(config: RecommendConfig, settings: dict) -> dict:
    """The recipe's training section before the schema's defaults: the config's own fields
    over ntk-advisor's. Advised LoRA ranks for SFT train at PEFT's rank-stabilized scale
    (α/√r, α = 1): with α = r a rank-6 module starts six times faster than a rank-1 one
    (docs/method.md §5), and on the SFT study rsLoRA lowered the advised ranks' validation
    and test NLL on both tasks (docs/sft.md). Classifiers keep α = r, which the suite measured,
    and so does the kernel search (``--allocation free``, or a profile without the SFT gradient's
    spectrum, ``--signal-samples 0``): it ranks rank steps by the kernel each adds, which only
    α = r has (under rsLoRA a module's expected kernel is the same at every rank)."""
    fields = {"seed": config.seed, "train_head": config.train_head, "train_bias": config.train_bias}
    spectrum_rule = config.allocation != "free" and (settings.get("signal_samples") or 0) > 0
    if (config.method == "lora" and config.placement == "advised" and not profiled_task(settings).labelled
            and spectrum_rule
            and config.training.get("lora_init", "default") != "loraga"):  # PEFT cannot save LoRA-GA under rsLoRA
        fields["use_rslora"] = True
    return fields | config.training


def trained_as(config: RecommendConfig, key: str, method: str, settings: dict) -> Training:
    """The training section that evidence entry ``key`` ("placement", or a reference placement's
    name) would train with: its kernel's scale follows it (rsLoRA's differs from α = r's)."""
    placement = config.placement if key == "placement" else key
    return Training(**training_fields(replace(config, placement=placement, method=method), settings))


def build_recipe(settings: dict, config: RecommendConfig, placement: Placement, scores: dict,
                 evidence: dict, head_module: str | None = None) -> Recipe:
    method = get_method(config.method)
    targets = tuple(Target(module=m, **target_fields(part), score=scores.get(m)) for m, part in placement.items())
    training = Training(**training_fields(config, settings))
    prompt = settings.get("prompt")
    task = profiled_task(settings)
    peft = method.peft_section(placement, training)
    if task.peft_task_type and peft is not None:
        peft = peft | {"task_type": task.peft_task_type}
    recipe = Recipe(
        schema_version=SCHEMA_VERSION,
        # Without labels the class count is unused; the schema still asks for one.
        model=ModelSpec(name=settings["model"], num_labels=settings["num_outputs"] if task.labelled else 2,
                        task=task.name),
        data=DataSpec(source=settings["data"], text_column=settings.get("text_column", "text"),
                      label_column=settings.get("label_column", "label"), seed=settings["seed"],
                      max_length=settings["max_length"], template=prompt["template"] if prompt else None,
                      label_words=tuple(prompt["label_words"]) if prompt else None,
                      heldout_text=task.heldout_text(settings["data"])),
        method=method.name,
        targets=targets,
        proximal=Proximal(strength=config.proximal, mode=config.proximal_mode),
        training=training,
        evidence=evidence,
        peft=_with_head(peft, head_module, config.train_head),
        axolotl=axolotl_with_head(method.axolotl_section(placement, training), head_module if config.train_head else None),
    )
    check_method(recipe)  # what load_recipe would refuse (rsLoRA on RoCoFT, LoRA-GA under rsLoRA) is never written
    return recipe


def _provenance(settings: dict) -> dict:
    """Model-file and data sha256 and versions; the data may have moved since it was profiled."""
    from ..errors import DataError
    from ..recipe.provenance import library_versions, model_files, provenance

    try:
        dataset = profiled_task(settings).profiled_dataset(settings)
    except DataError:
        return {"written_by": library_versions(), "model_files": model_files(settings["model"]), "data": {}}
    return provenance(settings["model"], settings["data"], dataset)


def _with_head(section: dict | None, head_module: str | None, train_head: bool) -> dict | None:
    """PEFT freezes everything it does not adapt: a head the recipe trains (and counts in its
    budget) must be named in modules_to_save, or a PEFT user trains on a random head."""
    if section is None or not (train_head and head_module):
        return section
    return section | {"modules_to_save": [head_module]}


def profiled_task(settings: dict) -> Task:
    """The task the profile ran; profiles from before tasks were recorded said "auto" and
    only a prompting run kept a prompt."""
    task = settings.get("task")
    if task not in task_names():
        task = "label-words" if settings.get("prompt") else "classifier"
    return get_task(task)
