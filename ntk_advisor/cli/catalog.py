"""`models` and `data` commands: what can be profiled, and on what."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from .app import data_app, models_app
from .console import JsonOption, LabelColumnOption, TextColumnOption, out, print_json


# ----------------------------------------------------------------------------- models
@models_app.command("list")
def models_list(as_json: JsonOption = False):
    """List the model aliases that work offline."""
    from ..inputs.models import MODEL_ALIASES

    if as_json:
        return print_json(MODEL_ALIASES)
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
    from ..inputs.models import describe_model

    info = describe_model(name)
    if as_json:
        return print_json(info)
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


@data_app.command("list")
def data_list(as_json: JsonOption = False):
    """List the builtin data sets (fetched once, verified by sha256, cached)."""
    from ..inputs.completions import COMPLETION_BUILTINS
    from ..inputs.data import BUILTIN_DATASETS

    generative = {name: f"{text} (--task sft)" for name, (text, _, _) in COMPLETION_BUILTINS.items()}
    if as_json:
        return print_json(BUILTIN_DATASETS | generative)
    table = Table("name", "data set")
    for name, text in (BUILTIN_DATASETS | generative).items():
        table.add_row(name, text)
    out.print(table)
    out.print("User files work too: CSV, TSV, JSONL, Parquet, or a folder saved by Hugging Face datasets; for --task "
              "sft, with prompt/completion, messages or text columns.")


@data_app.command("show")
def data_show(
    source: Annotated[str, typer.Argument(help="A builtin name (vader-movie) or a data file / folder.")],
    text_column: TextColumnOption = "text",
    label_column: LabelColumnOption = "label",
    seed: Annotated[int, typer.Option(help="Seed of the train/validation/test split.")] = 0,
    examples: Annotated[int, typer.Option(help="How many examples to print.")] = 3,
    as_json: JsonOption = False,
):
    """Show a data set: size, counts per label, split sizes, and a few examples."""
    from ..inputs.data import load_dataset, split_dataset

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
        return print_json(info)
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
