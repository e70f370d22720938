"""ntk-advisor command line: one module per stage, each command a few lines over the library.

`catalog` (models, data), `profile`, `recommend` (recommend, advise, check), `train`,
`export` (export, recipe convert), `validate` (validate, report). Shared helpers live in
`console`, the typer applications in `app`. This package is the only place that imports rich
and typer. A user mistake (NtkAdvisorError) prints one line and exits 1; the traceback
appears only with --verbose.
"""

from __future__ import annotations

import sys

from ..errors import NtkAdvisorError
from . import catalog, export, profile, recommend, train, validate  # noqa: F401,I001 - registers the commands; --help order
from .app import app
from .console import err, state


def main() -> None:
    try:
        app()
    except NtkAdvisorError as exc:
        if state["verbose"]:
            raise
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted; finished outputs were kept, unfinished ones were not written")
        sys.exit(130)


_state = state  # the name tests and older scripts patch
__all__ = ["app", "main"]
