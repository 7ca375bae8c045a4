"""Accuracy and speed of full-dataset training: xlmnist (the sheet's formulas) vs a hand-written PyTorch loop.

For each model sheet (3v7 ``linear``, ``simple_net``; all-digit ``linear10``, ``mlp``) both run with the
workbook's settings (optimizer, lr, epochs, batch size, seed), the same initial values (the sheet's cells),
the same data (the dataset's train split, validated on its valid split after every epoch), float32, the
same seeded shuffles (``torch.randperm`` with ``torch.Generator().manual_seed(seed)``) and the same row
gather (numpy: torch's CPU ``index_select`` is ~40x slower on these 786-column rows). Each run is its own
subprocess, so its peak memory (``ru_maxrss``) is its own.

* xlmnist: :func:`xlmnist.fulltrain.train_book`, the code path of ``xlmnist train`` (in process). "loop" is
  the training loop with per-epoch validation; "command" the whole call (read and compile the workbook,
  load the data, train, float64 metrics over both splits, write-back with cached values).
* hand-written: the same model written with torch ops (``sigmoid`` + the book's ``mnist_loss``; softmax
  cross-entropy for ten digits); "loop" likewise, "command" adds loading the data.

"loop cpu" is this process's CPU time in the loop (``time.process_time``), less sensitive than wall time
to other load on a shared machine.

Usage: ``XLMNIST_DATA=/work/shared/data/mnist python bench/bench_mnist.py [--only linear simple_net]
[--epochs N] [--repeat N]``. Targets: valid accuracy >= 97.5 % / 98.5 % / 92.5 % / 98.0 %, ratio <= 1.10.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = {  # sheet -> (workbook, target valid accuracy)
    "linear": ("mnist_3v7.xlsx", 0.975),
    "simple_net": ("mnist_3v7.xlsx", 0.985),
    "linear10": ("mnist.xlsx", 0.925),
    "mlp": ("mnist.xlsx", 0.980),
}
DEVICE = os.environ.get("XLMNIST_BENCH_DEVICE", "cpu")  # --device: both sides train there


def sync() -> None:
    if DEVICE.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_xlmnist(book: str, sheet: str, epochs: int | None) -> dict:
    from xlmnist.train.session import train_book

    out = str(Path(book).with_name(f"trained-{sheet}.xlsx"))
    t0 = time.perf_counter()
    res = train_book(book, sheet=sheet, epochs=epochs, out=out, device=DEVICE)
    total = time.perf_counter() - t0
    m = res["metrics"]
    return {
        "loop": res["seconds"], "cpu": res["cpu_seconds"], "command": total,
        "valid_accuracy": m.get("valid_accuracy"),
        "valid_loss": m.get("valid_loss"), "epochs": res["epochs"], "steps": res["steps"],
    }  # fmt: skip


def hand_model(sheet: str, params: list, binary: bool):
    """The sheet's model written by hand: (forward(x), loss_of(out, y)); x = [M, 786] pixels, Ones, label."""
    import torch
    import torch.nn.functional as F

    def forward(x):
        x1 = x[:, :785]
        if sheet == "linear":
            return torch.sigmoid(x1 @ params[0][0])
        if sheet == "linear10":
            return x1 @ params[0]
        h = torch.relu(x1 @ params[0])
        h1 = torch.cat([h, torch.ones(len(h), 1, device=h.device)], 1)
        out = h1 @ (params[1][0] if sheet == "simple_net" else params[1])
        return torch.sigmoid(out) if sheet == "simple_net" else out

    def loss_of(out, y):
        if binary:
            return torch.where(y == 1, 1 - out, out).mean()  # the book's mnist_loss
        return F.cross_entropy(out, y.long())

    return forward, loss_of


