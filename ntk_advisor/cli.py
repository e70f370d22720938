"""ntk-advisor command line: one command per stage, each a few lines over the library.

rich and typer live here only. A user mistake (NtkAdvisorError) prints one line and exits 1;
the traceback appears only with --verbose.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from .errors import NtkAdvisorError

app = typer.Typer(
    help="Profile a pretrained transformer's NTK per module, row and column, and advise where to "
    "put a fine-tuning budget.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="Model aliases and the trainable Linear modules of a model.", no_args_is_help=True)
data_app = typer.Typer(help="Builtin data sets and user data files.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")

# Piped output (logs, CI) gets a wide page instead of rich's 80-column default, so module
# names are never cut; a terminal or $COLUMNS still decides when present.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
out = Console(width=_WIDTH)
err = Console(stderr=True, width=_WIDTH)
_state = {"verbose": False}


def _version(value: bool):
    if value:
        out.print(f"ntk-advisor {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
):
    _state["verbose"] = verbose


def _print_json(document) -> None:
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    sys.stdout.write(json.dumps(clean(document), indent=2) + "\n")


JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout instead of a table.")]


# ----------------------------------------------------------------------------- models
@models_app.command("list")
def models_list(as_json: JsonOption = False):
    """List the model aliases that work offline."""
    from .models import MODEL_ALIASES

    if as_json:
        return _print_json(MODEL_ALIASES)
    table = Table("alias", "model")
    for name, text in MODEL_ALIASES.items():
        table.add_row(name, text)
    out.print(table)
    out.print("Any local Hugging Face folder (save_pretrained) works too.")


@models_app.command("show")
def models_show(
    name: Annotated[str, typer.Argument(help="An alias (minilm-l6), a local model folder, or a hub id.")],
    as_json: JsonOption = False,
):
    """Show a model's architecture and every trainable Linear module: name, W[d_out, d_in], layer, role."""
    from .models import describe_model

    info = describe_model(name)
    if as_json:
        return _print_json(info)
    out.print(f"[bold]{name}[/] ({info['model_type']}, {info['num_layers']} layers, hidden {info['hidden_size']}, "
              f"{info['num_parameters']:,} parameters)")
    table = Table("module", "d_out", "d_in", "layer", "role", "bias", "weights")
    table.columns[0].no_wrap = True
    for t in info["targets"]:
        table.add_row(t["name"], str(t["d_out"]), str(t["d_in"]), "-" if t["layer"] is None else str(t["layer"]),
                      t["role"] + (" (Conv1D)" if t["transposed"] else ""), "yes" if t["has_bias"] else "no",
                      f"{t['num_weights']:,}")
    out.print(table)
    out.print(f"{len(info['targets'])} Linear modules. A row is an output unit W\\[i, :], a column an input "
              "feature W\\[:, j].")


# ----------------------------------------------------------------------------- data
TextColumn_ = Annotated[str, typer.Option("--text-column", help="Column holding the text, for user files.")]
LabelColumn = Annotated[str, typer.Option("--label-column", help="Column holding the label, for user files.")]


@data_app.command("list")
def data_list(as_json: JsonOption = False):
    """List the builtin data sets (fetched once, verified by sha256, cached)."""
    from .data import BUILTIN_DATASETS

    if as_json:
        return _print_json(BUILTIN_DATASETS)
    table = Table("name", "data set")
    for name, text in BUILTIN_DATASETS.items():
        table.add_row(name, text)
    out.print(table)
    out.print("User files work too: CSV, TSV, JSONL, Parquet, or a folder saved by Hugging Face datasets.")


@data_app.command("show")
def data_show(
    source: Annotated[str, typer.Argument(help="A builtin name (vader-movie) or a data file / folder.")],
    text_column: TextColumn_ = "text",
    label_column: LabelColumn = "label",
    seed: Annotated[int, typer.Option(help="Seed of the train/validation/test split.")] = 0,
    examples: Annotated[int, typer.Option(help="How many examples to print.")] = 3,
    as_json: JsonOption = False,
):
    """Show a data set: size, counts per label, split sizes, and a few examples."""
    from .data import load_dataset, split_dataset

    dataset = load_dataset(source, text_column, label_column)
    splits = split_dataset(dataset, seed=seed)
    info = {
        "name": source,
        "examples": len(dataset),
        "label_counts": dataset.label_counts(),
        "splits": {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)},
        "examples_shown": [
            {"label": dataset.label_names[dataset.labels[i]], "text": dataset.texts[i]}
            for i in range(min(examples, len(dataset)))
        ],
    }
    if as_json:
        return _print_json(info)
    out.print(f"[bold]{source}[/]: {len(dataset):,} examples, {dataset.num_classes} classes")
    table = Table("label", "count")
    for label, count in info["label_counts"].items():
        table.add_row(label, f"{count:,}")
    out.print(table)
    out.print("splits (seed {}): ".format(seed) + ", ".join(f"{k} {v:,}" for k, v in info["splits"].items()))
    for example in info["examples_shown"]:
        text = " ".join(example["text"].split())  # one line per example, whatever the source's newlines
        room = max(20, out.width - len(example["label"]) - 8)
        out.print(f"  [{example['label']}] {text if len(text) <= room else text[: room - 3] + '...'}", markup=False)


