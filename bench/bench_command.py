"""The whole ``xlmnist train`` command against a hand-written PyTorch script, each its own process.

For each case (course-style ``titanic.xlsx:nnet``, ``mnist_3v7.xlsx:linear``, ``mnist.xlsx:mlp``; built by
``xlmnist build`` into a temporary folder, or taken from ``--books``), in one run, alternating:

* xlmnist: ``python -m xlmnist train BOOK --sheet S --out OUT --json --quiet`` (the real CLI; with
  ``--data sheet`` also ``--dataset none``: the workbook's own rows, full batch, float64);
* hand-written: ``bench/hand_train.py`` (read the data rows and weights from the same file, the same model
  in torch, the same optimiser/lr/steps/batch size/seed, write the weights into a copy), once per ``--io``:
  ``openpyxl`` (what a student would use) and ``xlmnist`` (the same script on xlmnist's reader and writer);
  and per ``--optim``: ``torch`` (``torch.optim`` as is, which imports ``torch._dynamo``) and ``nodynamo``
  (the same optimiser calls through ``xlmnist.train.torchopt``, as xlmnist makes them: the ratio of the
  workbook's own costs).

Each process is timed from start to exit (wall seconds) and its peak RSS comes from ``os.wait4`` (that
process's own ``ru_maxrss``). The fastest of ``--repeat`` runs counts. With ``--data sheet`` both sides must
reach the same loss (relative 1e-6; with L-BFGS xlmnist keeps the best point its line searches evaluated, so
there its loss may also be lower), else the run fails: the baseline does the same work.

Usage: ``python bench/bench_command.py [--only nnet linear mlp] [--data sheet dataset] [--repeat 3]``;
``--tiny`` (a 20-row build, 2 steps, no full MNIST needed) is what ``tests/bench`` runs. Target (issue #17
items 4-5): wall ratio and peak RSS ratio <= 1.10 against the hand-written script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HAND = ROOT / "bench" / "hand_train.py"
CASES = {"nnet": "titanic.xlsx", "linear": "mnist_3v7.xlsx", "mlp": "mnist.xlsx"}  # sheet -> workbook


def run(cmd: list[str], env: dict) -> tuple[float, float, dict]:
    """(wall s, peak RSS MB, the last stdout line as JSON) of one process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        text = out.read().decode()
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024, json.loads(text.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--data", nargs="+", choices=["sheet", "dataset"], default=["sheet"])
    ap.add_argument("--io", nargs="+", choices=["xlmnist", "openpyxl"], default=["xlmnist", "openpyxl"])
    ap.add_argument("--optim", nargs="+", choices=["torch", "nodynamo"], default=["torch", "nodynamo"],
                    help="the hand-written script's optimiser calls: torch.optim as is, or through xlmnist.train.torchopt "
                    "as xlmnist does (no torch._dynamo import): the ratio of the compiler and I/O alone")  # fmt: skip
    ap.add_argument("--books", type=Path, help="a folder with the built workbooks (default: build them)")
    ap.add_argument("--rows", type=int, help="visible MNIST rows of the build (default: the build default)")
    ap.add_argument("--epochs", type=int, help="override the settings' steps/epochs (quick runs)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="20 rows, 2 steps, titanic and 3v7 only (the test)")
    args = ap.parse_args()
    if args.tiny:
        args.rows, args.epochs, args.only = 20, 2, [c for c in args.only if c != "mlp"]
    sys.path.insert(0, str(ROOT))
    from xlmnist.data import mnist_available

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cases = list(args.only)
    if "mlp" in cases and not args.books and not mnist_available():
        print("mlp: skipped, full MNIST is not here (set XLMNIST_DATA): mnist.xlsx cannot be built")
        cases.remove("mlp")
    if "dataset" in args.data and not mnist_available():
        print("--data dataset: 3v7 uses the shipped sample; the mlp row needs full MNIST")
    tmp = Path(tempfile.mkdtemp(prefix="bench_command."))
    try:
        books = args.books
        if books is None:
            books = tmp / "books"
            build = [sys.executable, "-m", "xlmnist", "build", "--out", str(books), "--only"]
            build += sorted({CASES[c] for c in cases}) + (["--rows", str(args.rows)] if args.rows else [])
            subprocess.run(build, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        extra = ["--epochs", str(args.epochs)] if args.epochs is not None else []
        print(
            f"{'sheet':<7} {'data':<8} {'who':<26} {'wall s':>7} {'peak MB':>8} {'loss':>12}  (fastest of {args.repeat})"
        )
        for sheet in cases:
            book = str(books / CASES[sheet])
            for data in args.data:
                if data == "dataset" and sheet == "nnet":
                    continue  # titanic's settings name no dataset: the same run as --data sheet
                cmds = {"xlmnist train": [sys.executable, "-m", "xlmnist", "train", book, "--sheet", sheet,
                                          "--out", str(tmp / "x.xlsx"), "--json", "--quiet"]
                        + (["--dataset", "none"] if data == "sheet" else []) + extra}  # fmt: skip
                for io in args.io:
                    for optim in args.optim:
                        who = f"hand ({io})" if optim == "torch" else f"hand ({io}, nodynamo)"
                        cmds[who] = [sys.executable, str(HAND), book, sheet, str(tmp / "h.xlsx"),
                                     "--io", io, "--data", data, "--optim", optim] + extra  # fmt: skip
                best: dict[str, list] = {}
                for _ in range(args.repeat):
                    for who, cmd in cmds.items():
                        wall, rss, res = run(cmd, env)
                        b = best.setdefault(who, [wall, rss, res])
                        b[0], b[1] = min(b[0], wall), min(b[1], rss)
                for who, (wall, rss, res) in best.items():
                    print(
                        f"{sheet:<7} {data:<8} {who:<26} {wall:>7.2f} {rss:>8.0f} {res['objective']:>12.6g}"
                    )
                x = best["xlmnist train"]
                for who in [w for w in best if w != "xlmnist train"]:
                    h = best[who]
                    print(f"{sheet:<7} {data:<8} ratio vs {who}: wall {x[0] / h[0]:.2f}, peak RSS {x[1] / h[1]:.2f}"
                          " (target <= 1.10)")  # fmt: skip
                    xo, ho = x[2]["objective"], h[2]["objective"]
                    same = abs(xo - ho) <= 1e-6 * abs(ho) or (sheet == "nnet" and xo <= ho)
                    if data == "sheet" and not same:
                        print(f"{sheet}: the losses differ ({x[2]['objective']} vs {h[2]['objective']})")
                        return 1
                sys.stdout.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
