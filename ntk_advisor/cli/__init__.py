"""ntk-advisor command line: one module per stage, each command a few lines over the library.

`catalog` (models, data), `plan`, `profile`, `recommend` (recommend, advise, check), `train`,
`export` (export, recipe convert), `validate` (validate, report). Shared helpers live in
`console`, the typer applications in `app`. This package is the only place that imports rich
and typer. A user mistake (NtkAdvisorError) prints one line and exits 1; the traceback
appears only with --verbose.
"""

from __future__ import annotations

import sys

from ..errors import NtkAdvisorError
from . import catalog, plan, profile, export, recommend, train, validate  # noqa: F401,I001 - registers the commands; --help order
from .app import app
from .console import err, state


def main() -> None:
    """click's own handling (standalone mode) would print usage errors as a box with exit 2
    and swallow Ctrl-C; here both get the one line every other error gets."""
    import typer

    try:
        code = app(standalone_mode=False, prog_name="ntk-advisor")
    except NtkAdvisorError as exc:
        if state["verbose"]:
            raise
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        sys.exit(1)
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted; finished outputs were kept, unfinished ones were not written")
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: an unknown flag, --samples abc, a missing argument
        if state["verbose"]:
            raise
        context = getattr(exc, "ctx", None)
        command = context.command_path if context is not None else "ntk-advisor"
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        err.print(f"error: {message} (see {command} --help)", markup=False, soft_wrap=True)
        sys.exit(1)
    if code == 130:  # typer turns Ctrl-C into a quiet exit 130
        err.print("interrupted; finished outputs were kept, unfinished ones were not written")
    sys.exit(code if isinstance(code, int) else 0)  # as click's own main ends: always through SystemExit


_state = state  # the name tests and older scripts patch
__all__ = ["app", "main"]
