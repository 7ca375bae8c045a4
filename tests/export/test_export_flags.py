"""export --objective/--params, train --save-names, the module's --weights book and export --state-dict (#16)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import openpyxl
import torch
from torch import nn

from xlmnist.export.importer import build_workbook, load_model

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run(*args, json_out=True):
    r = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=ENV)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1]) if json_out else r.stdout


def unnamed_book(path: Path):
    """A trainable sheet with no Solver or xlmnist names: y = w*x + b, mean squared error."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "my sheet"
    ws["B1"], ws["C1"] = 0.5, 0.25
    for r in range(3, 9):
        ws[f"A{r}"] = float(r)
        ws[f"B{r}"] = 3.0 * r - 1.0
        ws[f"C{r}"] = f"=A{r}*$B$1+$C$1"
        ws[f"D{r}"] = f"=(C{r}-B{r})^2"
    ws["E1"] = "=AVERAGE(D3:D8)"
    wb.save(path)


def test_flags_save_names_and_book_weights(tmp_path):
    book, trained, module = tmp_path / "u.xlsx", tmp_path / "t.xlsx", tmp_path / "m.py"
    unnamed_book(book)
    flags = ["--objective", "'my sheet'!E1", "--params", "'my sheet'!B1:C1"]
    before = run("-m", "xlmnist", "eval", book, *flags, "--json")["objective"]
    run("-m", "xlmnist", "export", book, *flags, "-o", module, json_out=False)
    assert math.isclose(run(module, book, "--json")["objective"], before, rel_tol=1e-12)
    out = run("-m", "xlmnist", "train", book, *flags, "--save-names", "--out", trained, json_out=False)
    assert "xlmnist_objective" in out
    after = run("-m", "xlmnist", "eval", trained, "--json")  # no flags: the saved names
    assert after["objective"] < before * 1e-3 and after["objective_cell"].endswith("E1")
    names = openpyxl.load_workbook(trained)["my sheet"].defined_names
    assert names["xlmnist_params"].attr_text == "'my sheet'!$B$1:$C$1"
    baked = run(module, trained, "--json")  # the default: the weights of export time, and it says so
    assert baked["weights"] == "baked" and math.isclose(baked["objective"], before, rel_tol=1e-12)
    fresh = run(module, trained, "--json", "--weights", "book")
    assert math.isclose(fresh["objective"], after["objective"], rel_tol=1e-9, abs_tol=1e-12)
    module2 = tmp_path / "m2.py"
    run("-m", "xlmnist", "export", trained, "-o", module2, json_out=False)  # names found without flags
    assert math.isclose(run(module2, trained, "--json")["objective"], fresh["objective"], rel_tol=1e-12)


def test_state_dict_beside_module_imports(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    X = torch.rand(6, 3, dtype=torch.float64).numpy()
    book, module = tmp_path / "b.xlsx", tmp_path / "m.py"
    build_workbook(list(net), X, X[:, 0] * 2.0, ["a", "b", "c"], book)
    run("-m", "xlmnist", "export", book, "-o", module, "--state-dict", json_out=False)
    layers = load_model(tmp_path / "m.pt", arch="3-2-relu-1")
    x = torch.from_numpy(X)
    torch.testing.assert_close(nn.Sequential(*layers)(x), net(x), rtol=1e-12, atol=1e-12)
