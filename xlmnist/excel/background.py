"""Train in the background where one Python process serves every click, so Excel stays responsive.

xlwings' ``RunPython`` waits for Python, and Excel handles no ribbon click while it waits: a synchronous
Train can only be stopped by its time limit. Where the Python process outlives the click (xlwings' UDF
server on Windows: ``Use UDF Server``, set by ``xlmnist addin install --warm``; it is xlwings' COM server,
started through ``xlwings.serve()``), the ribbon's Train starts the run on a worker thread of that process
and returns at once: Excel stays usable, the status bar shows the progress, and the Cancel button's flag
file (:mod:`xlmnist.excel.runs`) stops the run at its next step.

One run per workbook: :func:`start` refuses a second one while the first lives (here, or in another
process, by its run file). The worker calls COM from its own thread: :func:`com_thread` initialises COM
there (``pythoncom.CoInitialize``), and the caller re-opens the workbook from its full name inside the
worker (xlwings objects must not cross threads). Without a persistent process (macOS, or Windows without
the UDF server) the run stays synchronous (:func:`persistent`).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from xlmnist.excel.runs import busy as busy_error
from xlmnist.excel.runs import in_progress

_LOCK = threading.Lock()
_JOBS: dict[str, Job] = {}


class Job:
    """One background run: its thread, the status texts shown so far (``shown``), the result at the end."""

    def __init__(self, file: Path, sheet: str):
        self.file, self.sheet = file, sheet
        self.shown: list[str] = []  # the status bar's texts, the last one on screen
        self.result: dict | None = None
        self.started = time.monotonic()
        self.thread: threading.Thread | None = None
        self._done = threading.Event()

    def running(self) -> bool:
        return not self._done.is_set()

    def wait(self, timeout: float | None = None) -> dict | None:
        """The run's result (the dict Train returns), or None when it is still going after ``timeout``."""
        self._done.wait(timeout)
        return self.result

    def progress(self) -> str | None:
        return self.shown[-1] if self.shown else None


def persistent() -> bool:
    """This click runs in xlwings' UDF server (Windows, ``Use UDF Server``): the process outlives it."""
    return "xlwings.com_server" in sys.modules


def _key(file: Path) -> str:
    return str(Path(file).resolve())


def job(file: Path) -> Job | None:
    """The last background run on the workbook ``file`` in this process (running or finished)."""
    with _LOCK:
        return _JOBS.get(_key(file))


def busy(file: Path) -> bool:
    found = job(file)
    return found is not None and found.running()


def start(file: Path, sheet: str, work: Callable[[Job], dict]) -> Job:
    """Run ``work(job)`` on a worker thread (COM initialised there) and return at once; RunInProgress when
    a run on ``file`` is going on."""
    file = Path(file)
    with _LOCK:
        old = _JOBS.get(_key(file))
        if (old is not None and old.running()) or in_progress(file):
            raise busy_error(file)
        new = Job(file, sheet)
        _JOBS[_key(file)] = new
        new.thread = threading.Thread(
            target=_main, args=(new, work), name=f"xlmnist train {file.name}", daemon=True
        )
        new.thread.start()
    return new


def _main(job: Job, work: Callable[[Job], dict]) -> None:
    try:
        with com_thread():
            job.result = work(job)
    except Exception as exc:  # noqa: BLE001 - nobody waits on the thread: the result carries the failure
        job.result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        job._done.set()


@contextlib.contextmanager
def com_thread():
    """COM initialised on this thread for its Excel calls (Windows; elsewhere nothing to do)."""
    try:
        import pythoncom  # deferred: pywin32, Windows only
    except ImportError:
        yield
        return
    pythoncom.CoInitialize()
    try:
        yield
    finally:
        pythoncom.CoUninitialize()
