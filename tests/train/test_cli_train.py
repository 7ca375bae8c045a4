"""`xlmnist eval` / `xlmnist train` end to end: real subprocesses, real workbooks, LibreOffice as the judge."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import openpyxl
import pytest
import torch
from openpyxl.workbook.defined_name import DefinedName
from testenv import COURSE_TITANIC as TITANIC
from testenv import HAVE_COURSE, needs_course

from xlmnist import cli, oracle

ROOT = Path(__file__).resolve().parents[2]
SOLVER = {"linear": 0.14422714930851466, "nnet": 0.14315209641714463, "mmult": 0.14315209641014892}
CELL = {"linear": "AA7", "nnet": "AH1", "mmult": "AA1"}
LSTSQ_OPTIMUM = 0.1442271493073191


def xlmnist(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "xlmnist", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def run_inprocess(capsys, *args) -> dict:
    """The same CLI entry point in this process (no interpreter start-up): for the many small cases."""
    assert cli.main([*map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


@pytest.fixture
def titanic(tmp_path, request) -> Path:
    """A copy of the course workbook; without ../shared the tests' course-style one (other weights)."""
    dst = tmp_path / "titanic.xlsx"
    shutil.copyfile(TITANIC if HAVE_COURSE else request.getfixturevalue("coursebook"), dst)
    return dst


@needs_course
def test_eval_json(titanic):
    before = titanic.read_bytes()
    out = json.loads(xlmnist("eval", titanic, "--sheet", "nnet", "--json").stdout)
    assert out["objective_cell"] == "nnet!AH1"
    assert out["objective"] == pytest.approx(SOLVER["nnet"], rel=1e-12)
    assert out["metrics"] == {} and out["params"] == ["nnet!R4:AA5"]
    text = xlmnist("eval", titanic, "--objective", "linear!AA7", "--params", "linear!R4:AA4").stdout
    assert text.startswith("linear!AA7 = 0.14422714930")
    assert titanic.read_bytes() == before


@pytest.mark.libreoffice
@pytest.mark.slow
@needs_course
def test_train_course_sheets_from_scratch_libreoffice_agrees(titanic):
    """Re-initialised, each course sheet trains to Solver's loss or lower; LibreOffice recalculates it."""
    runs = {}
    for sheet, init in [("linear", "zeros"), ("nnet", "random"), ("mmult", "random")]:
        runs[sheet] = json.loads(
            xlmnist("train", titanic, "--sheet", sheet, "--init", init, "--seed", 0, "--json").stdout
        )
    lin = runs["linear"]
    assert abs(lin["objective"] - LSTSQ_OPTIMUM) / LSTSQ_OPTIMUM < 1e-10
    assert lin["initial_objective"] == pytest.approx(288 / 712, rel=1e-12)  # all-zero weights
    for sheet, out in runs.items():
        assert out["objective_cell"] == f"{sheet}!{CELL[sheet]}"
        assert out["objective"] <= SOLVER[sheet] * (1 + 1e-6)
        assert out["steps"] > 0 and out["seconds"] > 0 and out["device"] == "cpu" and out["metrics"] == {}
        print(
            f"{sheet}: {out['initial_objective']:.6f} -> {out['objective']!r} in {out['steps']} steps, "
            f"{out['seconds']:.2f}s"
        )
    values = oracle.recalc(titanic)
    for sheet, out in runs.items():
        assert values[sheet][CELL[sheet]] == pytest.approx(out["objective"], rel=1e-9), sheet
    wb = openpyxl.load_workbook(titanic)  # still loads
    assert wb["nnet"]["AH1"].value == "=AVERAGE(AH4:AH715)"


@needs_course
def test_train_out_copy_only_param_cells_change(titanic, tmp_path):
    before = titanic.read_bytes()
    out = tmp_path / "trained.xlsx"
    res = json.loads(xlmnist("train", titanic, "--sheet", "nnet", "--out", out, "--json").stdout)
    assert titanic.read_bytes() == before  # the source is untouched
    assert res["book"] == str(out)
    assert res["objective"] <= res["initial_objective"] == pytest.approx(SOLVER["nnet"], rel=1e-12)
    a, b = members(titanic), members(out)
    assert [k for k in a if a[k] != b[k]] == ["xl/workbook.xml", "xl/worksheets/sheet2.xml"]  # nnet
    again = json.loads(xlmnist("eval", out, "--sheet", "nnet", "--json").stdout)
    assert again["objective"] == res["objective"]  # what was written is what was reported


