"""What every command shares: the two consoles, JSON output, progress, number formatting and
the options several commands take. Only cli/ imports rich and typer."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# Piped output (logs, CI) gets a wide page instead of rich's 80-column default, so module
# names are never cut; a terminal or $COLUMNS still decides when present.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
out = Console(width=_WIDTH)
err = Console(stderr=True, width=_WIDTH)
state = {"verbose": False}


def print_json(document) -> None:
    from .._io import json_safe

    sys.stdout.write(json.dumps(json_safe(document), indent=2) + "\n")


JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout instead of a table.")]
TextColumnOption = Annotated[str, typer.Option("--text-column", help="Column holding the text, for user files.")]
LabelColumnOption = Annotated[str, typer.Option("--label-column", help="Column holding the label, for user files.")]
ModelOption = Annotated[str, typer.Option(help="Model alias, local HF folder or hub id.")]
DataOption = Annotated[str, typer.Option(help="Builtin data set or a data file / folder.")]
SamplesOption = Annotated[int, typer.Option("--samples", "-n", help="N, examples in the probe sample.")]
MaxLengthOption = Annotated[int, typer.Option(help="T, tokens per example after truncation.")]
TaskOption = Annotated[str, typer.Option(help=(
    "classifier: a new head on pooled features; label-words: prompt a decoder LM and read the label words' "
    "next-token logits; sft: supervised fine-tuning of a causal LM on prompt/completion, messages or text data "
    "(kernels of each example's completion log-likelihood, docs/sft.md); auto: label-words for decoder-only "
    "models."))]
TemplateOption = Annotated[Optional[str], typer.Option(help=(
    "label-words: the prompt, with {text} where the text goes (default 'Text: {text}\\nLabel:'); \\n is a newline."))]
LabelWordOption = Annotated[Optional[list[str]], typer.Option("--label-word", help=(
    "label-words: one single-token word per class, in label order (repeatable; default ' ' + label name)."))]
DeviceOption = Annotated[str, typer.Option(help=(
    "Where the model runs: auto (the first CUDA GPU, else Apple MPS, else the CPU), cpu, cuda, cuda:N or mps."))]
MethodOption = Annotated[str, typer.Option(help=(
    "rocoft (rows/columns), lora (modules and ranks), or auto: the method whose default advice won on more suite "
    "tasks at the nearest measured budget (the recipe says which and why)."))]
AllocationOption = Annotated[str, typer.Option(help=(
    "How the budget is spread over modules: default (the method's own: see docs/suite.md), greedy (one "
    "best-aligned row in every module, then the objective; for LoRA ranks by the label gradient's spectrum), "
    "uniform (the same number of rows in every module, each module's best rows: the safe allocation), signal "
    "(rows by label-gradient score with diminishing returns per module; for LoRA rank 1 on every module, then "
    "ranks by the spectrum) or free (the objective alone)."))]


def prompt_options(template, label_word) -> dict:
    return {"template": template.replace("\\n", "\n") if template else None, "label_words": tuple(label_word or ())}


def progress_bar(*extra_columns, disable: bool = False) -> Progress:
    """A live bar on a terminal; in logs and CI (no terminal) the callbacks print plain lines instead."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    *extra_columns, console=err, transient=True, disable=disable or not err.is_terminal)


def log_line(stage: str, done: int, total: int) -> bool:
    """Whether a plain progress line is due: stage start, every 10 %, and the end."""
    return done in (0, 1, total) or done % max(1, total // 10) == 0


def progress_callback(bar: Progress):
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int):
        if bar.disable:
            if log_line(stage, done, total):
                err.print(f"{stage}: {done}/{total}", markup=False)
            return
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return update


def fmt(value: float) -> str:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return f"{value:.3g}"
