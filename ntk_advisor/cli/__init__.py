"""ntk-advisor command line: one command per stage, each a few lines over the library.

This package is the only place that imports rich and typer: `catalog` (models, data),
`stages` (profile, recommend, advise, check), `run` (train, export, recipe convert),
`evidence` (validate, report).

rich and typer live here only. A user mistake (NtkAdvisorError) prints one line and exits 1;
the traceback appears only with --verbose.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import __version__
from ..errors import NtkAdvisorError

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
    from .._io import json_safe

    sys.stdout.write(json.dumps(json_safe(document), indent=2) + "\n")


JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout instead of a table.")]
TextColumn_ = Annotated[str, typer.Option("--text-column", help="Column holding the text, for user files.")]
LabelColumn = Annotated[str, typer.Option("--label-column", help="Column holding the label, for user files.")]


# ----------------------------------------------------------------------------- shared helpers
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


# The commands register themselves on `app` when imported.
from . import stages, run, evidence, catalog  # noqa: E402,F401,I001 - this order is the --help order
