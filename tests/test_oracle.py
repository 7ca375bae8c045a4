"""LibreOffice really recalculates (forced-recalc profile), and reading its output works."""

import math
import shutil

import numpy as np
import openpyxl
import pytest
from testenv import COURSE_TITANIC as COURSE
from testenv import needs_course

from xlmnist import oracle

pytestmark = pytest.mark.libreoffice


@pytest.fixture(scope="module")
def course_values(course_titanic):
    return oracle.recalc(COURSE)


def test_soffice_is_installed():
    assert oracle.available(), "CI must install libreoffice-calc-nogui"


@pytest.mark.parametrize(
    "sheet,cell,excel",
    [
        ("linear", "AA7", 0.14422714930851466),
        ("nnet", "AH1", 0.14315209641714463),
        ("mmult", "AA1", 0.14315209641014892),
        ("mmult", "V4", -1.5320926051003998),
        ("nnet", "AC715", -6.1865400733744247e-2),
    ],
)
def test_recalc_matches_excel_saved_values(course_values, sheet, cell, excel):
    assert course_values[sheet][cell] == pytest.approx(excel, rel=1e-13)


def test_no_error_cells_in_course_workbook(course_values):
    assert oracle.error_cells(course_values) == []


@needs_course
def test_recalc_is_a_real_recalculation(tmp_path):
    """Change the linear weights; the loss LibreOffice reports must be the numpy loss, not the cache."""
    book = tmp_path / "t.xlsx"
    shutil.copyfile(COURSE, book)
    wb = openpyxl.load_workbook(book)
    ws = wb["linear"]
    rng = np.random.default_rng(0)
    w = rng.normal(size=10)
    for j, col in enumerate("RSTUVWXYZ"):
        ws[f"{col}4"] = float(w[j])
    ws["AA4"] = float(w[9])
    wb.save(book)

    values = oracle.recalc(book)["linear"]
    # the data columns G..P (SibSp..Ones) and the label A, as LibreOffice computed them
    cols = ["G", "H", "I", "J", "K", "L", "M", "N", "O", "P"]
    x = np.array([[values[f"{c}{r}"] for c in cols] for r in range(4, 716)])
    y = np.array([values[f"A{r}"] for r in range(4, 716)])
    expected = float(np.mean((x @ w - y) ** 2))
    assert values["AA7"] == pytest.approx(expected, rel=1e-9)
    assert not math.isclose(values["AA7"], 0.14422714930851466, rel_tol=1e-3)


def test_error_cells_are_reported(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "s"
    ws["A1"] = 0
    ws["B1"] = "=1/A1"
    ws["C1"] = "=NA()"
    ws["D1"] = "=A1+1"
    book = tmp_path / "e.xlsx"
    wb.save(book)
    values = oracle.recalc(book)
    assert sorted(oracle.error_cells(values)) == ["s!B1", "s!C1"]
    assert values["s"]["D1"] == 1.0


def test_missing_workbook_is_a_clear_error(tmp_path):
    with pytest.raises(oracle.XlmnistError, match="no such workbook"):
        oracle.recalc(tmp_path / "nope.xlsx")
