"""Warm clicks of the Excel add-in: Step and Train on mnist_3v7.xlsx in ONE Python process, as xlwings'
UDF server (``xlmnist addin install --warm``) or the xlwings Server runs them.

The workbook is the default ``xlmnist build`` (1,000 visible rows), opened as xlwings' real remote-engine
book (``xw.Book(json=...)``, every sheet's saved values as the payload, as Excel would send them). Timed:
importing the add-in; the first Step (reads and compiles the saved file); the next Steps (the compile is
kept, the live checks and the trainable cells are read again); Train's start (the click until the first
minibatch update is done: the run is cancelled there, so the whole click is start + writing back) for
the first and a second Train; and a Step after the file was saved again (recompiled).

Usage: ``XLMNIST_DATA=/work/shared/data/mnist python bench/bench_warm.py [--book mnist_3v7.xlsx]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")


def payload(path: Path, active: str) -> dict:
    """The remote engine's book payload: each sheet's saved values as a 2-D list anchored at A1."""
    import xlwings as xw

    from xlmnist.xlsx.reader import read_workbook

    wb = read_workbook(path)
    sheets = []
    for name in wb.order:
        cells = dict(wb.sheets[name].values.items())
        nr = max((r for r, _ in cells), default=1)
        nc = max((c for _, c in cells), default=1)
        grid = [[None] * nc for _ in range(nr)]
        for (r, c), v in cells.items():
            grid[r - 1][c - 1] = v
        sheets.append({"name": name, "values": grid, "pictures": [], "tables": []})
    return {
        "client": "Microsoft Office Scripts", "version": xw.__version__,
        "book": {"name": str(path), "active_sheet_index": wb.order.index(active), "selection": "A1"},
        "names": [], "sheets": sheets,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--book", type=Path, help="a built mnist_3v7.xlsx (default: build one)")
    ap.add_argument("--sheet", default="linear")
    ap.add_argument("--steps", type=int, default=3, help="warm Steps to time")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_warm."))
    try:
        if args.book is None:
            from xlmnist.lessons import build_all

            (book,) = build_all(tmp, only=["mnist_3v7.xlsx"])
        else:
            book = tmp / args.book.name
            shutil.copyfile(args.book, book)
        run(book, args.sheet, args.steps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def polled(first: list):
    """A cancel() that stops the run at its first poll (after the first minibatch update), noting when."""

    def stop() -> bool:
        first.append(time.perf_counter())
        return True

    return stop


def run(book: Path, sheet: str, steps: int) -> None:
    t = time.perf_counter()
    import xlwings as xw

    import xlmnist.excel as x
    from xlmnist.excel import warm
    from xlmnist.xlsx.writeback import write_values

    print(f"import xlwings + xlmnist.excel: {time.perf_counter() - t:.2f} s")
    data = payload(book, sheet)

    def click(label, fn):
        t0 = time.perf_counter()
        res = fn(xw.Book(json=data))
        assert res["ok"], res
        print(f"{label}: {time.perf_counter() - t0:.2f} s (compiles so far {warm.stats['compiles']})")
        return res

    click("Step 1 (cold: read + compile)", lambda b: x.step(b, seed=1))
    for k in range(2, steps + 2):
        click(f"Step {k} (warm)", lambda b: x.step(b, seed=1))

    for k in (1, 2):
        first: list[float] = []
        stop = polled(first)
        t0 = time.perf_counter()
        res = x.train(xw.Book(json=data), cancel=stop)
        assert res["ok"] and res["interrupted"], res
        print(
            f"Train {k} start (click -> first update done): {first[0] - t0:.2f} s; "
            f"whole click (cancelled there, results written): {time.perf_counter() - t0:.2f} s"
        )

    model = warm.compiled(book, sheet).model
    write_values(book, {model.param_refs[0]: model.initial_params()[0].numpy()})  # the file saved again
    click("Step after the file was saved again (recompiled)", lambda b: x.step(b, seed=1))
    click("Step after that (warm)", lambda b: x.step(b, seed=1))


if __name__ == "__main__":
    main()