@pytest.mark.parametrize(
    "make, args, message",
    [
        (lambda d: (d / "notes.xlsx", b"just text"), [], "not an xlsx file"),
        pytest.param(
            lambda d: (d / "broken.xlsx", TITANIC.read_bytes()[:50000]),
            [],
            "not an xlsx file",
            marks=needs_course,
        ),
        (lambda d: (d / "missing.xlsx", None), [], "no such workbook"),
        pytest.param(
            lambda d: (d / "t.xlsx", TITANIC.read_bytes()),
            ["--device", "cuda"],
            "CUDA is not available",
            marks=needs_course,
        ),
        pytest.param(
            lambda d: (d / "t.xlsx", TITANIC.read_bytes()),
            ["--sheet", "linear", "--optimizer", "sgd", "--lr", "1e6"],
            r"step \d+: the objective became inf",
            marks=needs_course,
        ),
        pytest.param(
            lambda d: (d / "t.xlsx", TITANIC.read_bytes()),
            ["--sheet", "nosuch"],
            "no sheet named 'nosuch'",
            marks=needs_course,
        ),
    ],
)
def test_bad_input_one_line_error_file_unchanged(tmp_path, make, args, message):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path, content = make(tmp_path)
    if content is not None:
        path.write_bytes(content)
    proc = xlmnist("train", path, *args, "--json", check=False)
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xlmnist: error: "), proc.stderr
    assert re.search(message, lines[0]), lines[0]
    if content is not None:
        assert path.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == ([path.name] if content is not None else [])
    if "--lr" in args:
        assert "lower learning rate" in lines[0]


