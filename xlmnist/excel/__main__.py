"""``python -m xlmnist.excel BOOK.xlsx [action]``: run an add-in entry point outside Excel (debugging)."""

from xlmnist.excel.book import _debug_main

_debug_main()
