"""One run at a time per workbook, and the ribbon's Cancel: two small files beside the workbook.

* ``.<book name>.xlmnist-run``: written when Train starts, touched at every status update, removed at the
  end. Train pressed while it exists (and was touched within STALE_SECONDS) says a run is in progress.
* ``.<book name>.xlmnist-cancel``: the Cancel button writes it (``x.run('cancel')``, or the ribbon's VBA
  directly, which needs no Python); the running session polls it at every step, stops, keeps the values
  so far and says so.

Files rather than a process-wide flag because each ribbon click may be a new Python process (xlwings'
RunPython without the UDF server); beside the workbook because Excel's VBA and Python agree on that path
on Windows and macOS (sandboxed Excel can write into the workbook's folder).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from xlmnist.errors import XlmnistError

STALE_SECONDS = 120.0  # a run file untouched for this long was left by a crashed run


class RunInProgress(XlmnistError):
    pass


def busy(book_file: Path) -> RunInProgress:
    """The refusal of a second run on the workbook."""
    return RunInProgress(
        f"{book_file.name}: a training run is in progress on this workbook; wait for it or press Cancel"
    )


def run_file(book_file: Path) -> Path:
    return book_file.with_name(f".{book_file.name}.xlmnist-run")


def cancel_file(book_file: Path) -> Path:
    return book_file.with_name(f".{book_file.name}.xlmnist-cancel")


def in_progress(book_file: Path) -> bool:
    try:
        return time.time() - run_file(book_file).stat().st_mtime < STALE_SECONDS
    except OSError:
        return False


def request_cancel(book_file: Path) -> bool:
    """Ask the run on ``book_file`` to stop; False when none is running."""
    if not in_progress(book_file):
        return False
    cancel_file(book_file).write_text("cancel\n")
    return True


class Run:
    """``with Run(file) as run:`` holds the workbook's run file; ``run.cancelled()`` polls the flag and
    ``run.touch()`` keeps the run file fresh."""

    def __init__(self, book_file: Path):
        self.file, self.last = book_file, 0.0

    def __enter__(self) -> Run:
        if in_progress(self.file):
            raise busy(self.file)
        with contextlib.suppress(OSError):
            cancel_file(self.file).unlink()
        try:
            run_file(self.file).write_text(f"{os.getpid()}\n")
        except OSError:
            pass  # a read-only folder: no protection against a second run, training still works
        return self

    def touch(self) -> None:
        now = time.monotonic()
        if now - self.last > 5:
            self.last = now
            with contextlib.suppress(OSError):
                os.utime(run_file(self.file))

    def cancelled(self) -> bool:
        self.touch()
        return cancel_file(self.file).exists()

    def __exit__(self, *exc) -> None:
        for path in (run_file(self.file), cancel_file(self.file)):
            with contextlib.suppress(OSError):
                path.unlink()
