"""The typer applications: the root command, its option callback, and the command groups.

The stage modules register their commands on these objects when imported (cli/__init__.py
imports them in --help order)."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import __version__
from .console import out, state

app = typer.Typer(
    help="Profile a pretrained transformer's NTK per module, row and column, and advise where to "
    "put a fine-tuning budget.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="Model aliases and the trainable Linear modules of a model.", no_args_is_help=True)
data_app = typer.Typer(help="Builtin data sets and user data files.", no_args_is_help=True)
recipe_app = typer.Typer(help="Recipe utilities.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.add_typer(recipe_app, name="recipe")


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
    state["verbose"] = verbose
