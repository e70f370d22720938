"""`profile`, `recommend`, `advise` and `check`: from a model and data to a recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from . import (JsonOption, LabelColumn, TextColumn_, _fmt, _print_json, _progress_bar,
               _progress_callback, app, err, out)


# ----------------------------------------------------------------------------- profile
ModelOption = Annotated[str, typer.Option(help="Model alias, local HF folder or hub id.")]
DataOption = Annotated[str, typer.Option(help="Builtin data set or a data file / folder.")]
SamplesOption = Annotated[int, typer.Option("--samples", "-n", help="N, examples in the probe sample.")]
MaxLengthOption = Annotated[int, typer.Option(help="T, tokens per example after truncation.")]
TaskOption = Annotated[str, typer.Option(help=(
    "classifier: a new head on pooled features; label-words: prompt a decoder LM and read the label words' "
    "next-token logits; auto: label-words for decoder-only models."))]
TemplateOption = Annotated[Optional[str], typer.Option(help=(
    "label-words: the prompt, with {text} where the text goes (default 'Text: {text}\\nLabel:'); \\n is a newline."))]
LabelWordOption = Annotated[Optional[list[str]], typer.Option("--label-word", help=(
    "label-words: one single-token word per class, in label order (repeatable; default ' ' + label name)."))]


def _prompt_options(template, label_word) -> dict:
    return {"template": template.replace("\\n", "\n") if template else None, "label_words": tuple(label_word or ())}


@app.command()
def profile(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write (profile.json, kernels.safetensors, head).")],
    model: ModelOption = "minilm-l6",
    data: DataOption = "vader-movie",
    text_column: TextColumn_ = "text",
    label_column: LabelColumn = "label",
    samples: SamplesOption = 64,
    max_length: MaxLengthOption = 64,
    seed: Annotated[int, typer.Option(help="Seed of the splits, the probe sample and the head.")] = 0,
    output: Annotated[str, typer.Option(help="Output reduction: trace (any C), margin (binary f1-f0), full (NC x NC).")] = "trace",
    head: Annotated[str, typer.Option(help=(
        "probe: fit the new head as a linear probe first; random: keep its init; label-words: the label words' "
        "LM-head rows; auto: label-words when prompting, else probe."))] = "auto",
    task: TaskOption = "auto",
    template: TemplateOption = None,
    label_word: LabelWordOption = None,
    method: Annotated[str, typer.Option(help="structured (fast, default) or jacobian (vmap(jacrev) reference).")] = "structured",
    dtype: Annotated[str, typer.Option(help="Model dtype: float32 or float64. Kernels are float64 either way.")] = "float32",
    module: Annotated[Optional[list[str]], typer.Option("--module", help="Profile only this module (repeatable).")] = None,
    capture_mib: Annotated[int, typer.Option(help=(
        "MiB for the layer inputs and output gradients held at once; past it, modules are profiled in further "
        "forward/backward passes (same kernels, less memory, a little slower)."))] = 512,
    signal_samples: Annotated[int, typer.Option(help=(
        "M, training examples for the label-gradient row/column scores that pick which rows to train "
        "(cost grows linearly in M; 0 skips them and recommend falls back to the probe sample's alignment)."))] = 1024,
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    top: Annotated[int, typer.Option(help="Rows of the summary table.")] = 10,
    as_json: JsonOption = False,
):
    """Compute per-module, per-row and per-column NTK contributions and their spectra on a probe sample."""
    from ..artifacts import check_profile_destination, save_profile
    from ..profiler import ProfileConfig
    from ..profiler import profile as run_profile

    check_profile_destination(out_dir, force)
    config = ProfileConfig(model=model, data=data, text_column=text_column, label_column=label_column,
                           samples=samples, max_length=max_length, seed=seed, reduction=output, head=head,
                           method=method, dtype=dtype, modules=tuple(module or ()), task=task,
                           capture_mib=capture_mib, signal_samples=signal_samples,
                           **_prompt_options(template, label_word))
    with _progress_bar() as bar:
        result = run_profile(config, on_progress=_progress_callback(bar))
    save_profile(result, out_dir, force=force)
    for warning in result.warnings:
        err.print(f"warning: {warning}", markup=False)
    summary = {
        "out": str(out_dir),
        "settings": {k: result.settings[k] for k in ("model", "data", "samples", "max_length", "seed", "reduction")},
        "head": result.head_report,
        "total": {k: v for k, v in result.total.items() if k != "spectrum"},
        "timing": result.timing,
        "modules": [m.__dict__ for m in result.modules],
    }
    if as_json:
        return _print_json(summary)
    ranked = sorted(result.modules, key=lambda m: -m.trace)[:top]
    table = Table("module", "role", "W", "trace", "λ_max", "κ", "eff. rank", "alignment", "LOO acc",
                  title=f"top {len(ranked)} of {len(result.modules)} modules by NTK trace")
    table.columns[0].no_wrap = True
    for m in ranked:
        table.add_row(m.name, m.role, f"{m.d_out}x{m.d_in}", _fmt(m.trace), _fmt(m.lambda_max),
                      _fmt(m.condition_number), f"{m.effective_rank:.1f}", _fmt(m.alignment), _fmt(m.loo_accuracy))
    out.print(table)
    t = result.total
    if result.settings.get("prompt"):
        chosen = result.settings["prompt"]
        out.print(f"prompting with template {chosen['template']!r} and label words "
                  f"{', '.join(repr(w) for w in chosen['label_words'])}", markup=False)
    kind = result.head_report.get("kind")
    head_text = "random head"
    if kind in ("probe", "label-words") and "validation_accuracy" in result.head_report:
        what = "probe head" if kind == "probe" else "label-word head, zero-shot"
        head_text = f"{what} validation accuracy {result.head_report['validation_accuracy']:.3f}"
    out.print(f"total kernel: trace {_fmt(t['trace'])}, κ {_fmt(t['condition_number'])}, alignment "
              f"{_fmt(t['alignment'])}, LOO kernel-ridge accuracy {_fmt(t['loo_accuracy'])} ({head_text})")
    out.print(f"wrote {out_dir} in {result.timing['total_s']:.1f} s")


# ----------------------------------------------------------------------------- recommend / advise / check
MethodOption = Annotated[str, typer.Option(help="rocoft (rows/columns) or lora (modules and ranks).")]
BudgetOption = Annotated[int, typer.Option(help="Trainable parameters in total, head and biases included.")]
ObjectiveOption = Annotated[str, typer.Option(
    help="What the greedy search maximizes per parameter: alignment, loo, lambda_min, condition or trace.")]
PlacementOption = Annotated[str, typer.Option(
    help="advised (the NTK search) or a baseline: first-k, random, wanda-min, wanda-max, weight-kappa, grad-norm, "
    "lora-qv, lora-all.")]
ProximalOption = Annotated[float, typer.Option(help="λ of the proximal term (λ/2)‖θ−θ0‖²; 0 turns it off.")]
AxisOption = Annotated[str, typer.Option(help="RoCoFT axis: rows (output units) or cols (input features).")]
AllocationOption = Annotated[str, typer.Option(help=(
    "RoCoFT rows per module before the objective spends the rest: greedy (one best-aligned row in every module), "
    "uniform (the same number in every module, each module's best-aligned rows) or free (the objective alone)."))]


def _recommend_config(method, budget, objective, placement, proximal, axis, train_head, seed, allocation):
    from ..recommender import RecommendConfig

    return RecommendConfig(method=method, budget=budget, objective=objective, placement=placement, proximal=proximal,
                           axis=axis, train_head=train_head, seed=seed, allocation=allocation)


def _write_recipe(recipe, out_path: Path, as_json: bool) -> None:
    from ..recipe import recipe_to_dict, save_recipe

    save_recipe(recipe, out_path, command=f"ntk-advisor train {out_path} --out {out_path.parent / (out_path.stem + '-run')}")
    if as_json:
        return _print_json(recipe_to_dict(recipe))
    ev = recipe.evidence
    table = Table("placement at the same budget", "weights", "LOO acc", "alignment", "λ_min", "κ", "‖K−K_S‖/‖K‖",
                  title=f"{recipe.method} recipe, {ev['trainable']['total']:,} trainable parameters")
    rows = [(f"{ev['placement']} ({ev['objective']})" if ev.get("objective") else ev["placement"], ev["predicted"])]
    rows += [(name, r) for name, r in ev["baselines_same_budget"].items() if name != ev["placement"]]
    for name, r in rows:
        table.add_row(name, f"{r['weights']:,}", _fmt(r["loo_accuracy"]), _fmt(r["alignment"]), _fmt(r["lambda_min"]),
                      _fmt(r["condition_number"]), _fmt(r["distance_to_full"]))
    out.print(table)
    t = ev["trainable"]
    out.print(f"{len(recipe.targets)} modules targeted; trainable = weights {t['weights']:,} + head {t['head']:,} + "
              f"biases {t['biases']:,} = {t['total']:,}; predictions are kernel regression on the probe sample")
    out.print(f"wrote {out_path}")


@app.command()
def recommend(
    profile_dir: Annotated[Path, typer.Argument(help="A folder written by ntk-advisor profile.")],
    out_path: Annotated[Path, typer.Option("--out", help="Recipe file to write (YAML).")] = Path("recipe.yaml"),
    method: MethodOption = "rocoft",
    budget: BudgetOption = 21_506,
    objective: ObjectiveOption = "trace",  # recommender.DEFAULT_OBJECTIVE (tested equal)
    placement: PlacementOption = "advised",
    proximal: ProximalOption = 0.0,
    axis: AxisOption = "rows",
    allocation: AllocationOption = "greedy",  # recommender.RecommendConfig.allocation (tested equal)
    train_head: Annotated[bool, typer.Option(help="Train the classification head (counted in the budget).")] = True,
    seed: Annotated[int, typer.Option(help="Seed of random placements and training.")] = 0,
    as_json: JsonOption = False,
):
    """Place a parameter budget from a profile and write a YAML recipe with the evidence behind it."""
    from ..recommender import recommend as run_recommend

    config = _recommend_config(method, budget, objective, placement, proximal, axis, train_head, seed, allocation)
    with _progress_bar() as bar:
        recipe = run_recommend(profile_dir, config, on_progress=_progress_callback(bar))
    _write_recipe(recipe, out_path, as_json)


@app.command()
def advise(
    out_path: Annotated[Path, typer.Option("--out", help="Recipe file to write (YAML).")] = Path("recipe.yaml"),
    model: ModelOption = "minilm-l6",
    data: DataOption = "vader-movie",
    text_column: TextColumn_ = "text",
    label_column: LabelColumn = "label",
    samples: SamplesOption = 64,
    max_length: MaxLengthOption = 64,
    profile_dir: Annotated[Optional[Path], typer.Option("--profile-out", help=(
        "Keep the profile in this new folder (refused when it exists, unless --force and it is a profile)."))] = None,
    method: MethodOption = "rocoft",
    budget: BudgetOption = 21_506,
    objective: ObjectiveOption = "trace",  # recommender.DEFAULT_OBJECTIVE (tested equal)
    placement: PlacementOption = "advised",
    proximal: ProximalOption = 0.0,
    axis: AxisOption = "rows",
    allocation: AllocationOption = "greedy",  # recommender.RecommendConfig.allocation (tested equal)
    seed: Annotated[int, typer.Option(help="Seed of splits, probe sample, head and placements.")] = 0,
    task: TaskOption = "auto",
    template: TemplateOption = None,
    label_word: LabelWordOption = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --profile-out profile folder.")] = False,
    as_json: JsonOption = False,
):
    """Profile, then recommend, in one go."""
    import tempfile

    from ..artifacts import check_profile_destination, save_profile
    from ..profiler import ProfileConfig
    from ..profiler import profile as run_profile
    from ..recommender import recommend as run_recommend

    config = _recommend_config(method, budget, objective, placement, proximal, axis, True, seed, allocation)
    config.validate()
    if profile_dir is not None:  # before minutes of work, never after
        check_profile_destination(profile_dir, force)
    with tempfile.TemporaryDirectory() as scratch, _progress_bar() as bar:
        folder = profile_dir or Path(scratch) / "profile"
        result = run_profile(ProfileConfig(model=model, data=data, text_column=text_column, label_column=label_column,
                                           samples=samples, max_length=max_length, seed=seed, task=task,
                                           **_prompt_options(template, label_word)),
                             on_progress=_progress_callback(bar))
        save_profile(result, folder, force=force)
        recipe = run_recommend(folder, config, on_progress=_progress_callback(bar))
    _write_recipe(recipe, out_path, as_json)


@app.command()
def check(
    recipe_path: Annotated[Path, typer.Argument(help="A recipe YAML file.")],
    as_json: JsonOption = False,
):
    """Validate a recipe against its model without training: modules, indices, ranks, budget."""
    from ..check import check_recipe
    from ..recipe import load_recipe

    report = check_recipe(load_recipe(recipe_path))
    if as_json:
        return _print_json(report)
    out.print(f"ok: {report['targets']} {report['method']} targets on {report['model']}; trainable parameters "
              f"{report['total']:,} (weights {report['weights']:,}, head {report['head']:,}, biases {report['biases']:,})")
