"""Benchmark (c): one forward of an MNIST-shaped ``linear`` sheet, xlmnist vs pycel, same run.

    pip install pycel   # bench-only dependency
    python bench/bench_pycel.py [--rows 2000] [--book path/to/mnist_3v7.xlsx]

Without ``--book`` a workbook is generated with the real ``xlmnist.lessons`` sheet writers over random
images (``--rows`` x 785 data columns). Reports read+compile time and one forward for each tool, the
ratio, and checks that both give the same loss (rel 1e-9).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_forward import images  # noqa: E402

from xlmnist.compile import compile_workbook  # noqa: E402
from xlmnist.lessons import models  # noqa: E402
from xlmnist.lessons.mnist import data_sheet, init_params  # noqa: E402
from xlmnist.xlsx.book import Book  # noqa: E402


def make_book(path: Path, rows: int) -> Path:
    x, y = images(rows, 0, 2)
    book = Book()
    data_sheet(book, x, y, onehot=False)
    models.linear_sheet(book, rows, init_params(0)["linear"], 1.0)
    book.write_settings()
    book.save(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--book", type=Path)
    args = ap.parse_args()
    try:
        from pycel import ExcelCompiler
    except ImportError:
        raise SystemExit("bench_pycel needs pycel: pip install pycel") from None
    with tempfile.TemporaryDirectory() as tmp:
        path = args.book or make_book(Path(tmp) / "linear.xlsx", args.rows)
        t = time.perf_counter()
        model = compile_workbook(path, sheet="linear")
        t_compile = time.perf_counter() - t
        params = model.initial_params()
        with torch.no_grad():
            t = time.perf_counter()
            ours = float(model.objective(params))
            t_ours = time.perf_counter() - t
        print(
            f"xlmnist: read+compile {t_compile:8.2f} s   forward {t_ours * 1e3:10.2f} ms   loss {ours!r}",
            flush=True,
        )
        obj = model.objective_ref
        t = time.perf_counter()
        xl = ExcelCompiler(filename=str(path))
        t_load = time.perf_counter() - t
        t = time.perf_counter()
        theirs = float(xl.evaluate(obj))
        t_theirs = time.perf_counter() - t
        print(f"pycel:   load         {t_load:8.2f} s   forward {t_theirs * 1e3:10.2f} ms   loss {theirs!r}")
    if abs(ours - theirs) > 1e-9 * abs(theirs):
        raise SystemExit(f"values differ: xlmnist {ours!r} vs pycel {theirs!r}")
    print(
        f"forward ratio pycel / xlmnist: {t_theirs / t_ours:,.0f}x; "
        f"end to end (load + forward): {(t_load + t_theirs) / (t_compile + t_ours):,.1f}x"
    )


if __name__ == "__main__":
    main()
