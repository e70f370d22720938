"""`ntk-advisor validate` and `report`: does the advice predict fine-tuning on your task; show it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .._io import OutputClaim
from ..study.config import ValidateConfig
from .app import app
from .console import (
    AllocationOption,
    DataOption,
    DeviceOption,
    JsonOption,
    LabelColumnOption,
    MaxLengthOption,
    MethodOption,
    ModelOption,
    SamplesOption,
    TaskOption,
    TextColumnOption,
    fmt,
    out,
    print_json,
    progress_bar,
    progress_callback,
)


def _floats(text: str | None, option: str) -> tuple[float, ...]:
    from ..errors import ValidateError

    if not text:
        return ()
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValidateError(f"{option} takes numbers separated by commas, like 0,1e-3,1e-2; got '{text}'") from None


@app.command()
def validate(
    out_dir: Annotated[Path, typer.Option("--out", help="Study folder; rerun the same command to resume it.")],
    model: ModelOption = ValidateConfig.model,
    data: DataOption = ValidateConfig.data,
    task: TaskOption = ValidateConfig.task,
    text_column: TextColumnOption = ValidateConfig.text_column,
    label_column: LabelColumnOption = ValidateConfig.label_column,
    method: MethodOption = ValidateConfig.method,
    budget: Annotated[int, typer.Option(help="Trainable parameters of every placement, head included.")] = ValidateConfig.budget,
    placements: Annotated[int, typer.Option("--placements", "-k", help=(
        "K placements: advised per objective, every baseline, then seeded random ones. 0 with --lambdas runs "
        "only the sweep."))] = ValidateConfig.placements,
    arms: Annotated[Optional[str], typer.Option(help=(
        "Exactly these placements instead of K, comma-separated: advised, advised-<objective>, baselines such as "
        "first-k,wanda-max,weight-kappa,random, lora-qv, or random-<n> for more random draws."))] = None,
    seeds: Annotated[int, typer.Option(help="Training seeds for every placement.")] = ValidateConfig.seeds,
    key_seeds: Annotated[int, typer.Option(help="Training seeds for the key placements.")] = ValidateConfig.key_seeds,
    key: Annotated[str, typer.Option(help="Key placements, comma-separated.")] = ",".join(ValidateConfig.key_placements),
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps per run (the same for all).")] = ValidateConfig.steps,
    epochs: Annotated[Optional[int], typer.Option(help="Train whole epochs instead of --steps.")] = None,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate of every run.")] = ValidateConfig.learning_rate,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = ValidateConfig.batch_size,
    samples: SamplesOption = ValidateConfig.samples,
    max_length: MaxLengthOption = ValidateConfig.max_length,
    proximal: Annotated[float, typer.Option(help="λ of the proximal term for the placement runs.")] = ValidateConfig.proximal,
    lambdas: Annotated[Optional[str], typer.Option(help=(
        "Proximal sweep of the advised placement, e.g. 0,1e-3,1e-2,1e-1,1: per λ the fine-tuned and the fully "
        "linear model's accuracy, the linearization gap and ‖θ−θ0‖."))] = None,
    kernel_examples: Annotated[int, typer.Option(help="Training examples the linear model is fitted on.")] = ValidateConfig.kernel_examples,
    seed: Annotated[int, typer.Option(help="Seed of splits, probe sample, random placements; first training seed.")] = ValidateConfig.seed,
    allocation: AllocationOption = ValidateConfig.allocation,
    force: Annotated[bool, typer.Option(help="Discard a study in --out made with other settings.")] = False,
    device: DeviceOption = "auto",
    shard: Annotated[Optional[str], typer.Option(help=(
        "I/P: this process trains every P-th run of the study (start P processes on the same --out, e.g. one per "
        "GPU); shard 0 profiles, plans and writes validate.json. Under torchrun the rank decides."))] = None,
    as_json: JsonOption = False,
):
    """Train K placements at one budget and measure whether the profile's predictions rank them as fine-tuning does.

    Classifiers are ranked by test accuracy; --task sft ranks by test completion NLL (lower is better)."""
    from ..study.validate import ValidateConfig

    config = ValidateConfig(model=model, data=data, task=task, text_column=text_column, label_column=label_column,
                            method=method, budget=budget, placements=placements, seeds=seeds, key_seeds=key_seeds,
                            key_placements=tuple(k.strip() for k in key.split(",") if k.strip()),
                            arms=tuple(a.strip() for a in (arms or "").split(",") if a.strip()),
                            steps=None if epochs else steps, epochs=epochs or 1, learning_rate=learning_rate,
                            batch_size=batch_size, samples=samples, max_length=max_length, proximal=proximal,
                            lambdas=_floats(lambdas, "--lambdas"), kernel_examples=kernel_examples, seed=seed,
                            allocation=allocation)
    document = _run_shard(config, out_dir, force, device, shard)
    if document is None:
        return
    if as_json:
        return print_json(document)
    print_study(document)
    out.print(f"wrote {out_dir / 'validate.json'}; see it with: ntk-advisor report {out_dir} --out report.html")


def _run_shard(config, out_dir: Path, force: bool, device: str, shard: str | None) -> dict | None:
    """The study, or this process's share of it (shard 0 owns the folder and returns the study)."""
    from ..study.validate import validate as run_validate

    index, count = _shard(shard)
    device = _launcher_device(device) if count > 1 and shard is None else device
    with OutputClaim(out_dir) if index == 0 else contextlib.nullcontext(), progress_bar() as bar:
        document = run_validate(config, out_dir, force=force, on_progress=progress_callback(bar),
                                device=device, shard=(index, count))
    if document is None:
        out.print(f"shard {index}/{count}: its runs are done; shard 0 writes {out_dir / 'validate.json'}")
    return document


