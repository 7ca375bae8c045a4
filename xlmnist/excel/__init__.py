"""The spreadsheet side: xlwings entry points (Train, Step, Export, Reset on an open ``Book``), the
.xlam ribbon add-in builder and the xlwings Server route.

``import xlmnist.excel as x; x.run("train")`` is what the ribbon's VBA calls; ``x.train(book)`` & co.
take an ``xlwings.Book``.
"""

from xlmnist.excel.book import ACTIONS, cancel, export, main, reset, run, step, train

__all__ = ["ACTIONS", "cancel", "export", "main", "reset", "run", "step", "train"]
