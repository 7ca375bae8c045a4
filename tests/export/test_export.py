"""xlmnist export / import: the exported module == the compiled graph == LibreOffice; imports recalc to torch."""

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import openpyxl
import pytest
import torch
from openpyxl.workbook.defined_name import DefinedName
from testenv import COURSE_TITANIC as COURSE
from torch import nn

from xlmnist import oracle
from xlmnist.compile import compile_workbook
from xlmnist.xlsx.refs import parse_area

ROOT = Path(__file__).resolve().parents[2]
LESSONS = [("titanic.xlsx", "linear"), ("titanic.xlsx", "nnet"), ("titanic.xlsx", "mmult"),
           ("mnist_3v7.xlsx", "linear"), ("mnist_3v7.xlsx", "simple_net"), ("mnist.xlsx", "linear10")]  # fmt: skip
BOOKS = ("titanic.xlsx", "mnist_3v7.xlsx", "mnist.xlsx")


def xlmnist(*args, cwd=ROOT, env=None):
    return subprocess.run(
        [sys.executable, "-m", "xlmnist", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env
    )


def run_json(module: Path, book: Path) -> dict:
    out = subprocess.run(
        [sys.executable, str(module), str(book), "--json"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def load(module: Path):
    spec = importlib.util.spec_from_file_location(module.stem + "_mod", module)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def area_values(values: dict, ref: str) -> np.ndarray:
    sheet, rng = ref.replace("$", "").rsplit("!", 1)
    r1, c1, r2, c2 = parse_area(rng)
    from xlmnist.xlsx.refs import col_letters

    cells = values[sheet.strip("'")]
    return np.array(
        [[float(cells[f"{col_letters(c)}{r}"]) for c in range(c1, c2 + 1)] for r in range(r1, r2 + 1)]
    )


def close(a, b, rel):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=rel, atol=rel * max(1.0, float(np.abs(b).max())))


def check_sheet(book: Path, sheet: str, tmp: Path, lo_values: dict):
    """Export ``sheet``, run it as a script, compare with the compiled graph and LibreOffice."""
    module = tmp / f"{book.stem}_{sheet}.py"
    r = xlmnist("export", book, "--sheet", sheet, "-o", module)
    assert r.returncode == 0, r.stderr
    got = run_json(module, book)
    cm = compile_workbook(book, sheet=sheet)
    params = cm.initial_params()
    pred_ref = load(module).PREDICTIONS
    want_pred = cm.evaluate([pred_ref], params)[pred_ref].detach().numpy()
    pred = np.asarray(got["predictions"]).reshape(want_pred.shape)
    close(got["objective"], float(cm.objective(params)), 1e-12)
    close(pred, want_pred, 1e-12)
    close(got["objective"], area_values(lo_values, cm.objective_ref)[0, 0], 1e-9)
    close(pred, area_values(lo_values, pred_ref), 1e-9)
    return module, got


@pytest.fixture(scope="module")
def course(tmp_path_factory, course_titanic):
    tmp = tmp_path_factory.mktemp("course")
    book = tmp / "titanic.xlsx"
    shutil.copy(COURSE, book)
    return book, oracle.recalc(book)


@pytest.mark.libreoffice
@pytest.mark.parametrize("sheet,layer_code", [
    ("linear", "nn.Linear(9, 1"), ("nnet", "nn.Linear(9, 2"), ("mmult", "nn.Linear(9, 2"),
])  # fmt: skip
def test_course_sheets_export(course, tmp_path, sheet, layer_code):
    book, lo = course
    module, got = check_sheet(book, sheet, tmp_path, lo)
    src = module.read_text()
    assert layer_code in src and "F.mse_loss(pred, y)" in src
    assert ("torch.relu(" in src) == (sheet != "linear")
    assert (
        "# nnet!AC4:AD715  SUMPRODUCT(Table13[[#This Row],[SibSp]:[Ones]],$R$4:$AA$4)" in src
        or sheet != "nnet"
    )
    saved = {"linear": 0.14422714930851466, "nnet": 0.14315209641714463, "mmult": 0.14315209641014892}[sheet]
    close(got["objective"], saved, 1e-12)


@pytest.fixture(scope="module")
def lessons(tmp_path_factory, mnist_dir):
    if not (ROOT / "xlmnist" / "lessons").is_dir():
        pytest.skip("xlmnist build is not part of this tree yet")
    out = tmp_path_factory.mktemp("lessons")
    env = dict(os.environ, XLMNIST_DATA=str(mnist_dir))
    r = xlmnist("build", "--out", out, "--rows", 30, "--only", *BOOKS, env=env)
    assert r.returncode == 0, r.stderr
    return out, {name: oracle.recalc(out / name) for name in BOOKS}


@pytest.mark.libreoffice
@pytest.mark.slow
@pytest.mark.parametrize("name,sheet", LESSONS)
def test_lesson_workbooks_export(lessons, tmp_path, name, sheet):
    out, lo = lessons
    module, _ = check_sheet(out / name, sheet, tmp_path, lo[name])
    src = module.read_text()
    if name == "mnist_3v7.xlsx":
        assert "torch.sigmoid" in src or "nn.Sigmoid()" in src
        assert "mnist_loss(" in src
    if name == "mnist.xlsx":
        assert "nn.Softmax(dim=1)" in src and "torch.log(" in src


def torch_models():
    torch.manual_seed(1)
    simple = nn.Sequential(nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, 1), nn.Sigmoid()).double()
    soft = nn.Sequential(nn.Linear(784, 10), nn.Softmax(dim=1)).double()
    titan = nn.Sequential(nn.Linear(9, 3), nn.ReLU(), nn.Linear(3, 1)).double()
    return {"simple": simple, "soft": soft, "titan": titan}


@pytest.mark.libreoffice
@pytest.mark.parametrize(
    "kind,arch", [("simple", "784-8-relu-1-sigmoid"), ("soft", "784-10-softmax"), ("titan", "9-3-relu-1")]
)
def test_import_recalculates_to_torch(tmp_path, kind, arch):
    from xlmnist import data

    model = torch_models()[kind]
    n = 12
    if kind == "titan":
        X, y = data.dataset_arrays("titanic")
        X, y = X[:n, :9], y[:n]
        csv = tmp_path / "rows.csv"
        header = ",".join(data.TITANIC_FEATURES[:9] + ["Survived"])
        np.savetxt(csv, np.column_stack([X, y]), delimiter=",", header=header, comments="", fmt="%.17g")
        src_args = ["--data", csv]
    else:
        X, y = data.dataset_arrays("mnist_3v7")
        X, y = X[:n], y[:n]
        src_args = ["--dataset", "mnist_3v7", "--rows", n]
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    src_args += ["--arch", arch]
    book = tmp_path / "imported.xlsx"
    r = xlmnist("import", path, "-o", book, *src_args)
    assert r.returncode == 0, r.stderr
    with torch.no_grad():
        want = model(torch.tensor(X))
    if kind == "simple":
        loss = torch.where(torch.tensor(y)[:, None] == 1, 1 - want, want).mean()
    elif kind == "soft":
        loss = -torch.log(want[torch.arange(n), torch.tensor(y).long()]).mean()
    else:
        loss = ((torch.tensor(y)[:, None] - want) ** 2).mean()
    lo = oracle.recalc(book)
    assert not oracle.error_cells(lo)
    wb = openpyxl.load_workbook(book)
    names = wb["model"].defined_names
    pred = names["xlmnist_predictions"].attr_text
    close(area_values(lo, pred), want.numpy(), 1e-9)
    close(area_values(lo, "model!B2")[0, 0], float(loss), 1e-9)
    assert names["solver_opt"].attr_text == "model!$B$2" and names["solver_adj"].attr_text.startswith(
        "model!$B$"
    )
    cm = compile_workbook(book)  # the compiler reads it back
    close(float(cm.objective(cm.initial_params())), float(loss), 1e-12)


@pytest.mark.libreoffice
def test_round_trip_workbook_export_import(course, tmp_path):
    """course linear -> model.py -> Model() -> import over the same rows -> LibreOffice: same predictions."""
    book, lo = course
    module = tmp_path / "lin.py"
    assert xlmnist("export", book, "--sheet", "linear", "-o", module).returncode == 0
    mod = load(module)
    saved = tmp_path / "saved.pt"
    model = mod.Model()  # instantiated from the exported file; its layers are an nn.Sequential
    assert isinstance(model.net, nn.Sequential)
    torch.save(model.net.state_dict(), saved)
    arch = ["--arch", f"{model.net[0].in_features}-1"]
    for src, extra in ((module, []), (saved, arch)):
        out = tmp_path / f"rt_{src.suffix[1:]}.xlsx"
        r = xlmnist("import", src, "-o", out, "--dataset", "titanic", "--rows", 712, *extra)
        assert r.returncode == 0, r.stderr
    back = oracle.recalc(tmp_path / "rt_py.xlsx")
    wb = openpyxl.load_workbook(tmp_path / "rt_py.xlsx")
    pred = wb["model"].defined_names["xlmnist_predictions"].attr_text
    close(area_values(back, pred), area_values(lo, "linear!AC4:AC715"), 1e-9)
    close(area_values(back, "model!B2")[0, 0], area_values(lo, "linear!AA7")[0, 0], 1e-9)


def unsupported_book(path: Path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "s"
    ws["B1"] = 0.5
    for r in range(2, 6):
        ws[f"A{r}"] = float(r)
        ws[f"C{r}"] = f"=ROUND(A{r}*$B$1,2)"
        ws[f"D{r}"] = f"=(C{r}-A{r})^2"
    ws["E1"] = "=AVERAGE(D2:D5)"
    ws.defined_names["solver_opt"] = DefinedName("solver_opt", attr_text="s!$E$1")
    ws.defined_names["solver_adj"] = DefinedName("solver_adj", attr_text="s!$B$1")
    wb.save(path)


def test_bad_inputs_one_line_errors(tmp_path):
    conv = tmp_path / "conv.py"
    conv.write_text(
        "from torch import nn\n\n\ndef Model():\n    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())\n"
    )
    r = xlmnist("import", conv, "-o", tmp_path / "x.xlsx", "--dataset", "titanic")
    assert r.returncode != 0 and "Conv2d" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    whole = tmp_path / "whole.pt"
    torch.save(nn.Sequential(nn.Linear(3, 1)), whole)
    r = xlmnist("import", whole, "-o", tmp_path / "x.xlsx", "--dataset", "titanic")
    assert r.returncode == 2 and "state_dict()" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.xlsx").exists()
    state = tmp_path / "state.pt"
    torch.save(nn.Linear(3, 1).state_dict(), state)
    r = xlmnist("import", state, "-o", tmp_path / "x.xlsx", "--dataset", "titanic")
    assert r.returncode != 0 and "--arch" in r.stderr
    book = tmp_path / "round.xlsx"
    unsupported_book(book)
    r = xlmnist("export", book, "-o", tmp_path / "m.py")
    assert r.returncode != 0 and "s!C2" in r.stderr and "ROUND" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "m.py").exists()


@pytest.mark.libreoffice
def test_exported_module_trains_like_torch(course, tmp_path):
    """The exported module is a real nn.Module: gradients flow into its Linear layers."""
    book, _ = course
    module = tmp_path / "nnet.py"
    assert xlmnist("export", book, "--sheet", "nnet", "-o", module).returncode == 0
    mod = load(module)
    x, y = mod.read_data(book)
    model = mod.Model()
    loss = mod.loss_fn(model(x), y)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert math.isclose(loss.item(), 0.14315209641714463, rel_tol=1e-12)
