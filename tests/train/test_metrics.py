"""SheetView on a small built workbook: loss, accuracy, predicted classes, confusion, dead ReLUs, collapse,
each checked against the same numbers computed by hand with numpy."""

from __future__ import annotations

import numpy as np
import openpyxl
import pytest
import torch
from openpyxl.workbook.defined_name import DefinedName

from xlmnist.compile import compile_workbook
from xlmnist.train.metrics import SheetView, collapsed

X = np.array([[2.0, 1.0], [0.1, 2.0], [1.5, 3.0], [0.2, 4.0]])
Y = np.array([1.0, 0.0, 0.0, 0.0])
W = [1.0, -1.0, 0.5]  # hidden unit 1 = relu(x1 * w1), unit 2 = relu(x2 * w2) (dead: x2 > 0), bias


def sheet_numbers(x, y, w):
    h = np.maximum(np.stack([x[:, 0] * w[0], x[:, 1] * w[1]], 1), 0)
    p = 1 / (1 + np.exp(-(h.sum(1) - w[2])))
    correct = ((p > 0.5).astype(float) == y).astype(float)
    return p, ((p - y) ** 2).mean(), correct


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("metrics") / "m.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "m"
    ws["H1"], ws["I1"], ws["J1"] = W
    for i, ((a, b), label) in enumerate(zip(X, Y)):
        r = i + 2
        ws[f"A{r}"], ws[f"B{r}"], ws[f"C{r}"] = a, b, label
        ws[f"D{r}"], ws[f"E{r}"] = f"=A{r}*$H$1", f"=B{r}*$I$1"
        ws[f"F{r}"], ws[f"G{r}"] = f"=IF(D{r}<0,0,D{r})", f"=IF(E{r}<0,0,E{r})"
        ws[f"K{r}"] = f"=1/(1+EXP(-(F{r}+G{r}-$J$1)))"
        ws[f"L{r}"] = f"=(K{r}-C{r})^2"
        ws[f"M{r}"] = f"=IF(IF(K{r}>0.5,1,0)=C{r},1,0)"
    ws["O1"], ws["O2"] = "=AVERAGE(L2:L5)", "=AVERAGE(M2:M5)"
    names = {
        "xlmnist_objective": "m!$O$1",
        "xlmnist_params": "m!$H$1:$J$1",
        "xlmnist_accuracy": "m!$O$2",
        "xlmnist_predictions": "m!$K$2:$K$5",
        "xlmnist_data": "m!$A$2:$C$5",
    }
    for name, text in names.items():
        ws.defined_names[name] = DefinedName(name, attr_text=text)
    wb.save(path)
    return compile_workbook(path)


def params(w):
    return [torch.tensor([w], dtype=torch.float64)]


def test_visible_rows(model):
    view = SheetView(model)
    assert view.relu_ref == "m!F2:G5"
    res = view.measure(params(W), relu=True)
    p, loss, correct = sheet_numbers(X, Y, W)
    assert res["loss"] == pytest.approx(loss, rel=1e-12)
    assert res["accuracy"] == pytest.approx(correct.mean()) and res["accuracy"] == 0.75
    np.testing.assert_array_equal(res["label"].numpy(), Y)
    np.testing.assert_array_equal(res["pred"].numpy(), (p > 0.5).astype(float))
    assert (res["relu_units"], res["dead_relu"]) == (2, 1)
    # rows = true class, columns = predicted class, classes sorted (0, 1)
    np.testing.assert_array_equal(view.confusion(res), [[2, 1], [0, 1]])
    assert collapsed(view, res) is None


def test_other_rows_and_collapse(model):
    x = np.array([[3.0, -1.0], [0.0, 0.5], [0.4, -2.0]])
    y = np.array([1.0, 1.0, 0.0])
    rows = torch.from_numpy(np.concatenate([x, y[:, None]], 1))
    view = SheetView(model)
    res = view.measure(params(W), rows, relu=True)
    p, loss, correct = sheet_numbers(x, y, W)
    assert res["rows"] == 3 and res["loss"] == pytest.approx(loss, rel=1e-12)
    assert res["accuracy"] == pytest.approx(correct.mean())
    np.testing.assert_array_equal(res["pred"].numpy(), (p > 0.5).astype(float))
    assert res["dead_relu"] == 0  # x2 < 0 on two rows: unit 2 is active there
    low = [1.0, -1.0, 100.0]  # every row predicted 0
    res = view.measure(params(low), rows)
    assert collapsed(view, res) == "every one of the 3 rows is predicted as 0, accuracy 33.3%"


def test_3v7_class_order(model):
    view = SheetView(model, "mnist_3v7")
    res = view.measure(params(W))
    assert view.classes(res["label"]) == [1.0, 0.0] and view.class_names([1.0, 0.0]) == ["3", "7"]
    np.testing.assert_array_equal(view.confusion(res), [[1, 0], [1, 2]])
