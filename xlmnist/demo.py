"""``xlmnist demo``: build the lesson workbooks, train every model sheet with its own settings, write the
results back, and print a table (workbook, model, parameters, rows trained on, objective, accuracy, seconds).

* titanic.xlsx: the 712 rows (L-BFGS, like Solver).
* mnist_3v7.xlsx: the whole 3-vs-7 dataset (12,396 train / 2,038 valid rows); it ships with xlmnist, so this
  works offline.
* mnist.xlsx: only when full MNIST is on this machine (``XLMNIST_DATA`` or the cache); the demo never
  downloads: it says so and skips the workbook.

The accuracy column is the validation accuracy for sheets trained on a dataset with a valid split, else the
sheet's own accuracy cell over its visible rows ("-" when the sheet has none). ``--quick`` caps minibatch
training at one epoch (for tests and a first look).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from xlmnist.data import mnist_available
from xlmnist.errors import XlmnistError
from xlmnist.xlsx.package import read_names

MODEL_NAMES = ("xlmnist_objective", "solver_opt")


def model_sheets(path) -> list[str]:
    """The sheets of ``path`` that carry an objective (``xlmnist_objective`` or Solver's ``solver_opt``)."""
    order, names = read_names(path)
    found = {scope for scope, name in names if scope is not None and name.lower() in MODEL_NAMES}
    return [s for s in order if s in found]


def run_demo(out="workbooks", *, quick=False, rows=None, seed=0, log=print) -> tuple[list[dict], list[str]]:
    """Build, train, write back; returns (table rows, error lines)."""
    # deferred: torch (through lessons and train) only when the demo runs, not for `xlmnist --help`
    from xlmnist.lessons import build_all
    from xlmnist.train.session import train_book

    books = ["titanic.xlsx", "mnist_3v7.xlsx"]
    if mnist_available():
        books.append("mnist.xlsx")
    else:
        log(
            "full MNIST is not available on this machine (set XLMNIST_DATA to a folder with the four IDX "
            "files): skipping mnist.xlsx; the 3-vs-7 workbook trains on the shipped 3-vs-7 data"
        )
    table, errors = [], []
    for path in build_all(out, rows=rows, seed=seed, only=books, log=log):
        for sheet in model_sheets(path):
            t0 = time.perf_counter()
            try:
                res = train_book(path, sheet=sheet, max_epochs=1 if quick else None)
            except XlmnistError as exc:
                errors.append(f"{path.name} {sheet}: {exc}")
                log(f"xlmnist: error: {path.name} {sheet}: {exc}")
                continue
            m = res["metrics"]
            acc = m.get("valid_accuracy", m.get("accuracy"))
            table.append(
                {
                    "workbook": path.name,
                    "model": sheet,
                    "parameters": res["n_params"],
                    "rows": res["rows"],
                    "dataset": res["dataset"],
                    "objective": res["objective"],
                    "accuracy": acc,
                    "accuracy_of": "valid" if "valid_accuracy" in m else "visible" if acc is not None else "",
                    "seconds": time.perf_counter() - t0,
                }
            )
    return table, errors


def format_table(table: list[dict]) -> str:
    head = ("workbook", "model", "parameters", "rows trained on", "objective", "accuracy", "seconds")
    lines = []
    for r in table:
        rows = "-" if r["rows"] is None else f"{r['rows']:,}" + (f" ({r['dataset']})" if r["dataset"] else "")
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.2%} ({r['accuracy_of']})"
        lines.append(
            (r["workbook"], r["model"], f"{r['parameters']:,}", rows, f"{r['objective']:.6g}", acc,
             f"{r['seconds']:.1f}")
        )  # fmt: skip
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*x) for x in lines]
    )


def _cmd_demo(args) -> int:
    t0 = time.perf_counter()
    table, errors = run_demo(args.out, quick=args.quick, rows=args.rows, seed=args.seed)
    print(format_table(table))
    print(f"total {time.perf_counter() - t0:.1f} s; the trained workbooks are in {Path(args.out)}")
    for line in errors:
        print(f"xlmnist: error: {line}", file=sys.stderr)
    return 1 if errors else 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="build the workbooks, train every model sheet, print a results table")
    p.add_argument("--out", default="workbooks", help="output folder (default: workbooks/)")
    p.add_argument("--quick", action="store_true", help="at most one epoch of minibatch training per sheet")
    p.add_argument("--rows", type=int, default=None, help="visible data rows of the MNIST workbooks")
    p.add_argument("--seed", type=int, default=0, help="seed of the workbooks' sample and initial values")
    p.set_defaults(func=_cmd_demo)
