"""`train`, `export` and `recipe convert`: from a recipe to a trained, exported model."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import TextColumn

from . import (JsonOption, _log_line, _print_json, _progress_bar,
               app, err, out)


# ----------------------------------------------------------------------------- train
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
    as_json: JsonOption = False,
):
    """Train a recipe: proximal RoCoFT or LoRA, with evaluation, checkpoints, resume and a linearization check."""
    from ..recipe import apply_overrides, load_recipe
    from ..trainer import train as run_train

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

        result = run_train(recipe, out_dir, resume=resume, force=force, on_progress=update, protect=(recipe_path,))
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
    fmt: Annotated[str, typer.Option("--format", help=(
        "hf: merged Hugging Face folder; onnx: merged model as ONNX, parity-checked with onnxruntime; hf-lm / "
        "onnx-lm (label-word runs): the merged causal LM, its label-word rows set to the trained head."))] = "hf",
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    as_json: JsonOption = False,
):
    """Merge the run's adapter into the base weights and write a plain HF folder or ONNX."""
    from ..export import export as run_export

    report = run_export(run_dir, fmt, out_dir, force=force)
    if as_json:
        return _print_json({"out": str(report.out), "format": report.format, "seconds": report.seconds,
                            "files": report.files, "max_abs_logit_difference": report.max_abs_logit_difference})
    sizes = ", ".join(f"{name} {size / 2**20:.1f} MiB" if size >= 2**20 else f"{name} {size / 2**10:.0f} KiB"
                      for name, size in report.files.items())
    parity = ("" if report.max_abs_logit_difference is None
              else f"; onnxruntime parity {report.max_abs_logit_difference:.2g} on a new batch and length")
    out.print(f"wrote {report.out} in {report.seconds:.1f} s ({sizes}){parity}", soft_wrap=True)


recipe_app = typer.Typer(help="Recipe utilities.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")


@recipe_app.command("convert")
def recipe_convert(
    recipe_path: Annotated[Path, typer.Argument(help="A recipe YAML file.")],
    to: Annotated[str, typer.Option("--to", help="peft (adapter_config.json-style JSON) or axolotl (YAML keys).")],
):
    """Print the recipe's placement as keys another tool consumes."""
    import yaml

    from ..errors import RecipeError
    from ..recipe import load_recipe

    recipe = load_recipe(recipe_path)
    if to in ("peft", "axolotl") and recipe.method == "rocoft" and (to == "peft" or recipe.targets[0].axis == "cols"):
        err.print("note: RoCoFT slices have no exact equivalent there; this is the nearest "
                  + ("LoRA (rank = rows per module)" if to == "peft" else "setting (whole weights unfrozen)"))
    if to == "peft":
        sys.stdout.write(json.dumps({"peft_type": "LORA", "task_type": "SEQ_CLS", **recipe.peft}, indent=2) + "\n")
    elif to == "axolotl":
        sys.stdout.write(yaml.safe_dump(recipe.axolotl, sort_keys=False))
    else:
        raise RecipeError(f"unknown --to '{to}': use peft or axolotl")
