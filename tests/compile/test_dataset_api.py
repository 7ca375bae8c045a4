"""The full-dataset API: a compiled sheet's per-row function applied to other rows (``data=``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openpyxl
import pytest
import torch
from testenv import COURSE_TITANIC as COURSE
from testenv import needs_course

from xlmnist.compile import compile_workbook
from xlmnist.errors import WorkbookError
from xlmnist.lessons import models
from xlmnist.lessons.mnist import data_sheet, init_params
from xlmnist.xlsx.book import Book, exact_floats

N = 40  # visible rows of the generated sheets


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    x[rng.random(x.shape) < 0.6] = 0  # mostly background, like MNIST
    return x, rng.integers(0, 2, size=n)


def _features(x: np.ndarray, y: np.ndarray, onehot: bool = False) -> torch.Tensor:
    """The data sheet's columns for these examples: pixel/255, Ones, label (values as written)."""
    cols = [x.reshape(len(x), -1) / 255, np.ones((len(x), 1)), y[:, None].astype(float)]
    return torch.tensor(np.concatenate(cols, 1), dtype=torch.float64)


@pytest.fixture(scope="module")
def book3v7(tmp_path_factory):
    x, y = _images(N, 0)
    p = init_params(0)
    path = tmp_path_factory.mktemp("ds") / "m3v7.xlsx"
    with exact_floats():  # write-only sheets serialise as rows are appended: build inside it
        book = Book()
        data_sheet(book, x, y, onehot=False)
        models.linear_sheet(book, N, p["linear"])
        models.simple_net_sheet(book, N, p["simple_net_w1"], p["simple_net_w2"])
        book.write_settings()
        book.save(path)
    return path


@pytest.fixture(scope="module")
def book10(tmp_path_factory):
    x, _ = _images(N, 1)
    y = np.random.default_rng(2).integers(0, 10, size=N)
    path = tmp_path_factory.mktemp("ds") / "m10.xlsx"
    with exact_floats():
        book = Book()
        data_sheet(book, x, y, onehot=True)
        models.linear10_sheet(book, N, init_params(0)["linear10"])
        book.write_settings()
        book.save(path)
    return path


def _hand(sheet: str, params, X: torch.Tensor) -> torch.Tensor:
    """The same models written by hand in torch over data rows X = [pixels, Ones, label]."""
    xb, y = X[:, :785], X[:, 786 - 1]
    if sheet == "linear":
        p = torch.sigmoid(xb @ params[0].reshape(-1))
    elif sheet == "simple_net":
        w1, w2 = params
        h = torch.relu(xb @ w1)
        p = torch.sigmoid(torch.cat([h, torch.ones(len(X), 1, dtype=X.dtype)], 1) @ w2.reshape(-1))
    else:
        z = xb @ params[0]
        e = torch.exp(z - z.max(1, keepdim=True).values)
        sm = e / e.sum(1, keepdim=True)
        return -torch.log(sm[torch.arange(len(X)), y.long()]).mean()
    return torch.where(y == 1, 1 - p, p).mean()


def _paths(book3v7, book10):
    return {"linear": book3v7, "simple_net": book3v7, "linear10": book10}


@pytest.mark.parametrize("sheet", ["linear", "simple_net", "linear10"])
def test_visible_rows_and_other_rows(book3v7, book10, sheet):
    m = compile_workbook(_paths(book3v7, book10)[sheet], sheet=sheet)
    assert m.data_ref == "data!A2:ADF41"
    params = m.initial_params()
    visible = m.data_rows()
    assert visible.shape == (N, 786)
    # the visible rows as data reproduce the sheet exactly, and match the hand-written model
    assert float(m.objective(params, data=visible)) == float(m.objective(params))
    hand = float(_hand(sheet, params, visible))
    assert float(m.objective(params)) == pytest.approx(hand, rel=1e-12)
    # M other rows (more and fewer than the sheet shows)
    for M, seed in ((257, 5), (7, 6)):
        x, y = _images(M, seed)
        if sheet == "linear10":
            y = np.random.default_rng(seed).integers(0, 10, size=M)
        X = _features(x, y)
        assert float(m.objective(params, data=X)) == pytest.approx(float(_hand(sheet, params, X)), rel=1e-12)


def test_minibatches_give_gradients(book3v7):
    m = compile_workbook(book3v7, sheet="simple_net")
    x, y = _images(512, 9)
    X = _features(x, y)
    params = [p.clone().requires_grad_() for p in m.initial_params()]
    ref = [p.detach().clone().requires_grad_() for p in m.initial_params()]
    for batch in X.split(256):
        loss = m.objective(params, data=batch)
        loss.backward()
        _hand("simple_net", ref, batch).backward()
    for got, want in zip(params, ref):
        assert got.grad is not None and got.grad.abs().sum() > 0
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-10, atol=1e-14)


def test_evaluate_aligned_columns(book3v7):
    m = compile_workbook(book3v7, sheet="linear")
    params = m.initial_params()
    x, y = _images(100, 3)
    X = _features(x, y)
    got = m.evaluate(["linear!C10:C49", "linear!B5"], params, data=X)
    p = torch.sigmoid(X[:, :785] @ params[0].reshape(-1))
    assert got["linear!C10:C49"].shape == (100, 1)
    torch.testing.assert_close(got["linear!C10:C49"][:, 0], p, rtol=1e-12, atol=0)
    assert float(got["linear!B5"].reshape(())) == pytest.approx(float(_hand("linear", params, X)), rel=1e-12)


