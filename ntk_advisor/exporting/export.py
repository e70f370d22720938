"""export(): a trained run as a merged Hugging Face folder, or as ONNX with verified parity.

Merge first, then export (LANDSCAPE.md, ONNX): the adapter is folded into the base weights,
so the result needs neither ntk-advisor nor PEFT. ONNX parity is checked with onnxruntime on
a batch size and sequence length different from the export's.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .._io import refuse_links, write_folder_atomically
from ..errors import ExportError
from ..inputs import models
from ..methods import get_method
from ..recipe.io import load_recipe
from ..tasks import get_task
from ..training.apply import load_adapter

FORMATS = ("hf", "onnx", "hf-lm", "onnx-lm")  # -lm: the causal LM of a label-word run
PARITY_TOLERANCE = 1e-4


@dataclass
class ExportReport:
    out: Path
    format: str
    seconds: float
    files: dict[str, int]  # name -> bytes
    max_abs_logit_difference: float | None = None


def merged_model(run_dir: str | Path):
    """The run's base model with its adapter merged in, and its tokenizer."""
    run_dir = Path(run_dir)
    adapter = run_dir / "adapter"
    refuse_links(run_dir, "run", ExportError)
    if not (run_dir / "recipe.yaml").exists() or not (adapter / "adapter_config.json").exists():
        raise ExportError(f"'{run_dir}' is not a finished run folder (needs recipe.yaml and adapter/): "
                          "train it to the end first, or pass the right folder")
    recipe = load_recipe(run_dir / "recipe.yaml")
    from ..training.theta0 import load_for_recipe

    loaded, _ = load_for_recipe(recipe)
    try:
        model = load_adapter(loaded.backbone, adapter)
    except Exception as exc:  # noqa: BLE001 - safetensors, PEFT and torch each raise their own types
        raise ExportError(f"the adapter in '{adapter}' is corrupt or does not fit {recipe.model.name} "
                          f"({str(exc).splitlines()[0][:120]})") from None
    model = get_method(recipe.method).merge(model)
    model.eval()
    return model, loaded


def export(run_dir: str | Path, fmt: str, out: str | Path, force: bool = False) -> ExportReport:
    if fmt not in FORMATS:
        raise ExportError(f"unknown format '{fmt}': use one of {', '.join(FORMATS)}")
    started = time.perf_counter()
    model, loaded = merged_model(run_dir)
    tokenizer = loaded.tokenizer
    task = get_task(loaded.task)
    if fmt not in task.export_formats:
        raise ExportError(f"--format {fmt} is not for a {task.name} run such as '{run_dir}' (-lm formats export the "
                          f"causal LM of a label-word run): use one of {', '.join(task.export_formats)}")
    if fmt.endswith("-lm"):
        model = models.causal_lm_with_label_head(model, loaded.source, loaded.prompt)
    elif not task.exports_vocabulary_logits:
        _name_the_classes(model, Path(run_dir))
    report: dict = {}

    def write(folder: Path):
        if fmt in ("hf", "hf-lm"):
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
        else:
            # A causal LM's 49k-way logits are larger numbers than a classifier's: 1e-3 (issue 8).
            tolerance = 1e-3 if fmt == "onnx-lm" or task.exports_vocabulary_logits else PARITY_TOLERANCE
            report["max_abs_logit_difference"] = _export_onnx(model, loaded, folder, tolerance)
            tokenizer.save_pretrained(folder)
        prompt = {"template": loaded.prompt.template, "label_words": list(loaded.prompt.label_words)} \
            if loaded.prompt else None  # the exported classifier reads texts through this prompt
        (folder / "export_report.json").write_text(json.dumps({"format": fmt, "source_run": str(run_dir), **report,
                                                               "prompt": prompt}, indent=2))

    target = write_folder_atomically(Path(out), write, force, marker="export_report.json", what="export")
    files = {p.name: p.stat().st_size for p in sorted(target.iterdir()) if p.is_file()}
    return ExportReport(target, fmt, time.perf_counter() - started, files, report.get("max_abs_logit_difference"))


def _name_the_classes(model, run_dir: Path) -> None:
    """id2label from the run's class names, so pipeline("text-classification") answers in
    words, not LABEL_0; a run from before names were recorded reads them from its data."""
    names = None
    metrics = run_dir / "metrics.json"
    try:
        names = json.loads(metrics.read_text()).get("label_names") if metrics.exists() else None
    except (ValueError, OSError, AttributeError):
        names = None  # a torn metrics.json: the data still names the classes
    if names is None:
        from ..errors import DataError
        from ..inputs.data import load_dataset

        recipe = load_recipe(run_dir / "recipe.yaml")
        try:
            names = list(load_dataset(recipe.data.source, recipe.data.text_column, recipe.data.label_column).label_names)
        except DataError:
            return  # the data moved: keep transformers' LABEL_i
    if len(names) == model.config.num_labels:
        model.config.id2label = dict(enumerate(names))
        model.config.label2id = {name: i for i, name in enumerate(names)}


def _export_onnx(model, loaded, folder: Path, tolerance: float = PARITY_TOLERANCE) -> float:
    """torch.onnx.export with dynamic batch/sequence axes, then onnxruntime parity on new shapes."""
    import numpy as np
    import onnxruntime

    wrapper = models.SequenceLogits(model)  # 4-D additive mask built inside: no data-dependent branches
    example = loaded.encode(["an example to trace", "and a second one"], 16)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    path = folder / "model.onnx"
    with torch.no_grad():
        torch.onnx.export(wrapper, (example["input_ids"], example["attention_mask"]), str(path),
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}), dynamo=True,
                          external_data=True, verbose=False)
    texts = ["a different batch size", "and a different sequence length than the export used, much longer",
             "third", "fourth example here"]
    check = loaded.encode(texts, 40)
    with torch.no_grad():
        expected = wrapper(**check).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {k: v.numpy() for k, v in check.items()})[0]
    difference = float(np.abs(got - expected).max())
    if not difference <= tolerance:
        raise ExportError(f"ONNX parity failed: max |logit difference| {difference:.3g} > {tolerance} "
                          "on a new batch size and sequence length; nothing was written")
    return difference