def run_hand(book: str, sheet: str, epochs: int | None) -> dict:
    import torch

    from xlmnist.train.session import compile_sheet
    from xlmnist.train.settings import dataset_rows

    model = compile_sheet(book, sheet)  # only to read the sheet's settings and initial cell values
    s = model.settings
    epochs = int(epochs if epochs is not None else s["epochs"])
    bs, lr, seed, name = int(s["batch_size"]), float(s["lr"]), int(s["seed"]), s["optimizer"]
    params = [p.float().to(DEVICE).clone().requires_grad_(True) for p in model.initial_params()]
    t0 = time.perf_counter()
    train = dataset_rows(model, s["dataset"], "train").float().numpy()
    valid = torch.from_numpy(dataset_rows(model, s["dataset"], "valid").float().numpy()).to(DEVICE)
    binary = s["dataset"] == "mnist_3v7"

    forward, loss_of = hand_model(sheet, params, binary)
    opt = torch.optim.Adam(params, lr=lr) if name == "adam" else torch.optim.SGD(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    linear = str(s.get("lr_schedule") or "constant").strip().lower() == "linear"
    total_steps, step = max(1, epochs * -(-len(train) // bs)), 0
    t_loop, c_loop = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        for idx in torch.randperm(len(train), generator=gen).split(bs):
            if linear:
                for group in opt.param_groups:
                    group["lr"] = lr * (1 - step / total_steps)
            step += 1
            xb = torch.from_numpy(train[idx.numpy()]).to(DEVICE)
            opt.zero_grad(set_to_none=True)
            loss = loss_of(forward(xb), xb[:, -1])
            loss.backward()
            opt.step()
        with torch.no_grad():
            out = forward(valid)
            y = valid[:, -1]
            acc = float(
                ((out > 0.5).float() == y).float().mean() if binary else (out.argmax(1) == y).float().mean()
            )
            vloss = float(loss_of(out, y))
    sync()
    loop, cpu = time.perf_counter() - t_loop, time.process_time() - c_loop
    return {"loop": loop, "cpu": cpu, "command": time.perf_counter() - t0, "valid_accuracy": acc, "valid_loss": vloss,
            "epochs": epochs}  # fmt: skip


def one(kind: str, book: str, sheet: str, epochs: int | None) -> None:
    res = (run_xlmnist if kind == "xlmnist" else run_hand)(book, sheet, epochs)
    res["maxrss_mb"] = maxrss_mb()
    print(json.dumps(res))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--epochs", type=int, help="override the workbook's epochs (quick runs)")
    ap.add_argument(
        "--rows",
        type=int,
        default=None,
        help="visible rows of the built workbooks (default: the build default, as users get)",
    )
    ap.add_argument("--device", default=DEVICE, help="cpu (default) or cuda: where both sides train")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each, alternating; the fastest counts")
    ap.add_argument("--one", nargs=3, metavar=("KIND", "BOOK", "SHEET"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ["XLMNIST_BENCH_DEVICE"] = args.device  # the --one subprocesses
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(f"--device {args.device}: no CUDA device here (torch {torch.__version__})", file=sys.stderr)
            return 3
    if args.one:
        one(*args.one, args.epochs)
        return 0
    from xlmnist.data import mnist_available
    from xlmnist.lessons import build_all

    cases = [c for c in args.only if CASES[c][0] != "mnist.xlsx" or mnist_available()]
    if len(cases) < len(args.only):
        print("full MNIST not available (set XLMNIST_DATA): skipping the ten-digit sheets")
    tmp = Path(tempfile.mkdtemp(prefix="bench_mnist."))
    try:
        books = sorted({CASES[c][0] for c in cases})
        build_all(tmp, rows=args.rows, only=books)
        head = (
            f"{'sheet':<11} {'who':<8} {'valid acc':>9} {'target':>7} {'loop s':>8} {'loop cpu s':>10} "
            f"{'command s':>9} {'peak MB':>8}"
        )
        print(head)
        for sheet in cases:
            book, target = CASES[sheet]
            got = {}
            for kind in [k for _ in range(args.repeat) for k in ("xlmnist", "torch")]:  # alternating
                cmd = [sys.executable, __file__, "--one", kind, str(tmp / book), sheet]
                if args.epochs is not None:
                    cmd += ["--epochs", str(args.epochs)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
                if proc.returncode != 0:
                    print(f"{sheet:<11} {kind:<8} FAILED: {proc.stderr.strip().splitlines()[-1:]}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                best = got.setdefault(kind, dict(r))  # the fastest of the repeats (least disturbed by load)
                for key in ("loop", "cpu", "command"):
                    best[key] = min(best[key], r[key])
                acc = r["valid_accuracy"]
                ok = "" if acc is None or acc >= target else " (below target)"
                print(
                    f"{sheet:<11} {kind:<8} {acc if acc is None else f'{acc:.2%}':>9} {target:>7.1%} "
                    f"{r['loop']:>8.2f} {r['cpu']:>10.2f} {r['command']:>9.2f} {r['maxrss_mb']:>8.0f}{ok}",
                    flush=True,
                )
            if len(got) == 2:
                print(
                    f"{sheet:<11} ratio    xlmnist/hand-written loop {got['xlmnist']['loop'] / got['torch']['loop']:.2f}"
                    f", loop cpu {got['xlmnist']['cpu'] / got['torch']['cpu']:.2f}"
                    f", command {got['xlmnist']['command'] / got['torch']['command']:.2f} (goal <= 1.10)",
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
