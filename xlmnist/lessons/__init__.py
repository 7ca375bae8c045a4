"""``xlmnist build``: the lesson workbooks ``titanic.xlsx``, ``mnist_3v7.xlsx`` and ``mnist.xlsx``.

Every number a model uses is a visible cell and every model output is a formula the spreadsheet computes
itself. Same seed -> byte-identical files. Each file is written to a temporary file in the output folder
and moved into place, so an error never leaves a half-written workbook.
"""

from __future__ import annotations

import time
from pathlib import Path

from xlmnist.errors import XlmnistError

DEFAULT_ROWS = 1000
WORKBOOKS = ("titanic.xlsx", "mnist_3v7.xlsx", "mnist.xlsx")


def build_all(out_dir, rows: int | None = None, seed: int = 0, only=None, log=None) -> list[Path]:
    """Write the workbooks into ``out_dir``; ``rows`` = visible data rows (MNIST default 1000; Titanic
    uses its 712 rows or the first ``rows``). ``only``: a subset of WORKBOOKS. Returns the paths written."""
    # deferred: the builders load numpy/openpyxl; `xlmnist build --help` should not
    from xlmnist.lessons import mnist, titanic
    from xlmnist.xlsx.book import check_out_dir

    if rows is not None and (isinstance(rows, bool) or int(rows) != rows or rows < 1):
        raise XlmnistError(f"--rows must be a positive number of rows, not {rows}")
    if not isinstance(seed, int) or seed < 0:
        raise XlmnistError(f"--seed must be a non-negative integer, not {seed}")
    names = list(only or WORKBOOKS)
    unknown = [n for n in names if n not in WORKBOOKS]
    if unknown:
        raise XlmnistError(f"unknown workbook {unknown[0]} (choose from {', '.join(WORKBOOKS)})")
    out = check_out_dir(Path(out_dir))
    builders = {
        "titanic.xlsx": lambda p: titanic.build(p, rows=rows, seed=seed),
        "mnist_3v7.xlsx": lambda p: mnist.build_3v7(p, rows=rows or DEFAULT_ROWS, seed=seed),
        "mnist.xlsx": lambda p: mnist.build_mnist(p, rows=rows or DEFAULT_ROWS, seed=seed),
    }
    written = []
    for name in names:
        t0 = time.perf_counter()
        path = builders[name](out / name)
        written.append(path)
        if log:
            size = path.stat().st_size / 1e6
            log(f"wrote {path} ({size:.1f} MB, {time.perf_counter() - t0:.1f} s)")
    return written


def _cmd_build(args) -> int:
    build_all(args.out, rows=args.rows, seed=args.seed, only=args.only, log=print)
    return 0


def register(sub) -> None:
    p = sub.add_parser("build", help="write the lesson workbooks (titanic, mnist_3v7, mnist)")
    p.add_argument("--out", default="workbooks", help="output folder (default: workbooks/)")
    p.add_argument(
        "--rows",
        type=int,
        default=None,
        help=f"visible data rows of the MNIST workbooks (default {DEFAULT_ROWS}); Titanic uses "
        "its 712 rows or the first N",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and the initial parameters")
    p.add_argument(
        "--only",
        nargs="+",
        choices=WORKBOOKS,
        default=None,
        metavar="BOOK",
        help=f"build only these ({', '.join(WORKBOOKS)})",
    )
    p.set_defaults(func=_cmd_build)
