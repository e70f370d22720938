"""`ntk-advisor recommend`, `advise` and `check`: from a profile (or a model and data) to a recipe."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .._io import OutputClaim
from ..advice.config import RecommendConfig
from ..profiling.config import ProfileConfig
from .app import app
from .console import (
    AllocationOption,
    DataOption,
    DeviceOption,
    JsonOption,
    LabelColumnOption,
    LabelWordOption,
    MaxLengthOption,
    MethodOption,
    ModelOption,
    SamplesOption,
    TaskOption,
    TemplateOption,
    TextColumnOption,
    fmt,
    out,
    print_json,
    progress_bar,
    progress_callback,
    prompt_options,
)

BudgetOption = Annotated[int, typer.Option(help="Trainable parameters in total, head and biases included.")]
ObjectiveOption = Annotated[str, typer.Option(
    help="What the greedy search maximizes per parameter: alignment, loo, lambda_min, condition or trace.")]
PlacementOption = Annotated[str, typer.Option(
    help="advised (the NTK search) or a baseline: first-k, random, wanda-min, wanda-max, weight-kappa, grad-norm, "
    "lora-qv, lora-all, lora-mlp (LoRA on the FFN modules only).")]
ProximalOption = Annotated[float, typer.Option(help="λ of the proximal term (λ/2)‖θ−θ0‖²; 0 turns it off.")]
AxisOption = Annotated[str, typer.Option(help="RoCoFT axis: rows (output units) or cols (input features).")]
ModulesOption = Annotated[str, typer.Option(
    help="Where the advised search may place the budget: all, attention (q, k, v and the attention output) or "
    "ffn (the FFN modules, lora-mlp's set).")]


CaptureOption = Annotated[float, typer.Option(help=(
    "MiB of captured inputs and output gradients held at once (0: a quarter of the free memory, or "
    "the profile's own cap where larger; advise gives it to the profile too, rounded up). "
    "Lower it to bound the peak on a small machine: the captures are then held a group of modules at a time, "
    "and each group's passes rerun when the search returns to it. The recipe is the same (docs/recommend.md)."))]


def _recommend_config(method, budget, objective, placement, proximal, axis, train_head, seed, allocation, modules,
                      capture_mib=0):
    from ..advice.recommend import RecommendConfig

    return RecommendConfig(method=method, budget=budget, objective=objective, placement=placement, proximal=proximal,
                           axis=axis, train_head=train_head, seed=seed, allocation=allocation, modules=modules,
                           capture_mib=capture_mib)


def _write_recipe(recipe, out_path: Path, as_json: bool) -> None:
    from ..recipe.io import recipe_to_dict, save_recipe

    save_recipe(recipe, out_path, command=f"ntk-advisor train {out_path} --out {out_path.parent / (out_path.stem + '-run')}")
    if as_json:
        return print_json(recipe_to_dict(recipe))
    ev = recipe.evidence
    table = Table("placement at the same budget", "weights", "LOO acc", "alignment", "λ_min", "κ", "‖K−K_S‖/‖K‖",
                  title=f"{recipe.method} recipe, {ev['trainable']['total']:,} trainable parameters")
    rows = [(f"{ev['placement']} ({ev['objective']})" if ev.get("objective") else ev["placement"], ev["predicted"])]
    rows += [(name, r) for name, r in ev["baselines_same_budget"].items() if name != ev["placement"]]
    for name, r in rows:
        table.add_row(name, f"{r['weights']:,}", fmt(r["loo_accuracy"]), fmt(r["alignment"]), fmt(r["lambda_min"]),
                      fmt(r["condition_number"]), fmt(r["distance_to_full"]))
    out.print(table)
    t = ev["trainable"]
    out.print(f"{len(recipe.targets)} modules targeted; trainable = weights {t['weights']:,} + head {t['head']:,} + "
              f"biases {t['biases']:,} = {t['total']:,}; predictions are kernel regression on the probe sample")
    if "method_choice" in ev:
        out.print(ev["method_choice"]["sentence"], markup=False)
    if "uncertainty" in ev:
        out.print(ev["uncertainty"]["sentence"], markup=False)
    out.print(f"wrote {out_path}")


@app.command()
def recommend(
    profile_dir: Annotated[Path, typer.Argument(help="A folder written by ntk-advisor profile.")],
    out_path: Annotated[Path, typer.Option("--out", help="Recipe file to write (YAML).")] = Path("recipe.yaml"),
    method: MethodOption = RecommendConfig.method,
    budget: BudgetOption = RecommendConfig.budget,
    objective: ObjectiveOption = RecommendConfig.objective,
    placement: PlacementOption = RecommendConfig.placement,
    proximal: ProximalOption = RecommendConfig.proximal,
    axis: AxisOption = RecommendConfig.axis,
    allocation: AllocationOption = RecommendConfig.allocation,
    modules: ModulesOption = RecommendConfig.modules,
    train_head: Annotated[bool, typer.Option(help="Train the classification head (counted in the budget).")] = RecommendConfig.train_head,
    seed: Annotated[int, typer.Option(help="Seed of random placements and training.")] = RecommendConfig.seed,
    capture_mib: CaptureOption = RecommendConfig.capture_mib,
    force: Annotated[bool, typer.Option(help="Replace an existing --out recipe.")] = False,
    as_json: JsonOption = False,
):
    """Place a parameter budget from a profile and write a YAML recipe with the evidence behind it."""
    from ..advice.recommend import recommend as run_recommend
    from ..recipe.io import check_recipe_destination

    config = _recommend_config(method, budget, objective, placement, proximal, axis, train_head, seed, allocation,
                               modules, capture_mib)
    with OutputClaim(out_path):
        check_recipe_destination(out_path, force)
        with progress_bar() as bar:
            recipe = run_recommend(profile_dir, config, on_progress=progress_callback(bar))
        _write_recipe(recipe, out_path, as_json)


@app.command()
def advise(
    out_path: Annotated[Path, typer.Option("--out", help="Recipe file to write (YAML).")] = Path("recipe.yaml"),
    model: ModelOption = ProfileConfig.model,
    data: DataOption = ProfileConfig.data,
    text_column: TextColumnOption = ProfileConfig.text_column,
    label_column: LabelColumnOption = ProfileConfig.label_column,
    samples: SamplesOption = ProfileConfig.samples,
    max_length: MaxLengthOption = ProfileConfig.max_length,
    profile_dir: Annotated[Optional[Path], typer.Option("--profile-out", help=(
        "Keep the profile in this new folder (refused when it exists, unless --force and it is a profile)."))] = None,
    method: MethodOption = RecommendConfig.method,
    budget: BudgetOption = RecommendConfig.budget,
    objective: ObjectiveOption = RecommendConfig.objective,
    placement: PlacementOption = RecommendConfig.placement,
    proximal: ProximalOption = RecommendConfig.proximal,
    axis: AxisOption = RecommendConfig.axis,
    allocation: AllocationOption = RecommendConfig.allocation,
    modules: ModulesOption = RecommendConfig.modules,
    seed: Annotated[int, typer.Option(help="Seed of splits, probe sample, head and placements.")] = RecommendConfig.seed,
    task: TaskOption = ProfileConfig.task,
    template: TemplateOption = None,
    label_word: LabelWordOption = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out recipe and --profile-out profile.")] = False,
    device: DeviceOption = ProfileConfig.device,
    capture_mib: CaptureOption = RecommendConfig.capture_mib,
    as_json: JsonOption = False,
):
    """Profile, then recommend, in one go."""
    config = _recommend_config(method, budget, objective, placement, proximal, axis, True, seed, allocation, modules,
                               capture_mib)
    config.check()  # refuses a negative or non-finite cap before math.ceil sees it
    with contextlib.ExitStack() as claims:
        for path in [out_path] + ([profile_dir] if profile_dir is not None else []):
            claims.enter_context(OutputClaim(path))
        _advise(out_path, profile_dir, force, as_json, config, ProfileConfig(
            model=model, data=data, text_column=text_column, label_column=label_column, samples=samples,
            max_length=max_length, seed=seed, task=task, device=device, capture_mib=math.ceil(capture_mib),
            **prompt_options(template, label_word)))


def _advise(out_path, profile_dir, force, as_json, config, profile_config) -> None:
    import tempfile

    from ..advice.recommend import recommend as run_recommend
    from ..profiling.folder import check_profile_destination, save_profile
    from ..profiling.profiler import profile as run_profile
    from ..recipe.io import check_recipe_destination

    check_recipe_destination(out_path, force)  # before minutes of work, never after
    if profile_dir is not None:
        check_profile_destination(profile_dir, force)
    with tempfile.TemporaryDirectory() as scratch, progress_bar() as bar:
        folder = profile_dir or Path(scratch) / "profile"
        result = run_profile(profile_config, on_progress=progress_callback(bar))
        save_profile(result, folder, force=force)
        recipe = run_recommend(folder, config, on_progress=progress_callback(bar))
    _write_recipe(recipe, out_path, as_json)


@app.command()
def check(
    recipe_path: Annotated[Path, typer.Argument(help="A recipe YAML file.")],
    as_json: JsonOption = False,
):
    """Validate a recipe against its model without training: modules, indices, ranks, budget."""
    from ..recipe.check import check_recipe
    from ..recipe.io import load_recipe

    report = check_recipe(load_recipe(recipe_path))
    if as_json:
        return print_json(report)
    out.print(f"ok: {report['targets']} {report['method']} targets on {report['model']}; trainable parameters "
              f"{report['total']:,} (weights {report['weights']:,}, head {report['head']:,}, biases {report['biases']:,})")
