"""Benchmark (a): xlmnist vs LibreOffice's own nonlinear solver (DEPS, over UNO) on the course sheet.

Both start from the same parameters (zeros, by default) on a copy of ``../shared/course/titanic.xlsx``
sheet ``linear`` and must reach Excel Solver's saved loss (0.14422714930851466, times 1 + 1e-9).
Prints each side's time and objective and the ratio LibreOffice / xlmnist, measured in this run.

    python bench/bench_solver.py [--timeout 300]

Needs LibreOffice's NLPSolver extension (see bench/README.md) and the system python3 with python3-uno.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT.parent / "shared" / "course" / "titanic.xlsx"
SOLVER_LOSS = 0.14422714930851466
TARGET = SOLVER_LOSS * (1 + 1e-9)


def xlmnist_side(book: Path) -> dict:
    from xlmnist.compile import compile_workbook
    from xlmnist.train.optim import train

    t0 = time.perf_counter()
    model = compile_workbook(book, sheet="linear")
    t_compile = time.perf_counter() - t0
    t1 = time.perf_counter()
    result = train(model, optimizer="lbfgs", progress=False)
    t_train = time.perf_counter() - t1
    # the whole command, as a user runs it (process start, imports, compile, train, write-back)
    copy = book.with_name("cli.xlsx")
    shutil.copyfile(book, copy)
    t2 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "xlmnist", "train", str(copy), "--sheet", "linear", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    t_cli = time.perf_counter() - t2
    cli = json.loads(out.stdout)
    return {
        "objective": result.objective,
        "steps": result.steps,
        "compile_s": t_compile,
        "train_s": t_train,
        "cli_s": t_cli,
        "cli_objective": cli["objective"],
        "reached": result.objective <= TARGET,
    }


def libreoffice_side(book: Path, timeout: int) -> dict:
    out = subprocess.run(
        [
            "/usr/bin/python3",
            str(ROOT / "bench" / "lo_solver.py"),
            str(book),
            "linear",
            "AA7",
            "R4:AA4",
            str(timeout),
            repr(TARGET),
        ],
        capture_output=True,
        text=True,
        timeout=timeout + 300,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"LibreOffice solver failed:\n{out.stderr[-2000:]}")
    res = json.loads(lines[-1])
    res["reached"] = res["objective"] <= TARGET
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=int, default=300)
    args = ap.parse_args()
    from xlmnist.xlsx.writeback import write_values

    with tempfile.TemporaryDirectory() as tmp:
        book = Path(tmp) / "titanic.xlsx"
        shutil.copyfile(COURSE, book)
        book.chmod(0o644)
        write_values(book, {"linear!R4:AA4": np.zeros((1, 10))})
        lo_book = Path(tmp) / "lo.xlsx"
        shutil.copyfile(book, lo_book)
        xl = xlmnist_side(book)
        lo = libreoffice_side(lo_book, args.timeout)
    print(f"torch {torch.__version__}, start: zeros, target: Solver's loss {SOLVER_LOSS!r} (+1e-9 rel)")
    print(
        f"xlmnist  L-BFGS : objective {xl['objective']!r} reached={xl['reached']} in {xl['train_s']:.3f} s "
        f"({xl['steps']} steps; compile {xl['compile_s']:.2f} s; whole CLI command {xl['cli_s']:.2f} s)"
    )
    print(f"LibreOffice DEPS: objective {lo['objective']!r} reached={lo['reached']} in {lo['seconds']:.1f} s")
    print(f"ratio LibreOffice / xlmnist training loop: {lo['seconds'] / xl['train_s']:.0f}x")
    print(f"ratio LibreOffice / whole xlmnist command : {lo['seconds'] / xl['cli_s']:.1f}x")


if __name__ == "__main__":
    main()
