"""One exception family. Every message says what was wrong and what to do about it.

The CLI prints ``str(error)`` on one line and exits non-zero; tracebacks appear only with
``--verbose``. Library code raises these instead of bare ValueError so callers (and the CLI)
can tell a user mistake from a bug.
"""


class NtkAdvisorError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, wrong setting)."""


class ModelError(NtkAdvisorError):
    """A model name, folder or architecture that cannot be used."""


class DataError(NtkAdvisorError):
    """A data set or data file that cannot be read or split as asked."""


class ProfileError(NtkAdvisorError):
    """A profile that cannot be computed, saved or read back."""


class RecipeError(NtkAdvisorError):
    """A recipe that does not parse, validate or match its model."""


class TrainError(NtkAdvisorError):
    """A run that cannot start or continue as asked."""


class ExportError(NtkAdvisorError):
    """A run that cannot be exported, or an export that failed its parity check."""


class OutputError(NtkAdvisorError):
    """An output path that cannot be written, or a folder that --force must not replace."""


class ValidateError(NtkAdvisorError):
    """A validation study that cannot be set up or continued as asked."""


class ReportError(NtkAdvisorError):
    """A folder that cannot be turned into a report."""