def toy_book(path: Path, sense: str = "2", target: float | None = None, settings: dict | None = None) -> Path:
    """A Solver-style sheet built with openpyxl: y ~ w*x + b, loss F1, accuracy F2 (xlmnist_accuracy)."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "model"
    ws.append(["x", "y", "pred", "sq err", "params", "", "correct"])
    data = [(0.0, 0), (1.0, 0), (2.0, 0), (3.0, 1), (4.0, 1), (5.0, 1)]
    for i, (x, y) in enumerate(data, start=2):
        ws.append([x, y, f"=$E$2*A{i}+$E$3", f"=(C{i}-B{i})^2", None, None, f"=IF(ABS(C{i}-B{i})<0.5,1,0)"])
    ws["E2"], ws["E3"] = 0.0, 0.0
    ws["F1"] = "=AVERAGE(D2:D7)"
    ws["F2"] = "=AVERAGE(G2:G7)"
    ws["F3"] = "=-F1"
    names = {
        "solver_opt": "model!$F$3" if sense == "1" else "model!$F$1",
        "solver_adj": "model!$E$2:$E$3",
        "solver_typ": sense,
        "xlmnist_accuracy": "model!$F$2",
    }
    if target is not None:
        names["solver_val"] = repr(target)
    for name, ref in names.items():
        ws.defined_names[name] = DefinedName(name, attr_text=ref)
    if settings:
        st = wb.create_sheet("settings")
        st.append(["sheet", "setting", "value", "meaning"])
        for key, value in settings.items():
            st.append(["model", key, value, ""])
    wb.save(path)
    return path


@pytest.mark.libreoffice
@pytest.mark.parametrize(
    "sense, target, expect",
    [("2", None, 0.05714285714285714), ("1", None, -0.05714285714285714), ("3", 0.25, 0.25)],
)
def test_toy_senses_and_accuracy_metric(tmp_path, capsys, sense, target, expect):
    # least squares of y on x over 6 points: residual mean = 0.05714285714285714...
    book = toy_book(tmp_path / "toy.xlsx", sense, target)
    out = run_inprocess(capsys, "train", book)
    assert out["objective"] == pytest.approx(expect, rel=1e-9)
    assert out["objective_cell"] == ("model!F3" if sense == "1" else "model!F1")
    assert set(out["metrics"]) == {"accuracy"}
    if sense != "3":
        assert out["metrics"]["accuracy"] == 1.0  # the fitted line separates 0s from 1s at 0.5
    assert out["initial_objective"] == pytest.approx(0.5 if sense == "2" else -0.5 if sense == "1" else 0.5)
    values = oracle.recalc(book) if sense == "3" else None
    if values:
        assert values["model"]["F1"] == pytest.approx(0.25, rel=1e-9)


def test_settings_sheet_defaults(tmp_path, capsys):
    book = toy_book(tmp_path / "toy.xlsx", settings={"optimizer": "adam", "lr": 0.05, "epochs": 40})
    out = run_inprocess(capsys, "train", book)
    assert (out["optimizer"], out["lr"], out["steps"]) == ("adam", 0.05, 40)
    out = run_inprocess(capsys, "train", book, "--optimizer", "lbfgs", "--epochs", "500")
    assert out["optimizer"] == "lbfgs" and out["objective"] == pytest.approx(0.05714285714285714, rel=1e-9)


def test_ctrl_c_writes_best_so_far(titanic):
    """SIGINT during a long Adam run: exit 0, the best parameters so far are written."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "xlmnist", "train", str(titanic), "--sheet", "nnet", "--optimizer", "adam",
         "--lr", "1e-4", "--epochs", "100000000", "--init", "random"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    started = proc.stderr.readline()  # printed just before training starts
    assert "Ctrl-C stops and keeps the best values" in started
    time.sleep(3.0)  # torch's first optimizer step imports torch._dynamo (~2 s)
    os.kill(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    m = re.match(
        r"nnet!AH1: (\S+) -> (\S+); adam (\d+) steps, .* \(interrupted: best parameters so far\)", stdout
    )
    assert m, stdout
    initial, final, steps = float(m.group(1)), float(m.group(2)), int(m.group(3))
    assert steps >= 0 and final <= initial  # (a very loaded machine may not have finished a step)
    check = json.loads(xlmnist("eval", titanic, "--sheet", "nnet", "--json").stdout)
    assert check["objective"] == final  # the written cells give the reported objective


@pytest.mark.slow
def test_full_dataset_minibatch_training(tmp_path, capsys):
    """A generated MNIST 3-vs-7 sheet (20 visible rows) trained on the whole shipped 3-vs-7 set."""
    xlmnist("build", "--out", tmp_path, "--only", "mnist_3v7.xlsx", "--rows", "20")
    book = tmp_path / "mnist_3v7.xlsx"
    out = run_inprocess(
        capsys, "train", book, "--sheet", "linear", "--dataset", "mnist_3v7", "--optimizer", "sgd",
        "--lr", "1", "--epochs", "1", "--batch-size", "2048",
    )  # fmt: skip
    n = out["dataset_rows"]
    assert out["dataset"] == "mnist_3v7" and n > 10000
    assert out["steps"] == -(-n // 2048)  # one epoch of minibatches
    assert out["dataset_objective"] < out["initial_objective"]
    assert out["objective"] < out["initial_objective"]  # the visible rows improve too
    check = run_inprocess(capsys, "eval", book, "--sheet", "linear")
    assert check["objective"] == out["objective"]


# ---------------------------------------------------------------------------------------- xlmnist step
def step_json(capsys, *args) -> dict:
    assert cli.main(["step", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def sheet_values(path, ref: str) -> torch.Tensor:
    from xlmnist.xlsx.reader import read_workbook
    from xlmnist.xlsx.refs import parse_area

    sheet, area = ref.replace("$", "").split("!")
    r1, c1, r2, c2 = parse_area(area)
    vals = read_workbook(path).sheet(sheet).values
    return torch.tensor(
        [[vals.get((r, c), 0.0) for c in range(c1, c2 + 1)] for r in range(r1, r2 + 1)], dtype=torch.float64
    )


def test_two_steps_equal_two_hand_written_sgd_steps_visible_rows(titanic, capsys):
    """The course's linear sheet (no dataset): each step is one full-batch SGD step on the 712 rows."""
    from xlmnist.data import TITANIC_FEATURES, titanic_table

    table = titanic_table()
    x = torch.tensor(table[TITANIC_FEATURES].to_numpy(float))
    y = torch.tensor(table["Survived"].to_numpy(float))
    w = sheet_values(titanic, "linear!R4:AA4")[0].clone().requires_grad_(True)
    for _ in range(2):
        out = step_json(capsys, titanic, "--sheet", "linear", "--lr", 0.05)
        loss = ((x @ w - y) ** 2).mean()  # SUMPRODUCT(features, weights); (Survived - pred)^2; AVERAGE
        (g,) = torch.autograd.grad(loss, w)
        with torch.no_grad():
            w -= 0.05 * g
        # the course sheet names no xlmnist_data: the step is on its visible rows, whose count it cannot name
        assert out["optimizer"] == "sgd" and out["batch_rows"] is None and out["dataset"] is None
        assert out["step_loss"] == pytest.approx(float(loss.detach()), rel=1e-12)
        assert out["objective"] == pytest.approx(float(((x @ w - y) ** 2).mean()), rel=1e-12)
    torch.testing.assert_close(sheet_values(titanic, "linear!R4:AA4")[0], w.detach(), rtol=1e-12, atol=1e-15)


@pytest.mark.slow
def test_two_steps_equal_two_hand_written_sgd_steps_minibatch(tmp_path, capsys):
    """A generated 3-vs-7 sheet: each step is one SGD step on a seeded minibatch of the 12,396 rows; the
    gradient written beside the weights is that of the objective cell at the new weights."""
    from xlmnist.data import dataset_arrays
    from xlmnist.train.results import sheet_names

    assert cli.main(["build", "--out", str(tmp_path), "--only", "mnist_3v7.xlsx", "--rows", "40"]) == 0
    capsys.readouterr()
    book = tmp_path / "mnist_3v7.xlsx"
    x, y = (torch.from_numpy(a) for a in dataset_arrays("mnist_3v7", "train"))
    visible = sheet_values(book, "data!A2:ADF41")
    w = sheet_values(book, "linear!A3:ADE3")[0].clone().requires_grad_(True)

    def mnist_loss(xs, ys, w):  # the book's: sigmoid, then IF(y=1, 1-p, p), mean
        p = torch.sigmoid(xs @ w[:784] + w[784])
        return torch.where(ys == 1, 1 - p, p).mean()

    for seed in (3, 4):
        out = step_json(capsys, book, "--sheet", "linear", "--seed", seed)
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:256]
        loss = mnist_loss(x[idx], y[idx], w)
        (g,) = torch.autograd.grad(loss, w)
        with torch.no_grad():
            w -= 1.0 * g  # lr 1 from the settings sheet
        assert (out["lr"], out["batch_rows"], out["seed"], out["dataset"]) == (1.0, 256, seed, "mnist_3v7")
        assert out["step_loss"] == pytest.approx(float(loss.detach()), rel=1e-12)
    torch.testing.assert_close(sheet_values(book, "linear!A3:ADE3")[0], w.detach(), rtol=1e-12, atol=1e-15)
    grad_ref = sheet_names(book, "linear")["xlmnist_gradients"]
    (g_visible,) = torch.autograd.grad(mnist_loss(visible[:, :784], visible[:, 785], w), w)
    torch.testing.assert_close(sheet_values(book, grad_ref).reshape(-1), g_visible, rtol=1e-9, atol=1e-15)


def test_stale_dependent_cells_are_named(tmp_path):
    """Issue 12 item 7: after write-back every formula cell that depends on a changed cell has a fresh cached
    value, or the command names it (and why) on stderr and in --json."""
    import json
    import subprocess
    import sys

    import openpyxl
    from openpyxl.workbook.defined_name import DefinedName

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "s"
    ws["A1"], ws["A2"] = 0.5, -0.25
    ws["C1"] = "=(A1*2+A2-1)^2"  # the objective
    ws["D1"] = "=A1*10"  # depends on the trained cells: recomputed
    ws["E1"] = '=IF(A1>0,"pos","neg")'  # text result: cannot be recomputed here
    for name, text in (("solver_opt", "s!$C$1"), ("solver_adj", "s!$A$1:$A$2"), ("solver_typ", "2")):
        ws.defined_names[name] = DefinedName(name, attr_text=text)
    path = tmp_path / "b.xlsx"
    wb.save(path)
    proc = subprocess.run(
        [sys.executable, "-m", "xlmnist", "train", str(path), "--json"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [s["range"] for s in out["stale"]] == ["s!E1"], out["stale"]
    assert "s!E1: not recomputed" in proc.stderr
    from xlmnist.xlsx.reader import read_workbook

    a1 = read_workbook(path).sheets["s"].values[(1, 1)]
    assert read_workbook(path).sheets["s"].values[(1, 4)] == pytest.approx(a1 * 10, rel=1e-12)  # fresh
