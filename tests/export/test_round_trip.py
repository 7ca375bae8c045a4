"""Round trip for every sheet kind the tests build (#16): export -> run -> equal to eval (1e-12, float64,
gradients included); import -> workbook -> eval -> equal, two ways: the module (read, never run) as a new
workbook (Linear stacks), and weights changed in torch, saved as a state dict, written back into the
workbook the module came from (``xlmnist import trained.pt BOOK``, every kind, both forms)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest
import torch
from openpyxl.workbook.defined_name import DefinedName
from test_general_form import check, conv_book, embed_book, lookup_book, rnn_book
from torch import nn

from xlmnist.compile import compile_workbook
from xlmnist.export.codegen import export_module
from xlmnist.export.importer import build_workbook, load_model
from xlmnist.export.restore import import_into

ROOT = Path(__file__).resolve().parents[2]
N = 8


def data(classes=0):
    g = torch.Generator().manual_seed(1)
    X = torch.rand(N, 3, dtype=torch.float64, generator=g).numpy()
    y = (torch.arange(N) % classes).double().numpy() if classes else X[:, 0] * 2.0 - X[:, 2]
    return X, y


NETS = {
    "linear": (lambda: nn.Sequential(nn.Linear(3, 1)), 0),
    "relu-net": (lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)), 0),
    "sigmoid": (lambda: nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1), nn.Sigmoid()), 2),
    "softmax-ce": (lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3), nn.Softmax(dim=1)), 3),
}


def mmult_book(path, X, y):
    """A linear model written with MMULT: =MMULT(A2:D2,$G$2:$G$5) copied down, with a Ones column."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "mm"
    for i in range(N):
        r = i + 2
        for c in range(3):
            ws.cell(r, c + 1, float(X[i, c]))
        ws.cell(r, 4, 1)
        ws.cell(r, 5, float(y[i]))
        ws.cell(r, 6, f"=MMULT(A{r}:D{r},$G$2:$G$5)")
        ws.cell(r, 8, f"=(E{r}-F{r})^2")
    for k in range(4):
        ws.cell(2 + k, 7, 0.1 * (k + 1))
    ws["J1"] = f"=AVERAGE(H2:H{N + 1})"
    ws.defined_names["xlmnist_objective"] = DefinedName("xlmnist_objective", attr_text="mm!$J$1")
    ws.defined_names["xlmnist_params"] = DefinedName("xlmnist_params", attr_text="mm!$G$2:$G$5")
    wb.save(path)


def objective(book) -> float:
    cm = compile_workbook(book)
    with torch.no_grad():
        return float(cm.objective(cm.initial_params()))


def run_module(module, book) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, module, book, "--json"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["objective"]


def layer_gradients_equal(module, book):
    ns = {"__name__": "exported"}
    exec(compile(Path(module).read_text(), str(module), "exec"), ns)  # noqa: S102 - the module this test wrote
    model = ns["Model"]()
    x, y = ns["read_data"](str(book))
    ns["loss_fn"](model(x), y).backward()
    cm = compile_workbook(book)
    params = [p.detach().clone().requires_grad_(True) for p in cm.initial_params()]
    grads = torch.autograd.grad(cm.objective(params), params)
    total = sum(float(g.abs().sum()) for g in grads)
    mine = sum(float(p.grad.abs().sum()) for p in model.parameters())
    assert mine == pytest.approx(total, rel=1e-12, abs=1e-15)


def load(module):
    ns = {"__name__": "exported"}
    exec(compile(Path(module).read_text(), str(module), "exec"), ns)  # noqa: S102 - the module this test wrote
    return ns


def trained_in_torch(module, book, pt) -> float:
    """The exported module's weights changed by three SGD steps in torch and saved as a state dict at
    ``pt``; the torch objective with them."""
    ns = load(module)
    model = ns["Model"]()
    if "read_constants" in ns:  # the general form: forward(K) is the objective
        K = ns["read_constants"](str(book))

        def loss():
            return model(K)
    else:
        x, y = ns["read_data"](str(book))

        def loss():
            return ns["loss_fn"](model(x), y)

    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        loss().backward()
        opt.step()
    torch.save(model.state_dict(), pt)
    with torch.no_grad():
        return float(loss())


