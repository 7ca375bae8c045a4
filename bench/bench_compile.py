"""Read + compile time of a workbook, per 1,000 formula cells, and the write-back of its trained cells.

For each ``BOOK:SHEET`` (default: the course ``titanic.xlsx:linear``) in one process, the fastest of
``--repeat`` runs of CPU time (``time.process_time``; the machine is shared, so wall time is noisy):

* read: :func:`xlmnist.xlsx.reader.read_workbook`; baseline: ``openpyxl.load_workbook(read_only=True)``
  iterating every cell (what a hand-written script would use to read the same sheet);
* read + compile: :func:`xlmnist.compile.compile_workbook` (float64, the lowered program validated);
* write-back: :func:`xlmnist.xlsx.writeback.write_values` of the sheet's trainable cells (their own
  values) into a copy; baseline: the same write with every zip member inflated and deflated again (what
  the write-back did before it copied unchanged members' compressed bytes).

Usage: ``python bench/bench_compile.py [BOOK:SHEET ...] [--repeat 3]``; build the lesson workbooks with
``xlmnist build`` (``mnist.xlsx:mlp`` needs full MNIST). Targets (issue #17): titanic read + compile
< 0.15 s, mnist.xlsx < 0.5 s, mnist.xlsx write-back < 0.3 s.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
COURSE = ROOT.parent / "shared" / "course" / "titanic.xlsx"


def fastest(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def recompress_all(src: Path, dest: Path) -> None:
    """The baseline write: every member inflated and deflated again (the former write-back)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", allowZip64=True) as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("books", nargs="*", default=[f"{COURSE}:linear"])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import torch  # noqa: F401  (imported before the timings: start-up is not compile time)

    tmp = Path(tempfile.mkdtemp(prefix="bench_compile."))
    print(
        f"{'workbook:sheet':<24} {'formula cells':>13} {'read s':>7} {'openpyxl s':>10} {'ratio':>6} "
        f"{'read+compile s':>14} {'s/1k formulas':>13} {'write s':>8} {'recompress s':>12} {'ratio':>6}"
    )
    try:
        for spec in args.books:
            path, sheet = spec.rsplit(":", 1)
            print(bench_one(Path(path), sheet, tmp, args.repeat), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def bench_one(path: Path, sheet: str, tmp: Path, repeat: int) -> str:
    import openpyxl

    from xlmnist.compile import compile_workbook
    from xlmnist.xlsx.reader import read_workbook
    from xlmnist.xlsx.writeback import write_values

    wb = read_workbook(path)
    n_formulas = sum(len(s.formulas) + len(s.shared) for s in wb.sheets.values())

    def openpyxl_read():
        book = openpyxl.load_workbook(path, read_only=True)
        for ws in book.worksheets:
            for _ in ws.iter_rows(values_only=True):
                pass
        book.close()

    t_read = fastest(lambda: read_workbook(path), repeat)
    t_opx = fastest(openpyxl_read, max(1, repeat // 2))
    t_comp = fastest(lambda: compile_workbook(path, sheet=sheet), repeat)
    model = compile_workbook(path, sheet=sheet)
    values = {ref: p.detach().numpy() for ref, p in zip(model.param_refs, model.initial_params())}
    copy = tmp / path.name
    shutil.copyfile(path, copy)
    t_write = fastest(lambda: write_values(copy, values), repeat)
    t_base = fastest(lambda: recompress_all(path, tmp / "baseline.xlsx"), repeat)
    return (
        f"{path.name + ':' + sheet:<24} {n_formulas:>13,} {t_read:>7.3f} {t_opx:>10.3f} "
        f"{t_read / t_opx:>6.2f} {t_comp:>14.3f} {1000 * t_comp / max(1, n_formulas):>13.4f} "
        f"{t_write:>8.3f} {t_base:>12.3f} {t_write / t_base:>6.2f}"
    )


if __name__ == "__main__":
    sys.exit(main())
