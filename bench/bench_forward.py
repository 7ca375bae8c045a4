"""Benchmark (b): compiled forward+backward vs a hand-written PyTorch model, same data, same run.

    python bench/bench_forward.py [--rows 1000] [--full 12396] [--threads 1] [--repeat 30]

Sheets: the course titanic.xlsx (linear, nnet, mmult) and MNIST-shaped workbooks generated with the
real ``xlmnist.lessons`` sheet writers over random images (linear, simple_net, linear10) at ``--rows``
visible rows, plus the same models over ``--full`` rows through the dataset API (``data=``).
Prints per sheet: xlmnist us, torch us, ratio (goal <= 1.10). Values are checked to agree (rel 1e-10).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xlmnist.compile import compile_workbook  # noqa: E402
from xlmnist.lessons import models  # noqa: E402
from xlmnist.lessons.mnist import data_sheet, init_params  # noqa: E402
from xlmnist.xlsx.book import Book, exact_floats  # noqa: E402

COURSE = ROOT.parent / "shared" / "course" / "titanic.xlsx"


def images(n: int, seed: int, classes: int):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    x[rng.random(x.shape) < 0.8] = 0
    return x, rng.integers(0, classes, size=n)


def data_rows(x, y) -> torch.Tensor:
    cols = [x.reshape(len(x), -1) / 255, np.ones((len(x), 1)), y[:, None].astype(float)]
    return torch.tensor(np.concatenate(cols, 1), dtype=torch.float64)


def mnist_books(folder: Path, rows: int) -> dict[str, Path]:
    with exact_floats():  # write-only sheets serialise as rows are appended: build inside it
        return _mnist_books(folder, rows)


def _mnist_books(folder: Path, rows: int) -> dict[str, Path]:
    p = init_params(0)
    x, y = images(rows, 0, 2)
    book = Book()
    data_sheet(book, x, y, onehot=False)
    models.linear_sheet(book, rows, p["linear"])
    models.simple_net_sheet(book, rows, p["simple_net_w1"], p["simple_net_w2"])
    book.write_settings()
    book.save(folder / "m3v7.xlsx")
    x, y = images(rows, 1, 10)
    book = Book()
    data_sheet(book, x, y, onehot=True)
    models.linear10_sheet(book, rows, p["linear10"])
    book.write_settings()
    book.save(folder / "m10.xlsx")
    return {
        "linear": folder / "m3v7.xlsx",
        "simple_net": folder / "m3v7.xlsx",
        "linear10": folder / "m10.xlsx",
    }


def hand_mnist(sheet: str):
    def f(params, X):
        xb, y = X[:, :785], X[:, 785]
        if sheet == "linear":
            p = torch.sigmoid(xb @ params[0].reshape(-1))
        elif sheet == "simple_net":
            w1, w2 = params
            w2 = w2.reshape(-1)
            p = torch.sigmoid(torch.relu(xb @ w1) @ w2[:-1] + w2[-1])
        else:
            return torch.nn.functional.cross_entropy(xb @ params[0], y.long())
        return torch.where(y == 1, 1 - p, p).mean()

    return f


def course_features(model) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature columns G..P and the label, as the sheet computed them (the hand model's inputs)."""
    sheet = model.objective_ref.split("!")[0]
    got = model.evaluate([f"{sheet}!G4:P715", "linear!A4:A715"], model.initial_params())
    return got[f"{sheet}!G4:P715"].detach().clone(), got["linear!A4:A715"][:, 0].detach().clone()


def hand_course(sheet: str, x: torch.Tensor, y: torch.Tensor):
    def f(params, _X):
        (p,) = params
        if sheet == "linear":
            return ((x @ p.reshape(-1) - y) ** 2).mean()
        if sheet == "nnet":
            return ((y - torch.relu(x @ p.T).sum(1)) ** 2).mean()
        return ((y - torch.relu(x @ p).sum(1)) ** 2).mean()

    return f


def timeit(fn, repeat: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def step(objective, params, X):
    def run():
        for p in params:
            p.grad = None
        v = objective(params, X)
        v.backward()
        return v

    return run


def compare(name, model, hand, X, repeat: int) -> float:
    params = [p.clone().requires_grad_() for p in model.initial_params()]
    ref = [p.clone().requires_grad_() for p in model.initial_params()]

    def ours(ps, data):
        return model.objective(ps, data=data) if data is not None else model.objective(ps)

    a = float(ours(params, X))
    b = float(hand(ref, X))
    if abs(a - b) > 1e-10 * max(1.0, abs(b)):
        raise SystemExit(f"{name}: values differ: xlmnist {a!r} vs torch {b!r}")
    t_ours, t_hand = [], []
    for _ in range(3):  # interleave to share the machine's noise
        t_ours.append(timeit(step(ours, params, X), repeat))
        t_hand.append(timeit(step(hand, ref, X), repeat))
    o, h = min(t_ours), min(t_hand)
    print(
        f"{name:<28} xlmnist {o * 1e6:10.0f} us   torch {h * 1e6:10.0f} us   ratio {o / h:5.2f}", flush=True
    )
    return o / h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--full", type=int, default=12396)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (both sides); 0 = torch default")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--skip-course", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float64, forward+backward medians"
    )
    ratios = {}
    if not args.skip_course and COURSE.exists():
        for sheet in ("linear", "nnet", "mmult"):
            m = compile_workbook(COURSE, sheet=sheet)
            x, y = course_features(m)
            ratios[f"course {sheet}"] = compare(
                f"course {sheet} (712 rows)", m, hand_course(sheet, x, y), None, args.repeat
            )
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        books = mnist_books(Path(tmp), args.rows)
        print(f"(generated MNIST-shaped workbooks with {args.rows} rows in {time.perf_counter() - t:.1f} s)")
        for sheet, path in books.items():
            t = time.perf_counter()
            m = compile_workbook(path, sheet=sheet)
            print(f"(compiled {sheet} in {time.perf_counter() - t:.2f} s)")
            X = m.data_rows()
            ratios[f"{sheet} {args.rows}"] = compare(
                f"{sheet} ({args.rows} rows)", m, hand_mnist(sheet), X, args.repeat
            )
            if args.full:
                x, y = images(args.full, 7, 10 if sheet == "linear10" else 2)
                X = data_rows(x, y)
                ratios[f"{sheet} {args.full}"] = compare(
                    f"{sheet} data= ({args.full} rows)", m, hand_mnist(sheet), X, max(3, args.repeat // 10)
                )
                B = X[:256]
                ratios[f"{sheet} batch256"] = compare(
                    f"{sheet} data= (batch of 256)", m, hand_mnist(sheet), B, args.repeat
                )
    worst = max(ratios, key=ratios.get)
    print(f"worst ratio: {ratios[worst]:.2f} ({worst}); goal <= 1.10")


if __name__ == "__main__":
    main()