def import_back(module, book, tmp_path):
    """torch-trained weights -> ``import_into`` the original workbook (a copy) -> eval equals torch's."""
    pt, back = tmp_path / "trained.pt", tmp_path / "back.xlsx"
    want = trained_in_torch(module, book, pt)
    assert want != pytest.approx(objective(book), rel=1e-6)  # the weights did change
    got = import_into(pt, book, out=back, module=module)
    assert got["objective"] == pytest.approx(want, rel=1e-12)
    assert objective(back) == pytest.approx(want, rel=1e-12)
    return got


@pytest.mark.parametrize("kind", list(NETS))
def test_layer_kinds_round_trip(kind, tmp_path):
    make, classes = NETS[kind]
    torch.manual_seed(0)
    net = make().double()
    X, y = data(classes)
    book, module, back = tmp_path / "b.xlsx", tmp_path / "m.py", tmp_path / "back.xlsx"
    build_workbook(list(net), X, y, ["a", "b", "c"], book)
    assert export_module(book, out_path=module)[1] == "layer"
    want = objective(book)
    assert run_module(module, book) == pytest.approx(want, rel=1e-12)
    layer_gradients_equal(module, book)
    build_workbook(load_model(module), X, y, ["a", "b", "c"], back)  # import: the module is parsed, not run
    assert objective(back) == pytest.approx(want, rel=1e-12)
    assert import_back(module, book, tmp_path)["form"] == "layer"


def test_mmult_round_trip(tmp_path):
    X, y = data()
    book, module, back = tmp_path / "mm.xlsx", tmp_path / "m.py", tmp_path / "back.xlsx"
    mmult_book(book, X, y)
    assert export_module(book, out_path=module)[1] == "layer"
    want = objective(book)
    assert run_module(module, book) == pytest.approx(want, rel=1e-12)
    layer_gradients_equal(module, book)
    build_workbook(load_model(module), X, y, ["a", "b", "c"], back)
    assert objective(back) == pytest.approx(want, rel=1e-12)
    assert import_back(module, book, tmp_path)["params"] == ["mm!G2:G5"]


def gather_book(path):
    lookup_book(path, "index-match")


@pytest.mark.parametrize(
    "kind, make, form",
    [
        ("conv", conv_book, "general"),
        ("embedding", embed_book, "layer"),
        ("embedding-lookup", gather_book, "general"),
        ("recurrence", rnn_book, "general"),
    ],
)
def test_other_kinds_round_trip(kind, make, form, tmp_path):
    """Conv, embedding (rows by position, and looked up by id: gathers) and an unrolled recurrence:
    export -> run -> equal (gradients included); weights trained in torch -> import into the workbook ->
    eval -> equal."""
    book = tmp_path / f"{kind}.xlsx"
    make(book)
    check(book, tmp_path, form)
    if kind == "recurrence":  # written as one loop over its rows, not a statement per row
        assert (tmp_path / "m.py").read_text().count("        for r in range(3, 8):\n") == 1
    got = import_back(tmp_path / "m.py", book, tmp_path)
    assert got["form"] == form


def test_lookup_round_trip_through_the_command_line(tmp_path):
    """The gather case end to end with the commands: export (general form, --state-dict), train in torch,
    save the state dict, ``xlmnist import trained.pt BOOK --module m.py -o back.xlsx``, ``xlmnist eval``."""
    book, module = tmp_path / "emb.xlsx", tmp_path / "m.py"
    lookup_book(book, "vlookup")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def xlmnist(*args):
        r = subprocess.run(
            [sys.executable, "-m", "xlmnist", *map(str, args)], capture_output=True, text=True, env=env
        )
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "(general form)" in xlmnist("export", book, "-o", module, "--state-dict")
    assert run_module(module, book) == pytest.approx(objective(book), rel=1e-12)
    want = trained_in_torch(module, book, tmp_path / "trained.pt")
    out = xlmnist("import", tmp_path / "trained.pt", book, "--module", module, "-o", tmp_path / "back.xlsx")
    assert "emb!B2:E7, emb!G2:J7" in out and "general-form" in out
    got = json.loads(xlmnist("eval", tmp_path / "back.xlsx", "--json"))["objective"]
    assert got == pytest.approx(want, rel=1e-12)
    assert objective(book) != pytest.approx(want, rel=1e-6)  # -o: the original is untouched
    xlmnist("import", module.with_suffix(".pt"), book)  # the export-time weights, into BOOK itself
    assert objective(book) == pytest.approx(run_module(module, book), rel=1e-12)