def _shard(text: str | None) -> tuple[int, int]:
    """--shard I/P, or a launcher's rank and world size; (0, 1) otherwise."""
    from ..errors import ValidateError

    if text is None:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValidateError(f"--shard takes I/P, like 0/2 or 1/2; got '{text}'") from None
    if count < 1 or not 0 <= index < count:
        raise ValidateError(f"--shard {text}: I must be 0 to P - 1 and P at least 1")
    return index, count


def _launcher_device(device: str) -> str:
    """Under torchrun each shard trains alone: Accelerate must not see the launcher's process
    group, and the shard takes its local rank's GPU."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    for key in ("RANK", "LOCAL_RANK", "GROUP_RANK", "ROLE_RANK"):
        os.environ[key] = "0"
    for key in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_WORLD_SIZE", "ROLE_WORLD_SIZE"):
        os.environ[key] = "1"
    import torch

    return f"cuda:{local}" if device in ("auto", "cuda") and torch.cuda.is_available() else device


def print_study(document: dict) -> None:
    from ..study.summary import LESS_IS_BETTER, document_outcome

    outcome = document_outcome(document)
    test, short = outcome.test, outcome.short
    placements = document["placements"]
    if placements:
        seeds = ", ".join(document.get("common_seeds", []))
        table = Table("placement", "method", "weights", f"test {short} ({seeds})", f"test {short} (mean ± sd, n)",
                      f"val {short}", "train loss", "lin. gap", *(p.removeprefix("objective:") for p in outcome.headline),
                      title=f"placements ranked by {outcome.label} on the seeds all ran ({seeds})")
        for name in document["ranking"]:
            p = placements[name]
            value = p[test]
            spread = f" ± {value['std']:.3f}" if value["n"] > 1 else ""
            table.add_row(name, p["method"], f"{p['weights']:,}", f"{p['common_seeds'][test]['mean']:.4f}",
                          f"{value['mean']:.4f}{spread} ({value['n']})",
                          f"{p[outcome.validation]['mean']:.4f}", f"{p['final_train_loss']['mean']:.3f}",
                          fmt(p["linearization_gap"]["mean"]), *(fmt(p["predictors"][k]) for k in outcome.headline))
        out.print(table)
    reference = document.get("paired_reference")
    for name, d in document.get("paired", {}).items():
        figure = (f"{100 * d['mean']:+.1f} ± {100 * d['sem']:.1f} points of test accuracy" if outcome.higher_is_better
                  else f"{d['mean']:+.4f} ± {d['sem']:.4f} nats of test NLL (below 0: {reference} better)")
        out.print(f"{reference} − {name}: {figure} (paired over {d['n']} shared training seeds, ± one standard "
                  "error)")
    correlations = document.get("correlations", {}).get(test)
    if correlations:
        loss = document["correlations"].get("final_train_loss", {})
        sign = "ρ > 0" if outcome.higher_is_better else "ρ < 0"
        table = Table("predictor", "Spearman ρ [95% CI]", "Kendall τ [95% CI]", "n", "ρ with final train loss",
                      title=f"does the predictor rank placements as {outcome.label} does? (yes: {sign}, the other "
                            f"sign for {', '.join(LESS_IS_BETTER)})")
        for name, c in sorted(correlations.items(),
                              key=lambda item: -_sortable(outcome.useful_sign(item[0]) * item[1]["spearman"])):
            table.add_row(name, _with_ci(c["spearman"], c["spearman_ci"]), _with_ci(c["kendall"], c["kendall_ci"]),
                          str(c["n"]), _with_ci(loss[name]["spearman"], loss[name]["spearman_ci"]) if name in loss
                          else "")
        out.print(table)
    if document.get("sweep"):
        table = Table("λ", "fine-tuned test acc", "linear model test acc", "linearization gap", "‖θ−θ0‖",
                      title="proximal sweep of the advised placement")
        for row in document["sweep"]:
            table.add_row(f"{row['lambda']:g}", f"{row['test_accuracy']:.4f}", fmt(row["linear_model_accuracy"]),
                          fmt(row["linearization_gap"]), fmt(row["distance_from_theta0"]))
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
    from ..study.report import write_report

    written = write_report(folder, out_path)
    out.print(f"wrote {out_path} ({written['figures']} figures, {written['kind']} folder)")
