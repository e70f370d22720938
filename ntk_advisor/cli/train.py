"""`ntk-advisor train`: run a recipe (proximal RoCoFT or LoRA) into a run folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import TextColumn

from .app import app
from .console import (
    DeviceOption,
    JsonOption,
    err,
    log_line,
    out,
    print_json,
    progress_bar,
)


@app.command()
def train(
    recipe_path: Annotated[Path, typer.Argument(help="A recipe YAML file (from recommend, or written by hand).")],
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="key=value overrides, e.g. training.learning_rate=1e-3 proximal.lambda=0.1")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default runs/<recipe name>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its newest complete checkpoint.")] = False,
    force: Annotated[bool, typer.Option(help=(
        "Start over in an --out that holds an earlier run (only a run folder's own files are deleted; a folder "
        "with other files, the recipe or the data is refused)."))] = False,
    device: DeviceOption = "auto",
    as_json: JsonOption = False,
):
    """Train a recipe: proximal RoCoFT or LoRA, with evaluation, checkpoints, resume and a linearization check."""
    from ..recipe.io import apply_overrides, load_recipe
    from ..training.loop import train as run_train

    recipe = apply_overrides(load_recipe(recipe_path), overrides or [])
    out_dir = out_dir or Path("runs") / recipe_path.stem
    main_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun, only rank 0 talks
    with progress_bar(TextColumn("{task.fields[info]}"), disable=not main_process) as bar:
        task = bar.add_task("train", total=1, info="")

        def update(stage, done, total, metrics):
            if stage == "train":
                bar.update(task, completed=done, total=total, info=f"loss {metrics['loss']:.4f}")
                if bar.disable and main_process and log_line(stage, done, total):
                    err.print(f"train: step {done}/{total}, loss {metrics['loss']:.4f}")
            elif main_process:
                err.print(f"epoch {metrics['epoch']}: validation {describe(metrics)}")

        result = run_train(recipe, out_dir, resume=resume, force=force, on_progress=update, protect=(recipe_path,),
                           device=device)
    m = result.metrics
    if not main_process:
        return
    if as_json:
        return print_json({k: v for k, v in m.items() if k not in ("loss_curve", "recipe")})
    gap = m.get("linearization_gap")
    out.print(f"test {describe(m['test'])}; best validation {describe(m['validation_best'])}; "
              f"{m['trainable_parameters']:,} trainable parameters; ‖θ−θ0‖ {m['distance_from_theta0']:.3g}; "
              f"linearization gap {'n/a' if gap is None else f'{gap:.3f}'}")
    forgetting = m.get("forgetting")
    if forgetting:
        out.print(f"forgetting: NLL of {forgetting['texts']} {forgetting['source']} texts {forgetting['nll_theta0']:.4f} "
                  f"at θ0, {forgetting['nll_after']:.4f} after ({forgetting['increase']:+.4f})")
    written = "adapter/, metrics.json, recipe.yaml" + (", generations.jsonl" if "exact_match" in m["test"] else "")
    out.print(f"wrote {out_dir} ({written}) in {m['wall_seconds']:.0f} s")


def describe(metrics: dict) -> str:
    """A classifier's accuracy and macro-F1, or a generative run's completion NLL and perplexity."""
    if "accuracy" in metrics:
        return f"accuracy {metrics['accuracy']:.4f} (macro-F1 {metrics['macro_f1']:.4f}, loss {metrics['loss']:.4f})"
    text = f"completion NLL {metrics['nll']:.4f} (perplexity {metrics['perplexity']:.2f})"
    if "exact_match" in metrics:
        text += f", greedy exact match {metrics['exact_match']:.3f} on {metrics['exact_match_examples']}"
    return text
