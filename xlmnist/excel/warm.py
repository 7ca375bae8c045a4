"""Warm clicks: the compiled model of a saved workbook, kept in the Python process for the next click.

Where one Python process serves every click (xlwings' UDF server on Windows, ``xlmnist addin install
--warm``; the xlwings Server; a debugging session), reading and compiling the saved file is the bulk of a
click. :func:`compiled` keeps it, keyed by the saved file's identity: resolved path, size, ``mtime_ns``
and inode, the sheet, and what else the compile depends on (``XLMNIST_LOWER``). Saving the workbook
changes the key, so the next click compiles the new file; an older version of the same sheet is dropped.

What stays live on every click (:mod:`xlmnist.excel.book`): the trainable values (read from the open
workbook), and the checks that the open workbook still matches the saved file (formulas, names, data,
settings), which compare against the saved side kept here (:attr:`Saved.memo`). Models whose objective
samples RAND() & co. are not kept (a session reseeds them; a cold compile's draws must stay the same).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from xlmnist.train import session
from xlmnist.xlsx.reader import read_workbook

MAX_BOOKS = 2  # compiled sheets kept (an MNIST sheet's model and its dataset rows take ~0.1-0.5 GB)
_LOCK = threading.RLock()
_CACHE: OrderedDict[tuple, Saved] = OrderedDict()
stats = {"compiles": 0, "hits": 0}  # per process: what the tests and bench/bench_warm.py look at


def file_key(file: Path, sheet: str) -> tuple:
    """The saved file's identity for ``sheet``: a save (even of the same bytes) changes it."""
    path = Path(file).resolve()
    st = path.stat()
    return (str(path), sheet, st.st_size, st.st_mtime_ns, st.st_ino, os.environ.get("XLMNIST_LOWER"))


class Saved:
    """One saved version of a model sheet: the workbook as read, the float64 CPU model, the model moved to
    each device asked for, and the saved side of the live checks (``memo``, filled by the checks)."""

    def __init__(self, key: tuple, file: Path, sheet: str):
        self.key = key
        self.wb = read_workbook(file)
        self.model = session.compile_sheet(file, sheet=sheet)
        self.memo: dict = {}  # ref -> saved block (cells.check_live_inputs), "protected:<sheet>" -> bool
        self._devices: dict = {}

    def on_device(self, given, where: str):
        """The model on the device a Train/Step option (else the settings sheet) asks for, compiled once."""
        with _LOCK:
            if given not in self._devices:
                self._devices[given] = session.training_device(self.model, given, where)[0]
            return self._devices[given]


def compiled(file: Path, sheet: str) -> Saved:
    """The compiled ``sheet`` of the saved ``file``: from this process's cache when the file is unchanged."""
    key = file_key(file, sheet)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            stats["hits"] += 1
            return hit
        saved = Saved(key, file, sheet)
        stats["compiles"] += 1
        if saved.model.random:
            return saved
        for old in [k for k in _CACHE if k[:2] == key[:2]]:  # an older version of this sheet
            del _CACHE[old]
        _CACHE[key] = saved
        while len(_CACHE) > MAX_BOOKS:
            _CACHE.popitem(last=False)
        return saved


def clear() -> None:
    """Forget every compiled sheet (the next click compiles again)."""
    with _LOCK:
        _CACHE.clear()
