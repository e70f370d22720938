"""`ntk-advisor export` and `recipe convert`: a trained run, or a recipe, in other tools' formats."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from .._io import OutputClaim
from .app import app, recipe_app
from .console import JsonOption, err, out, print_json


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
    from ..exporting.export import export as run_export

    with OutputClaim(out_dir):
        report = run_export(run_dir, fmt, out_dir, force=force)
    if as_json:
        return print_json({"out": str(report.out), "format": report.format, "seconds": report.seconds,
                            "files": report.files, "max_abs_logit_difference": report.max_abs_logit_difference})
    sizes = ", ".join(f"{name} {size / 2**20:.1f} MiB" if size >= 2**20 else f"{name} {size / 2**10:.0f} KiB"
                      for name, size in report.files.items())
    parity = ("" if report.max_abs_logit_difference is None
              else f"; onnxruntime parity {report.max_abs_logit_difference:.2g} on a new batch and length")
    out.print(f"wrote {report.out} in {report.seconds:.1f} s ({sizes}){parity}", soft_wrap=True)


@recipe_app.command("convert")
def recipe_convert(
    recipe_path: Annotated[Path, typer.Argument(help="A recipe YAML file.")],
    to: Annotated[str, typer.Option("--to", help="peft (adapter_config.json-style JSON) or axolotl (YAML keys).")],
):
    """Print the recipe's placement as keys another tool consumes."""
    import yaml

    from ..errors import RecipeError
    from ..methods import get_method, part_from_target
    from ..recipe.io import load_recipe

    recipe = load_recipe(recipe_path)
    if to not in ("peft", "axolotl"):
        raise RecipeError(f"unknown --to '{to}': use peft or axolotl")
    method = get_method(recipe.method)
    note = method.conversion_note(to, {t.module: part_from_target(t) for t in recipe.targets}, recipe.training)
    section = recipe.peft if to == "peft" else recipe.axolotl  # load_recipe synced peft's scale with training
    if to == "axolotl":  # rebuilt from the targets and training: older recipes wrote keys axolotl misread
        from ..recipe.conversions import axolotl_with_head

        head = ((recipe.peft or {}).get("modules_to_save") or [None])[0] if recipe.training.train_head else None
        placement = {t.module: part_from_target(t) for t in recipe.targets}
        section = axolotl_with_head(method.axolotl_section(placement, recipe.training), head)
    if section is None:
        why = note or f"method {recipe.method} has no {to} equivalent"
        raise RecipeError(f"{recipe_path} has no {to} section: {why}")
    if note:
        err.print(f"note: {note}")
    if to == "peft":
        sys.stdout.write(json.dumps({"peft_type": "LORA", "task_type": "SEQ_CLS", **section}, indent=2) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(section, sort_keys=False))
