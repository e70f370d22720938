"""`validate` and `report`: does the advice predict fine-tuning on your task, and show it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from . import JsonOption, LabelColumn, TextColumn_, _fmt, _print_json, _progress_bar, _progress_callback, app, out
from .stages import AllocationOption, DataOption, MaxLengthOption, MethodOption, ModelOption, SamplesOption


def _floats(text: str | None, option: str) -> tuple[float, ...]:
    from ..validate import ValidateError

    if not text:
        return ()
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValidateError(f"{option} takes numbers separated by commas, like 0,1e-3,1e-2; got '{text}'") from None


@app.command()
def validate(
    out_dir: Annotated[Path, typer.Option("--out", help="Study folder; rerun the same command to resume it.")],
    model: ModelOption = "minilm-l6",
    data: DataOption = "vader-movie",
    text_column: TextColumn_ = "text",
    label_column: LabelColumn = "label",
    method: MethodOption = "rocoft",
    budget: Annotated[int, typer.Option(help="Trainable parameters of every placement, head included.")] = 100_000,
    placements: Annotated[int, typer.Option("--placements", "-k", help=(
        "K placements: advised per objective, every baseline, then seeded random ones. 0 with --lambdas runs "
        "only the sweep."))] = 12,
    arms: Annotated[Optional[str], typer.Option(help=(
        "Exactly these placements instead of K, comma-separated: advised, advised-<objective>, baselines such as "
        "first-k,wanda-max,weight-kappa,random, lora-qv, or random-<n> for more random draws."))] = None,
    seeds: Annotated[int, typer.Option(help="Training seeds for every placement.")] = 1,
    key_seeds: Annotated[int, typer.Option(help="Training seeds for the key placements.")] = 3,
    key: Annotated[str, typer.Option(help="Key placements, comma-separated.")] = "advised,first-k,lora-qv,weight-kappa",
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps per run (the same for all).")] = 150,
    epochs: Annotated[Optional[int], typer.Option(help="Train whole epochs instead of --steps.")] = None,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate of every run.")] = 2e-3,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 32,
    samples: SamplesOption = 64,
    max_length: MaxLengthOption = 64,
    proximal: Annotated[float, typer.Option(help="λ of the proximal term for the placement runs.")] = 0.0,
    lambdas: Annotated[Optional[str], typer.Option(help=(
        "Proximal sweep of the advised placement, e.g. 0,1e-3,1e-2,1e-1,1: per λ the fine-tuned and the fully "
        "linear model's accuracy, the linearization gap and ‖θ−θ0‖."))] = None,
    kernel_examples: Annotated[int, typer.Option(help="Training examples the linear model is fitted on.")] = 512,
    seed: Annotated[int, typer.Option(help="Seed of splits, probe sample, random placements; first training seed.")] = 0,
    allocation: AllocationOption = "greedy",  # recommender.RecommendConfig.allocation (tested equal)
    force: Annotated[bool, typer.Option(help="Discard a study in --out made with other settings.")] = False,
    as_json: JsonOption = False,
):
    """Train K placements at one budget and measure whether the profile's predictions rank them as fine-tuning does."""
    from ..validate import ValidateConfig
    from ..validate import validate as run_validate

    config = ValidateConfig(model=model, data=data, text_column=text_column, label_column=label_column,
                            method=method, budget=budget, placements=placements, seeds=seeds, key_seeds=key_seeds,
                            key_placements=tuple(k.strip() for k in key.split(",") if k.strip()),
                            arms=tuple(a.strip() for a in (arms or "").split(",") if a.strip()),
                            steps=None if epochs else steps, epochs=epochs or 1, learning_rate=learning_rate,
                            batch_size=batch_size, samples=samples, max_length=max_length, proximal=proximal,
                            lambdas=_floats(lambdas, "--lambdas"), kernel_examples=kernel_examples, seed=seed,
                            allocation=allocation)
    with _progress_bar() as bar:
        document = run_validate(config, out_dir, force=force, on_progress=_progress_callback(bar))
    if as_json:
        return _print_json(document)
    print_study(document)
    out.print(f"wrote {out_dir / 'validate.json'}; see it with: ntk-advisor report {out_dir} --out report.html")


def print_study(document: dict) -> None:
    placements = document["placements"]
    if placements:
        seeds = ", ".join(document.get("common_seeds", []))
        table = Table("placement", "method", "weights", f"test acc ({seeds})", "test acc (mean ± sd, n)", "val acc",
                      "train loss", "lin. gap", "alignment", "LOO acc",
                      title=f"placements ranked by test accuracy on the seeds all ran ({seeds})")
        for name in document["ranking"]:
            p = placements[name]
            acc = p["test_accuracy"]
            spread = f" ± {acc['std']:.3f}" if acc["n"] > 1 else ""
            table.add_row(name, p["method"], f"{p['weights']:,}", f"{p['common_seeds']['test_accuracy']['mean']:.4f}",
                          f"{acc['mean']:.4f}{spread} ({acc['n']})",
                          f"{p['validation_accuracy']['mean']:.4f}", f"{p['final_train_loss']['mean']:.3f}",
                          _fmt(p["linearization_gap"]["mean"]), _fmt(p["predictors"]["objective:alignment"]),
                          _fmt(p["predictors"]["loo_accuracy"]))
        out.print(table)
    reference = document.get("paired_reference")
    for name, d in document.get("paired", {}).items():
        out.print(f"{reference} − {name}: {100 * d['mean']:+.1f} ± {100 * d['sem']:.1f} points of test accuracy "
                  f"(paired over {d['n']} shared training seeds, ± one standard error)")
    correlations = document.get("correlations", {}).get("test_accuracy")
    if correlations:
        loss = document["correlations"].get("final_train_loss", {})
        table = Table("predictor", "Spearman ρ [95% CI]", "Kendall τ [95% CI]", "n", "ρ with final train loss",
                      title="does the predictor rank placements as test accuracy does?")
        for name, c in sorted(correlations.items(), key=lambda item: -_sortable(item[1]["spearman"])):
            table.add_row(name, _with_ci(c["spearman"], c["spearman_ci"]), _with_ci(c["kendall"], c["kendall_ci"]),
                          str(c["n"]), _with_ci(loss[name]["spearman"], loss[name]["spearman_ci"]) if name in loss
                          else "")
        out.print(table)
    if document.get("sweep"):
        table = Table("λ", "fine-tuned test acc", "linear model test acc", "linearization gap", "‖θ−θ0‖",
                      title="proximal sweep of the advised placement")
        for row in document["sweep"]:
            table.add_row(f"{row['lambda']:g}", f"{row['test_accuracy']:.4f}", _fmt(row["linear_model_accuracy"]),
                          _fmt(row["linearization_gap"]), _fmt(row["distance_from_theta0"]))
        out.print(table)


def _sortable(value: float) -> float:
    return value if value == value else -2.0


def _with_ci(value: float, interval: list[float]) -> str:
    if value != value:
        return "undefined"
    return f"{value:+.2f} [{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval[0] == interval[0] else f"{value:+.2f}"


@app.command()
def report(
    folder: Annotated[Path, typer.Argument(help="A profile, validate or train run folder.")],
    out_path: Annotated[Path, typer.Option("--out", help="HTML file to write (figures embedded).")] = Path(
        "report.html"),
):
    """Write a self-contained HTML page of figures for a profile, a validate study or a training run."""
    from ..report import write_report

    written = write_report(folder, out_path)
    out.print(f"wrote {out_path} ({written['figures']} figures, {written['kind']} folder)")
