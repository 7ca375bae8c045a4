"""One exception type for everything a user can get wrong.

Every message is one line and, where a cell is involved, names it as ``sheet!A1``.
The CLI prints ``xlmnist: error: <message>`` and exits with status 2.
"""


class XlmnistError(Exception):
    """A user-facing error: bad input, bad workbook, bad data. One line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class DataError(XlmnistError):
    """Missing, truncated, corrupt or mismatching data files."""


class WorkbookError(XlmnistError):
    """A workbook that cannot be read, compiled or written."""


class FormulaError(WorkbookError):
    """A formula that cannot be parsed or compiled; the message names sheet!cell."""


class UnsupportedFunction(FormulaError):
    """A function the compiler does not translate (``xlmnist.compile.saved`` may stand in for it)."""


class TrainingError(XlmnistError):
    """Training diverged (NaN/inf) or cannot start."""