# ----------------------------------------------------------------------------- profile
def _progress_bar(*extra_columns, disable: bool = False) -> Progress:
    """A live bar on a terminal; in logs and CI (no terminal) the callbacks print plain lines instead."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    *extra_columns, console=err, transient=True, disable=disable or not err.is_terminal)


def _log_line(stage: str, done: int, total: int) -> bool:
    """Whether a plain progress line is due: stage start, every 10 %, and the end."""
    return done in (0, 1, total) or done % max(1, total // 10) == 0


def _progress_callback(bar: Progress):
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int):
        if bar.disable:
            if _log_line(stage, done, total):
                err.print(f"{stage}: {done}/{total}", markup=False)
            return
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return update


def _fmt(value: float) -> str:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return f"{value:.3g}"


@app.command()
def profile(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write (profile.json, kernels.safetensors, head).")],
    model: Annotated[str, typer.Option(help="Model alias, local HF folder or hub id.")] = "minilm-l6",
    data: Annotated[str, typer.Option(help="Builtin data set or a data file / folder.")] = "vader-movie",
    text_column: TextColumn_ = "text",
    label_column: LabelColumn = "label",
    samples: Annotated[int, typer.Option("--samples", "-n", help="N, examples in the probe sample.")] = 64,
    max_length: Annotated[int, typer.Option(help="T, tokens per example after truncation.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the splits, the probe sample and the head.")] = 0,
    output: Annotated[str, typer.Option(help="Output reduction: trace (any C), margin (binary f1-f0), full (NC x NC).")] = "trace",
    head: Annotated[str, typer.Option(help="probe: fit the new head as a linear probe first; random: keep its init.")] = "probe",
    method: Annotated[str, typer.Option(help="structured (fast, default) or jacobian (vmap(jacrev) reference).")] = "structured",
    dtype: Annotated[str, typer.Option(help="Model dtype: float32 or float64. Kernels are float64 either way.")] = "float32",
    module: Annotated[Optional[list[str]], typer.Option("--module", help="Profile only this module (repeatable).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    top: Annotated[int, typer.Option(help="Rows of the summary table.")] = 10,
    as_json: JsonOption = False,
):
    """Compute per-module, per-row and per-column NTK contributions and their spectra on a probe sample."""
    from .artifacts import save_profile
    from .errors import ProfileError
    from .profiler import ProfileConfig
    from .profiler import profile as run_profile

    if out_dir.exists() and not force:
        raise ProfileError(f"output folder '{out_dir}' already exists: choose another --out or pass --force")
    config = ProfileConfig(model=model, data=data, text_column=text_column, label_column=label_column,
                           samples=samples, max_length=max_length, seed=seed, reduction=output, head=head,
                           method=method, dtype=dtype, modules=tuple(module or ()))
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
    head_text = (f"probe head, validation accuracy {result.head_report['validation_accuracy']:.3f}"
                 if result.head_report.get("kind") == "probe" and "validation_accuracy" in result.head_report
                 else "random head")
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


def _recommend_config(method, budget, objective, placement, proximal, axis, train_head, seed):
    from .recommender import RecommendConfig

    return RecommendConfig(method=method, budget=budget, objective=objective, placement=placement, proximal=proximal,
                           axis=axis, train_head=train_head, seed=seed)


def _write_recipe(recipe, out_path: Path, as_json: bool) -> None:
    from .recipe import recipe_to_dict, save_recipe

    save_recipe(recipe, out_path, command=f"ntk-advisor train {out_path} --out runs/{out_path.stem}")
    if as_json:
        return _print_json(recipe_to_dict(recipe))
    ev = recipe.evidence
    table = Table("placement at the same budget", "weights", "LOO acc", "alignment", "λ_min", "κ", "‖K−K_S‖/‖K‖",
                  title=f"{recipe.method} recipe, {ev['trainable']['total']:,} trainable parameters")
    rows = [(f"{ev['placement']} ({ev['objective']})" if ev.get("objective") else ev["placement"], ev["predicted"])]
    rows += list(ev["baselines_same_budget"].items())
    for name, r in rows:
        table.add_row(name, f"{r['weights']:,}", _fmt(r["loo_accuracy"]), _fmt(r["alignment"]), _fmt(r["lambda_min"]),
                      _fmt(r["condition_number"]), _fmt(r["distance_to_full"]))
    out.print(table)
    out.print(f"{len(recipe.targets)} modules targeted; wrote {out_path}")


@app.command()
def recommend(
    profile_dir: Annotated[Path, typer.Argument(help="A folder written by ntk-advisor profile.")],
    out_path: Annotated[Path, typer.Option("--out", help="Recipe file to write (YAML).")] = Path("recipe.yaml"),
    method: MethodOption = "rocoft",
    budget: BudgetOption = 21_506,
    objective: ObjectiveOption = "alignment",
    placement: PlacementOption = "advised",
    proximal: ProximalOption = 0.0,
    axis: AxisOption = "rows",
    train_head: Annotated[bool, typer.Option(help="Train the classification head (counted in the budget).")] = True,
    seed: Annotated[int, typer.Option(help="Seed of random placements and training.")] = 0,
    as_json: JsonOption = False,
):
    """Place a parameter budget from a profile and write a YAML recipe with the evidence behind it."""
    from .recommender import recommend as run_recommend

    config = _recommend_config(method, budget, objective, placement, proximal, axis, train_head, seed)
    with _progress_bar() as bar:
        recipe = run_recommend(profile_dir, config, on_progress=_progress_callback(bar))
    _write_recipe(recipe, out_path, as_json)


@app.command()
def advise(
    out_path: Annotated[Path, typer.Option("--out", help="Recipe file to write (YAML).")] = Path("recipe.yaml"),
    model: Annotated[str, typer.Option(help="Model alias, local HF folder or hub id.")] = "minilm-l6",
    data: Annotated[str, typer.Option(help="Builtin data set or a data file / folder.")] = "vader-movie",
    text_column: TextColumn_ = "text",
    label_column: LabelColumn = "label",
    samples: Annotated[int, typer.Option("--samples", "-n", help="N, examples in the probe sample.")] = 64,
    max_length: Annotated[int, typer.Option(help="T, tokens per example after truncation.")] = 64,
    profile_dir: Annotated[Optional[Path], typer.Option("--profile-out", help="Keep the profile here.")] = None,
    method: MethodOption = "rocoft",
    budget: BudgetOption = 21_506,
    objective: ObjectiveOption = "alignment",
    placement: PlacementOption = "advised",
    proximal: ProximalOption = 0.0,
    axis: AxisOption = "rows",
    seed: Annotated[int, typer.Option(help="Seed of splits, probe sample, head and placements.")] = 0,
    as_json: JsonOption = False,
):
    """Profile, then recommend, in one go."""
    import tempfile

    from .artifacts import save_profile
    from .profiler import ProfileConfig
    from .profiler import profile as run_profile
    from .recommender import recommend as run_recommend

    config = _recommend_config(method, budget, objective, placement, proximal, axis, True, seed)
    config.validate()
    with tempfile.TemporaryDirectory() as scratch, _progress_bar() as bar:
        folder = profile_dir or Path(scratch) / "profile"
        result = run_profile(ProfileConfig(model=model, data=data, text_column=text_column, label_column=label_column,
                                           samples=samples, max_length=max_length, seed=seed),
                             on_progress=_progress_callback(bar))
        save_profile(result, folder, force=profile_dir is not None)
        recipe = run_recommend(folder, config, on_progress=_progress_callback(bar))
    _write_recipe(recipe, out_path, as_json)


@app.command()
def check(
    recipe_path: Annotated[Path, typer.Argument(help="A recipe YAML file.")],
    as_json: JsonOption = False,
):
    """Validate a recipe against its model without training: modules, indices, ranks, budget."""
    from .check import check_recipe
    from .recipe import load_recipe

    report = check_recipe(load_recipe(recipe_path))
    if as_json:
        return _print_json(report)
    out.print(f"ok: {report['targets']} {report['method']} targets on {report['model']}; trainable parameters "
              f"{report['total']:,} (weights {report['weights']:,}, head {report['head']:,}, biases {report['biases']:,})")


# ----------------------------------------------------------------------------- train
@app.command()
def train(
    recipe_path: Annotated[Path, typer.Argument(help="A recipe YAML file (from recommend, or written by hand).")],
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="key=value overrides, e.g. training.learning_rate=1e-3 proximal.lambda=0.1")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default runs/<recipe name>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its newest complete checkpoint.")] = False,
    force: Annotated[bool, typer.Option(help="Delete whatever --out holds and start over.")] = False,
    as_json: JsonOption = False,
):
    """Train a recipe: proximal RoCoFT or LoRA, with evaluation, checkpoints, resume and a linearization check."""
    from .recipe import apply_overrides, load_recipe
    from .trainer import train as run_train

    recipe = apply_overrides(load_recipe(recipe_path), overrides or [])
    out_dir = out_dir or Path("runs") / recipe_path.stem
    main_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun, only rank 0 talks
    with _progress_bar(TextColumn("{task.fields[info]}"), disable=not main_process) as bar:
        task = bar.add_task("train", total=1, info="")

        def update(stage, done, total, metrics):
            if stage == "train":
                bar.update(task, completed=done, total=total, info=f"loss {metrics['loss']:.4f}")
                if bar.disable and main_process and _log_line(stage, done, total):
                    err.print(f"train: step {done}/{total}, loss {metrics['loss']:.4f}")
            elif main_process:
                err.print(f"epoch {metrics['epoch']}: validation accuracy {metrics['accuracy']:.4f}, "
                          f"macro-F1 {metrics['macro_f1']:.4f}, loss {metrics['loss']:.4f}")

        result = run_train(recipe, out_dir, resume=resume, force=force, on_progress=update)
    m = result.metrics
    if not main_process:
        return
    if as_json:
        return _print_json({k: v for k, v in m.items() if k not in ("loss_curve", "recipe")})
    gap = m.get("linearization_gap")
    out.print(f"test accuracy {m['test']['accuracy']:.4f} (macro-F1 {m['test']['macro_f1']:.4f}); best validation "
              f"accuracy {m['validation_best']['accuracy']:.4f}; {m['trainable_parameters']:,} trainable parameters; "
              f"‖θ−θ0‖ {m['distance_from_theta0']:.3g}; linearization gap "
              f"{'n/a' if gap is None else f'{gap:.3f}'}")
    out.print(f"wrote {out_dir} (adapter/, metrics.json, recipe.yaml) in {m['wall_seconds']:.0f} s")


# ----------------------------------------------------------------------------- export / recipe convert
@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder (ntk-advisor train --out).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write.")],
    fmt: Annotated[str, typer.Option("--format", help="hf: merged Hugging Face folder; onnx: merged model as ONNX, "
                                                      "parity-checked with onnxruntime.")] = "hf",
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    as_json: JsonOption = False,
):
    """Merge the run's adapter into the base weights and write a plain HF folder or ONNX."""
    from .export import export as run_export

    report = run_export(run_dir, fmt, out_dir, force=force)
    if as_json:
        return _print_json({"out": str(report.out), "format": report.format, "seconds": report.seconds,
                            "files": report.files, "max_abs_logit_difference": report.max_abs_logit_difference})
    sizes = ", ".join(f"{name} {size / 2**20:.1f} MiB" for name, size in report.files.items())
    parity = ("" if report.max_abs_logit_difference is None
              else f"; onnxruntime parity {report.max_abs_logit_difference:.2g} on a new batch and length")
    out.print(f"wrote {report.out} in {report.seconds:.1f} s ({sizes}){parity}")


recipe_app = typer.Typer(help="Recipe utilities.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")


@recipe_app.command("convert")
def recipe_convert(
    recipe_path: Annotated[Path, typer.Argument(help="A recipe YAML file.")],
    to: Annotated[str, typer.Option("--to", help="peft (adapter_config.json-style JSON) or axolotl (YAML keys).")],
):
    """Print the recipe's placement as keys another tool consumes."""
    import yaml

    from .errors import RecipeError
    from .recipe import load_recipe

    recipe = load_recipe(recipe_path)
    if to == "peft":
        sys.stdout.write(json.dumps({"peft_type": "LORA", "task_type": "SEQ_CLS", **recipe.peft}, indent=2) + "\n")
    elif to == "axolotl":
        sys.stdout.write(yaml.safe_dump(recipe.axolotl, sort_keys=False))
    else:
        raise RecipeError(f"unknown --to '{to}': use peft or axolotl")


def main() -> None:
    try:
        app()
    except NtkAdvisorError as exc:
        if _state["verbose"]:
            raise
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted; finished outputs were kept, unfinished ones were not written")
        sys.exit(130)


if __name__ == "__main__":
    main()
