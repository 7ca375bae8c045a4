"""The course-style titanic.xlsx the tests build (tests/coursebook.py): the course's constructs in any clone.

Excel Tables and structured references (``[#This Row]``, a column range, a whole column, another sheet's
table), an MMULT array formula, ``IF(x<0,0,x)`` ReLUs and Solver's saved names are read, compiled, trained and
written back; numpy and LibreOffice check the numbers. Where ``../shared`` has the course's own workbook, the
built one is checked against it cell for cell (formulas, data, names) and gives Solver's losses for Solver's
weights.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import openpyxl
import pytest
import torch
from testenv import COURSE_TITANIC, ROOT, needs_course

from xlmnist import data, oracle
from xlmnist.compile import compile_workbook
from xlmnist.xlsx.reader import read_workbook
from xlmnist.xlsx.writeback import write_values

SHEETS = {"linear": "linear!AA7", "nnet": "nnet!AH1", "mmult": "mmult!AA1"}
PARAMS = {"linear": "linear!R4:AA4", "nnet": "nnet!R4:AA5", "mmult": "mmult!S4:T13"}
SOLVER = {"linear": 0.14422714930851466, "nnet": 0.14315209641714463, "mmult": 0.14315209641014892}
LSTSQ_OPTIMUM = 0.1442271493073191  # least squares of Survived on the 10 features (the course README)


def features() -> tuple[np.ndarray, np.ndarray]:
    t = data.titanic_table()
    return t[data.TITANIC_FEATURES].to_numpy(float), t["Survived"].to_numpy(float)


def numpy_loss(sheet: str, w: np.ndarray) -> float:
    x, y = features()
    if sheet == "linear":
        return float(np.mean((x @ w.reshape(-1) - y) ** 2))
    hidden = np.maximum(x @ (w.T if sheet == "nnet" else w), 0)  # nnet: a row per unit; mmult: a column
    return float(np.mean((y - hidden.sum(1)) ** 2))


def weights(path, sheet: str) -> np.ndarray:
    ws = openpyxl.load_workbook(path)[sheet]
    return np.array([[c.value for c in row] for row in ws[PARAMS[sheet].split("!")[1]]], dtype=float)


def test_reader_sees_tables_structured_refs_array_and_solver_names(coursebook):
    wb = read_workbook(coursebook)
    assert wb.order == ["mmult", "nnet", "linear", "all_rows"]
    t13 = wb.tables["TABLE13"]
    assert (t13.sheet, t13.ref, t13.header_rows, t13.totals_rows) == ("linear", (3, 1, 715, 16), 1, 0)
    assert t13.columns == data.TITANIC_COLUMNS
    assert wb.tables["TABLE134"].sheet == "nnet" and wb.tables["TABLE1342"].sheet == "mmult"
    nnet = wb.sheets["nnet"]
    assert nnet.formula((10, 31)) == "IF(AC10<0,0,AC10)"
    assert nnet.formula((4, 29)) == "SUMPRODUCT(Table13[[#This Row],[SibSp]:[Ones]],$R$4:$AA$4)"
    assert wb.sheets["linear"].formula((1, 5)) == "MAX(Table13[Age])"
    assert wb.sheets["mmult"].arrays[(4, 22)] == (4, 22, 715, 23)
    assert wb.sheets["mmult"].formula((4, 22)) == "MMULT(G4:P715,S4:T13)"
    for sheet, objective in SHEETS.items():
        assert wb.name(sheet, "solver_opt").replace("$", "") == objective
        assert wb.name(sheet, "solver_adj").replace("$", "") == PARAMS[sheet]
        assert wb.name(sheet, "solver_typ") == "2"


@pytest.mark.parametrize("sheet", list(SHEETS))
def test_compiled_objective_is_the_numpy_model(coursebook, sheet):
    model = compile_workbook(coursebook, sheet=sheet)
    assert model.objective_ref == SHEETS[sheet] and model.param_refs == [PARAMS[sheet]]
    got = float(model.objective(model.initial_params()))
    assert got == pytest.approx(numpy_loss(sheet, weights(coursebook, sheet)), rel=1e-12)
    w = [torch.zeros_like(p) for p in model.initial_params()]
    assert float(model.objective(w)) == pytest.approx(288 / 712, rel=1e-12)  # mean(y^2)


def test_train_reaches_the_least_squares_optimum_and_writes_back(coursebook, tmp_path):
    import subprocess

    book = tmp_path / "titanic.xlsx"
    shutil.copyfile(coursebook, book)
    proc = subprocess.run(
        [sys.executable, "-m", "xlmnist", "train", str(book), "--sheet", "linear", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert abs(out["objective"] - LSTSQ_OPTIMUM) / LSTSQ_OPTIMUM < 1e-9
    w = weights(book, "linear")
    assert numpy_loss("linear", w) == pytest.approx(out["objective"], rel=1e-12)  # the written weights
    assert weights(book, "nnet").tolist() == weights(coursebook, "nnet").tolist()  # other sheets untouched


@pytest.mark.libreoffice
def test_libreoffice_computes_the_same_losses(coursebook):
    values = oracle.recalc(coursebook)
    assert oracle.error_cells(values) == []
    for sheet, ref in SHEETS.items():
        cell = ref.split("!")[1]
        assert values[sheet][cell] == pytest.approx(numpy_loss(sheet, weights(coursebook, sheet)), rel=1e-12)
    assert values["linear"]["E1"] == 80  # MAX(Table13[Age])


@needs_course
@pytest.mark.parametrize("sheet", ["linear", "nnet", "mmult"])
def test_mirrors_the_course_workbook(coursebook, sheet):
    """Same data, headers, formulas (cell for cell, rows 1-3 and 4-715) and Solver names as the course."""
    ours = openpyxl.load_workbook(coursebook)[sheet]
    course = openpyxl.load_workbook(COURSE_TITANIC)[sheet]
    params = {c.coordinate for row in course[PARAMS[sheet].split("!")[1]] for c in row}

    def text(v):
        return (v.ref, v.text) if hasattr(v, "text") else v

    for r in range(1, 716):
        for c in range(1, 35):
            a, b = course.cell(r, c), ours.cell(r, c)
            if a.coordinate in params or (
                sheet == "mmult" and (c > 31 or (c in (22, 23) and r >= 4 and (r, c) != (4, 22)))
            ):
                continue  # weights; the course's MMULT demo block and cached array values
            assert text(b.value) == text(a.value), (sheet, a.coordinate)
    rc = read_workbook(COURSE_TITANIC)
    ro = read_workbook(coursebook)
    for name in ("solver_opt", "solver_adj", "solver_typ", "solver_neg", "solver_eng"):
        assert ro.name(sheet, name) == rc.name(sheet, name), name


@needs_course
@pytest.mark.parametrize("sheet", ["linear", "nnet", "mmult"])
def test_solver_weights_give_solver_losses(coursebook, tmp_path, sheet):
    book = tmp_path / "titanic.xlsx"
    write_values(coursebook, {PARAMS[sheet]: weights(COURSE_TITANIC, sheet)}, out=book)
    model = compile_workbook(book, sheet=sheet)
    assert float(model.objective(model.initial_params())) == pytest.approx(SOLVER[sheet], rel=1e-12)