def test_float32(book3v7):
    m = compile_workbook(book3v7, sheet="linear", dtype=torch.float32)
    (p,) = m.initial_params()
    assert p.dtype == torch.float32
    x, y = _images(64, 4)
    X = _features(x, y).float()
    v = m.objective([p], data=X)
    assert v.dtype == torch.float32
    assert float(v) == pytest.approx(float(_hand("linear", [p.double()], X.double())), rel=1e-5)


def test_bad_data_shape(book3v7):
    m = compile_workbook(book3v7, sheet="linear")
    with pytest.raises(WorkbookError, match=r"data!A2:ADF41: data must be \[rows, 786\]"):
        m.objective(m.initial_params(), data=torch.zeros(5, 10, dtype=torch.float64))


@needs_course
def test_titanic_linear_with_data_range():
    """The course sheet has no xlmnist_data; data= names its rows (features included, as values)."""
    m = compile_workbook(COURSE, sheet="linear", data="linear!A4:P715")
    assert m.data_ref == "linear!A4:P715"
    params = m.initial_params()
    X = m.data_rows()
    assert X.shape == (712, 16)
    saved = 0.14422714930851466
    assert float(m.objective(params)) == pytest.approx(saved, rel=1e-12)
    assert float(m.objective(params, data=X)) == pytest.approx(saved, rel=1e-12)
    rows = X[torch.randperm(712, generator=torch.Generator().manual_seed(0))[:300]]
    hand = ((rows[:, 6:16] @ params[0].reshape(-1) - rows[:, 0]) ** 2).mean()
    assert float(m.objective(params, data=rows)) == pytest.approx(float(hand), rel=1e-12)
    without = compile_workbook(COURSE, sheet="linear")
    assert without.data_ref is None
    with pytest.raises(WorkbookError, match="no data range"):
        without.objective(params, data=X)


def _small_sheet(path: Path, formulas: dict[str, str]) -> Path:
    """A data sheet of 6 rows x (2 features, Ones, label) and a model sheet with the given cells."""
    wb = openpyxl.Workbook()
    data = wb.active
    data.title = "data"
    data.append(["a", "b", "Ones", "label"])
    for r in range(6):
        data.append([r / 6, (r % 3) / 3, 1, r % 2])
    ws = wb.create_sheet("m")
    ws["A1"], ws["B1"], ws["C1"] = 0.1, -0.2, 0.3
    for r in range(3, 9):
        ws[f"A{r}"] = f"=SUMPRODUCT(data!$A{r - 1}:$C{r - 1},$A$1:$C$1)"
        ws[f"B{r}"] = f"=(A{r}-data!$D{r - 1})^2"
    ws["E1"] = "=AVERAGE(B3:B8)"
    for ref, text in formulas.items():
        ws[ref] = text
    wb.save(path)
    return path


@pytest.mark.parametrize(
    "formulas,cell",
    [
        ({"B5": "=(A5-data!$D$2)^2"}, "m!B3:B4"),  # a specific data row, absolutely: breaks the column
        ({"E1": "=AVERAGE(B3:B6)"}, "m!E1"),  # aggregates only part of the rows
        ({"E1": "=AVERAGE(B3:B8)+data!$A$2"}, "m!E1"),  # one data cell, absolutely
    ],
)
def test_not_row_polymorphic(tmp_path, formulas, cell):
    path = _small_sheet(tmp_path / "s.xlsx", formulas)
    ok = compile_workbook(
        _small_sheet(tmp_path / "ok.xlsx", {}),
        sheet="m",
        objective="m!E1",
        params="m!A1:C1",
        data="data!A2:D7",
    )
    X = ok.data_rows()
    hand = ((X[:, :3] @ ok.initial_params()[0].reshape(-1) - X[:, 3]) ** 2).mean()
    assert float(ok.objective(ok.initial_params(), data=X[:4])) == pytest.approx(
        float(((X[:4, :3] @ ok.initial_params()[0].reshape(-1) - X[:4, 3]) ** 2).mean()), rel=1e-12
    )
    assert float(ok.objective(ok.initial_params())) == pytest.approx(float(hand), rel=1e-12)
    with pytest.raises(WorkbookError, match=cell):
        compile_workbook(path, sheet="m", objective="m!E1", params="m!A1:C1", data="data!A2:D7")


def test_model_reading_the_first_rows_of_a_longer_derived_column(tmp_path):
    """Issue 10: the data sheet's one-hot columns run over all 40 rows, the model (and its xlmnist_data)
    only over the first 15: the copied block is split at the data rows' edges, so its first part follows
    the data rows and the rest stays a constant (was: "a formula over data-aligned rows must use all")."""
    from xlmnist.lessons.mlp import mlp_sheet

    x, _ = _images(N, 7)
    y = np.random.default_rng(8).integers(0, 10, size=N)
    p = init_params(0)
    path = tmp_path / "mlp.xlsx"
    with exact_floats():
        book = Book()
        data_sheet(book, x, y, onehot=True)
        mlp_sheet(book, 15, p["mlp_w1"], p["mlp_w2"])
        book.write_settings()
        book.save(path)
    m = compile_workbook(path, sheet="mlp")
    assert m.data_ref == "data!A2:ADF16"
    params = m.initial_params()
    X = _features(x, y)

    def hand(X):
        w1, w2 = params
        h = torch.relu(X[:, :785] @ w1)
        z = torch.cat([h, torch.ones(len(X), 1, dtype=X.dtype)], 1) @ w2
        return torch.nn.functional.cross_entropy(z, X[:, 785].long())

    assert float(m.objective(params)) == pytest.approx(float(hand(X[:15])), rel=1e-12)
    assert float(m.objective(params, data=X)) == pytest.approx(float(hand(X)), rel=1e-12)
