"""xlmnist: Excel Solver, but it is PyTorch.

Reads a workbook's formulas, compiles them into a vectorized PyTorch graph, trains the trainable
cells and writes the results back.
"""

from xlmnist.errors import DataError, FormulaError, TrainingError, WorkbookError, XlmnistError

__version__ = "0.1.0"

__all__ = ["XlmnistError", "DataError", "WorkbookError", "FormulaError", "TrainingError", "main"]


def main():
    """Entry point of the xlwings ribbon add-in: train the active sheet of the calling workbook."""
    from xlmnist.excel.book import main as _main  # deferred: torch and xlwings, only for the add-in

    return _main()
