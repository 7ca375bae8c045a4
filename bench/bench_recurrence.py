"""An unrolled optimiser sheet of ``--steps`` rows: read + compile, one evaluation and one hypergradient,
beside the same loop written by hand in torch.

The sheets are the course's (``tests/compile/recurrence_book.py``): ``adam`` (Adam on a 1-D function: w,
g, m, v, m-hat, v-hat per row) and ``gd`` (gradient descent on a linear regression: a, b and their
gradients per row, plus a running sum nothing reads); each row computes the next parameters from the row
above, the learning-rate cell B1 is the trainable cell, the loss after the last row the objective. Each
sheet is its own workbook. Measured in one process, each figure the fastest of ``--repeat`` runs (wall
time, ``time.perf_counter``):

* read + compile: :func:`xlmnist.compile.compile_workbook` (reading the file, the formula graph, the
  compile, the lowered program and its validation against the block closures), wall and CPU seconds;
* evaluation: ``model.objective([lr])`` without gradient; hand-written: the same loop of torch ops
  (:func:`recurrence_book.torch_loop`);
* gradient: the objective and ``backward()`` to the learning rate (the hypergradient through every row);
  hand-written: the same. Evaluations and gradients of both sides interleaved, ``--repeat`` rounds.

The values must agree (objective rel 1e-12, gradient rel 1e-9) or the script fails.
``XLMNIST_SCAN=0`` compiles the recurrence step by step (one block per row, the closures), as before the
loop over rows.

Usage: ``python bench/bench_recurrence.py [--steps 1000] [--repeat 5] [--sheets adam gd] [--threads 1]``
(one torch thread by default: the loop's ops are on single numbers).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "compile"))

import recurrence_book  # noqa: E402


def fastest(fn, repeat: int):
    """(fastest wall seconds, its CPU seconds, the last result) of ``repeat`` calls."""
    best, cpu, out = float("inf"), 0.0, None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - t
        if wall < best:
            best, cpu = wall, time.process_time() - c
    return best, cpu, out


def measure(book: Path, sheet: str, steps: int, repeat: int) -> dict:
    import torch

    from xlmnist.compile import compile_workbook

    comp_s, comp_cpu, model = fastest(lambda: compile_workbook(book, sheet=sheet), repeat)
    lr0 = model.initial_params()[0]

    def ours(grad: bool):
        lr = lr0.clone().requires_grad_(grad)
        if not grad:
            with torch.no_grad():
                return model.objective([lr]), None
        loss = model.objective([lr])
        loss.backward()
        return loss, lr.grad

    def hand(grad: bool):
        lr = lr0.reshape(()).clone().requires_grad_(grad)
        if not grad:
            with torch.no_grad():
                return recurrence_book.torch_loop(sheet, lr, steps)[0], None
        loss = recurrence_book.torch_loop(sheet, lr, steps)[0]
        loss.backward()
        return loss, lr.grad

    ev, hv, gr, hg = (float("inf"),) * 4
    for _ in range(repeat):  # interleaved: the machine's load hits both sides alike
        ev = min(ev, fastest(lambda: ours(False), 1)[0])
        hv = min(hv, fastest(lambda: hand(False), 1)[0])
        gr = min(gr, fastest(lambda: ours(True), 1)[0])
        hg = min(hg, fastest(lambda: hand(True), 1)[0])
    v, _ = ours(False)
    want, _ = hand(False)
    _, g = ours(True)
    _, hgrad = hand(True)
    ok = bool(
        torch.isclose(v.double(), want.double(), rtol=1e-12, atol=0)
        and torch.isclose(g.reshape(()).double(), hgrad.double(), rtol=1e-9, atol=0)
    )
    cells = sum(b.R * b.C for b in model.compiler.graph.blocks)
    return {
        "cells": cells,
        "compile": comp_s,
        "compile_cpu": comp_cpu,
        "program": model.program_kind,
        "eval": ev,
        "hand_eval": hv,
        "grad": gr,
        "hand_grad": hg,
        "ok": ok,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--sheets", nargs="*", default=["adam", "gd"], choices=recurrence_book.SHEETS)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    a = ap.parse_args()

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    scan = os.environ.get("XLMNIST_SCAN", "1")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"torch {torch.__version__}, {a.steps} rows, fastest of {a.repeat}; load average {load}; XLMNIST_SCAN={scan}"
    )
    print(
        f"{'sheet':<6} {'formula cells':>13} {'compile s':>9} {'(CPU s)':>7} {'program':>9} "
        f"{'eval ms':>8} {'torch ms':>8} {'ratio':>6} {'grad ms':>8} {'torch ms':>8} {'ratio':>6}"
    )
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for sheet in a.sheets:
            book = recurrence_book.build(Path(tmp) / f"{sheet}.xlsx", [sheet], a.steps)
            r = measure(book, sheet, a.steps, a.repeat)
            bad += not r["ok"]
            print(
                f"{sheet:<6} {r['cells']:>13,} {r['compile']:>9.3f} {r['compile_cpu']:>7.3f} {r['program']:>9} "
                f"{r['eval'] * 1e3:>8.1f} {r['hand_eval'] * 1e3:>8.1f} {r['eval'] / r['hand_eval']:>6.2f} "
                f"{r['grad'] * 1e3:>8.1f} {r['hand_grad'] * 1e3:>8.1f} {r['grad'] / r['hand_grad']:>6.2f}"
                f"{'' if r['ok'] else '  VALUES DIFFER'}"
            )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
