"""Per-step cost of full-scale training: one optimiser step of the compiled sheet vs the hand-written model.

bench_mnist.py times whole runs in separate processes, which on a shared 2-core machine vary by +-15 % from
run to run. This script measures both in one process, interleaved: rounds of ``--steps`` minibatch steps
(same batches, same optimiser settings as the workbook, float32, gather + zero_grad + forward + backward +
step), xlmnist then hand-written, and keeps each side's fastest round. What it isolates is the compiled
program's cost per step; epochs, validation and the command's file work are bench_mnist.py's.

Usage: ``XLMNIST_DATA=/work/shared/data/mnist python bench/bench_step.py [--only linear10 mlp]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_mnist import CASES, hand_model  # noqa: E402


def measure(book: Path, sheet: str, rounds: int, steps: int) -> tuple[float, float]:
    import torch

    from xlmnist.train.session import compile_sheet
    from xlmnist.train.settings import dataset_rows

    model = compile_sheet(book, sheet).recompile(dtype=torch.float32)
    s = model.settings
    rows = dataset_rows(model, s["dataset"], "train").float()
    data = rows.numpy()
    trusted = model.trusts(rows)
    batches = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).split(
        int(s["batch_size"])
    )
    batches = batches[: min(len(batches) - 1, steps)]  # full batches only

    def optimiser(params):
        lr = float(s["lr"])
        return torch.optim.Adam(params, lr=lr) if s["optimizer"] == "adam" else torch.optim.SGD(params, lr=lr)

    px = [p.clone().requires_grad_(True) for p in model.initial_params()]
    ph = [p.clone().requires_grad_(True) for p in model.initial_params()]
    ox, oh = optimiser(px), optimiser(ph)
    forward, loss_of = hand_model(sheet, ph, s["dataset"] == "mnist_3v7")

    def step_x(xb):
        ox.zero_grad(set_to_none=True)
        model.objective(px, data=xb, trusted=trusted).backward()
        ox.step()

    def step_h(xb):
        oh.zero_grad(set_to_none=True)
        loss_of(forward(xb), xb[:, -1]).backward()
        oh.step()

    best = {step_x: float("inf"), step_h: float("inf")}
    for _ in range(rounds):
        for fn in best:
            t = time.perf_counter()
            for idx in batches:
                fn(torch.from_numpy(data[idx.numpy()]))
            best[fn] = min(best[fn], (time.perf_counter() - t) / len(batches))
    return best[step_x], best[step_h]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    from xlmnist.data import mnist_available
    from xlmnist.lessons import build_all

    cases = [c for c in args.only if CASES[c][0] != "mnist.xlsx" or mnist_available()]
    if len(cases) < len(args.only):
        print("full MNIST not available (set XLMNIST_DATA): skipping the ten-digit sheets")
    tmp = Path(tempfile.mkdtemp(prefix="bench_step."))
    try:
        build_all(tmp, rows=100, only=sorted({CASES[c][0] for c in cases}))
        print(f"{'sheet':<11} {'xlmnist us/step':>15} {'hand us/step':>12} {'ratio':>6}")
        for sheet in cases:
            x, h = measure(tmp / CASES[sheet][0], sheet, args.rounds, args.steps)
            print(f"{sheet:<11} {x * 1e6:>15.0f} {h * 1e6:>12.0f} {x / h:>6.2f}  (goal <= 1.10)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
