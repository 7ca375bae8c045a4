"""100 L-BFGS steps of a course-style convolution sheet: xlmnist's compiled model vs hand-written torch.

The sheet (``tests/compile/conv_book.py``): a 28 x 28 digit, six 3 x 3 kernels (54 trainable cells), per
kernel a 26 x 26 ``{=MAX(0,SUM(window*kernel))}`` layer (``--form plain``: ``=MAX(0,SUMPRODUCT(...))``),
2 x 2 MAX pooling, a dense readout and a squared error. The hand-written model is ``F.conv2d`` with six
output channels, ``relu``, ``max_pool2d`` and the same readout, from the same initial kernels. Both run the
same ``torch.optim.LBFGS`` (strong Wolfe, no early stop) for ``--steps`` iterations in one process, float64
CPU, interleaved ``--rounds`` times; the fastest round of each side counts.

Usage: ``python bench/bench_conv.py [--form array|plain] [--steps 100] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "compile"))

import conv_book  # noqa: E402


def lbfgs(params, loss_fn, steps: int):
    import torch

    opt = torch.optim.LBFGS(
        params,
        max_iter=steps,
        max_eval=steps * 50,
        history_size=100,
        line_search_fn="strong_wolfe",
        tolerance_grad=-1.0,
        tolerance_change=0.0,
    )
    evals = 0

    def closure():
        nonlocal evals
        evals += 1
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    t = time.perf_counter()
    opt.step(closure)
    return time.perf_counter() - t, opt.state[params[0]]["n_iter"], evals, float(loss_fn().detach())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--form", choices=("array", "plain"), default="array")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args()

    import torch

    from xlmnist.compile import compile_workbook

    if a.threads:
        torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        book = conv_book.build(Path(tmp) / "conv.xlsx", a.form)
        t = time.perf_counter()
        model = compile_workbook(book)
        compile_s = time.perf_counter() - t
    print(f"compile {compile_s:.2f} s, program {model.program_kind} {model.fallback_reason or ''}")
    hand_loss, k0 = conv_book.torch_model()
    best = {"xlmnist": None, "torch": None}
    for _ in range(a.rounds):
        ps = [p.clone().requires_grad_(True) for p in model.initial_params()]
        rx = lbfgs(ps, lambda ps=ps: model.objective(ps), a.steps)
        k = k0.clone().requires_grad_(True)
        rh = lbfgs([k], lambda k=k: hand_loss(k), a.steps)
        for side, r in (("xlmnist", rx), ("torch", rh)):
            if best[side] is None or r[0] < best[side][0]:
                best[side] = r
    for side, (s, it, ev, loss) in best.items():
        print(f"{side:8} {s:.3f} s  {it} iterations, {ev} evaluations, final loss {loss:.3e}")
    (sx, _, ex, _), (sh, _, eh, _) = best["xlmnist"], best["torch"]
    print(f"ratio {sx / sh:.2f} (per evaluation {(sx / ex) / (sh / eh):.2f})")


if __name__ == "__main__":
    main()
