"""MATCH copied down a block (the ten-digit sheets' predicted digit) is one position per row, as in
LibreOffice; MATCH types 0, 1 and -1; not found is an error value."""

import numpy as np
import openpyxl
import pytest
from openpyxl.workbook.defined_name import DefinedName

from xlmnist import oracle
from xlmnist.compile import compile_workbook


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4))
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "s"
    ws["H1"] = 1.5  # the trainable cell scales every row, so the rows are parameter-dependent
    for i in range(8):
        r = i + 2
        for j in range(4):
            ws.cell(r, j + 1, float(x[i, j]))
            ws.cell(r, j + 10, f"={'ABCD'[j]}{r}*$H$1")  # J:M
        ws[f"N{r}"] = f"=MATCH(MAX(J{r}:M{r}),J{r}:M{r},0)-1"  # arg-max, the predicted class
        ws[f"O{r}"] = f"=MATCH(0,J{r}:M{r},1)"  # last position <= 0 (unsorted: Excel's rule, last hit)
        ws[f"P{r}"] = f"=MATCH(J{r},$J$2:$J$9,0)"  # a row-varying key in a fixed column
    ws["Q1"] = "=SUM(J2:M9)+SUM(N2:N9)"
    for name, text in (("solver_opt", "s!$Q$1"), ("solver_adj", "s!$H$1"), ("solver_typ", "2")):
        ws.defined_names[name] = DefinedName(name, attr_text=text)
    path = tmp_path_factory.mktemp("match") / "m.xlsx"
    wb.save(path)
    return path, x


@pytest.mark.libreoffice
def test_argmax_per_row_matches_numpy_and_libreoffice(book):
    path, x = book
    model = compile_workbook(path)
    got = model.evaluate(["s!N2:N9"], model.initial_params())["s!N2:N9"].reshape(-1).numpy()
    np.testing.assert_array_equal(got, x.argmax(1))
    lo = oracle.recalc(path)["s"]
    np.testing.assert_array_equal(got, [lo[f"N{r}"] for r in range(2, 10)])


def test_row_varying_key_in_fixed_column(book):
    path, _ = book
    model = compile_workbook(path)
    got = model.evaluate(["s!P2:P9"], model.initial_params())["s!P2:P9"].reshape(-1).numpy()
    np.testing.assert_array_equal(got, np.arange(1, 9))
