"""``xlmnist.train.torchopt``: torch's own optimisers, bit for bit, without importing ``torch._dynamo``.

Each check runs in a fresh interpreter: whether ``torch._dynamo`` is loaded is a property of the process
(other tests in this one may have loaded it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SAME = r"""
import json, sys, torch
from xlmnist.train import torchopt
torch.manual_seed(0)
X = torch.randn(60, 5, dtype=torch.float64)
y = torch.randn(60, dtype=torch.float64)
CLASSES = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "lbfgs": torch.optim.LBFGS}
OPTIONS = {"sgd": dict(lr=0.05, momentum=0.9), "adam": dict(lr=0.1),
           "lbfgs": dict(lr=1, max_iter=7, line_search_fn="strong_wolfe", history_size=100)}

def run(name, ours):
    w = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torchopt.make(name, [w, b], **OPTIONS[name]) if ours else CLASSES[name]([w, b], **OPTIONS[name])
    losses = []
    def closure():
        torchopt.zero_grad(opt) if ours else opt.zero_grad()
        loss = ((X @ w + b - y) ** 2).mean()
        loss.backward()
        return loss
    for _ in range(4):
        losses.append(float(torchopt.step(opt, closure) if ours else opt.step(closure)))
    return [w.detach().tolist(), b.detach().tolist(), losses]

ours = {name: run(name, True) for name in CLASSES}
loaded_after_ours = "torch._dynamo" in sys.modules
theirs = {name: run(name, False) for name in CLASSES}
print(json.dumps({"ours": ours, "theirs": theirs, "loaded_after_ours": loaded_after_ours,
                  "loaded_after_theirs": "torch._dynamo" in sys.modules}))
"""

CLI = r"""
import sys
from xlmnist import cli
book = sys.argv[1]
for args in (["train", book + "/titanic.xlsx", "--sheet", "nnet", "--epochs", "3"],
             ["train", book + "/mnist_3v7.xlsx", "--sheet", "linear", "--dataset", "none", "--epochs", "3"],
             ["train", book + "/mnist_3v7.xlsx", "--sheet", "linear", "--epochs", "1"],
             ["step", book + "/titanic.xlsx", "--sheet", "nnet"]):
    assert cli.main(args + (["--quiet"] if args[0] == "train" else [])) == 0, args
print("torch._dynamo" in sys.modules)
"""


def python(code: str, *args) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_same_numbers_as_torch_optim_without_loading_dynamo():
    out = json.loads(python(SAME))
    assert out["ours"] == out["theirs"]  # SGD with momentum, Adam, L-BFGS: every parameter and loss, exactly
    assert out["loaded_after_ours"] is False
    assert out["loaded_after_theirs"] is True  # torch.optim as is does load it: what this module saves


def test_train_and_step_commands_do_not_load_dynamo(tmp_path):
    build = [sys.executable, "-m", "xlmnist", "build", "--out", str(tmp_path), "--rows", "20"]
    build += ["--only", "titanic.xlsx", "mnist_3v7.xlsx"]
    subprocess.run(build, cwd=ROOT, check=True, capture_output=True, timeout=600)
    # L-BFGS on the titanic sheet, SGD on the sheet's rows and in minibatches, Adam/SGD's single step
    assert python(CLI, tmp_path) == "False"


@pytest.mark.parametrize("preload", [True, False])
def test_hooks_or_loaded_dynamo_take_torchs_own_step(preload):
    code = r"""
import sys, torch
if PRELOAD:
    import torch._dynamo
from xlmnist.train import torchopt
w = torch.ones(3, dtype=torch.float64, requires_grad=True)
opt = torchopt.make("sgd", [w], lr=0.5)
calls = []
opt.register_step_post_hook(lambda *a: calls.append(1))
(w ** 2).sum().backward()
torchopt.step(opt)
print(calls == [1] and w.tolist() == [0.0, 0.0, 0.0])
""".replace("PRELOAD", str(preload))
    assert python(code) == "True"
