"""2 x 2 MAX pooling with stride 2 after a convolution (issue #12 item 9), the two ways a course sheet
writes it: the formula in every other cell (``=MAX(B12:C13)`` in K12, ``=MAX(D12:E13)`` in M12, ...: each
cell its own block) and a contiguous block whose windows step by two (``=MAX(OFFSET($B$12,
2*(ROW()-ROW($K$22)), 2*(COLUMN()-COLUMN($K$22)), 2, 2))``). Both lower to one ``max_pool2d`` with stride
2; value and kernel gradient as a hand-written ``conv2d``/``relu``/``max_pool2d(2, 2)``; every cell as
LibreOffice computes it (one recalculation for the module)."""

import math

import numpy as np
import openpyxl
import pytest
import torch
import torch.nn.functional as F
from openpyxl.utils import get_column_letter as L
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.formula import ArrayFormula

from xlmnist import oracle
from xlmnist.compile import compile_workbook

N = 10  # input size
K = 3  # kernel size
OUT = N - K + 1  # conv output: 8 x 8 (B12:I19)
POOL = OUT // 2  # pooled: 4 x 4
OFFSET = "=MAX(OFFSET($B$12,2*(ROW()-ROW($K$22)),2*(COLUMN()-COLUMN($K$22)),2,2))"


def _input() -> np.ndarray:
    y, x = np.mgrid[0:N, 0:N]
    return np.round(np.sin(0.7 * y + 0.3) * np.cos(0.45 * x - 0.2) + 0.1 * x, 4)


def _kernel() -> np.ndarray:
    return np.array([[0.31, -0.52, 0.17], [0.44, 0.12, -0.27], [-0.18, 0.36, 0.23]])


def build(path):
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    add_sheet(wb)
    wb.save(path)
    return path


def add_sheet(wb):
    """Sheet ``pool``: the input B2:K11 (constants), a 3 x 3 kernel M2:O4 (trainable), the conv layer
    B12:I19 ``=MAX(0,SUMPRODUCT(B2:D4,$M$2:$O$4))``; pooled every other cell on K12:Q18 (objective A1,
    the sum of squares) and by OFFSET on K22:N25 (objective A2); a pooling whose offsets are not a
    stride (rows 0, 1, 3, 5 down) on K28:N31 (objective A3); the same conv layer as per-cell array
    formulas ``{=MAX(0,SUM(B2:D4*$M$2:$O$4))}`` on B34:I41, pooled with stride 1 on K34:Q40 (A4)."""
    ws = wb.create_sheet("pool")
    x, k = _input(), _kernel()
    for i in range(N):
        for j in range(N):
            ws.cell(2 + i, 2 + j, float(x[i, j]))
    for i in range(K):
        for j in range(K):
            ws.cell(2 + i, 13 + j, float(k[i, j]))
    for i in range(OUT):
        for j in range(OUT):
            win = f"{L(2 + j)}{2 + i}:{L(2 + j + K - 1)}{2 + i + K - 1}"
            ws.cell(12 + i, 2 + j, f"=MAX(0,SUMPRODUCT({win},$M$2:$O$4))")
    for i in range(POOL):
        for j in range(POOL):
            win = f"{L(2 + 2 * j)}{12 + 2 * i}:{L(3 + 2 * j)}{13 + 2 * i}"
            ws.cell(12 + 2 * i, 11 + 2 * j, f"=MAX({win})")  # K12, M12, O12, Q12, K14, ...
            ws.cell(22 + i, 11 + j, OFFSET)
            ws.cell(
                28 + i, 11 + j, "=MAX(OFFSET($B$12,INT((ROW()-ROW($K$28))*5/3),COLUMN()-COLUMN($K$28),2,2))"
            )
    for i in range(OUT):
        for j in range(OUT):
            cell = f"{L(2 + j)}{34 + i}"
            win = f"{L(2 + j)}{2 + i}:{L(2 + j + K - 1)}{2 + i + K - 1}"
            ws[cell] = ArrayFormula(cell, f"=MAX(0,SUM({win}*$M$2:$O$4))")
            if i < OUT - 1 and j < OUT - 1:
                ws.cell(34 + i, 11 + j, f"=MAX({L(2 + j)}{34 + i}:{L(3 + j)}{35 + i})")
    ws["A1"] = "=SUMSQ(K12:Q18)"
    ws["A2"] = "=SUMSQ(K22:N25)"
    ws["A3"] = "=SUMSQ(K28:N31)"
    ws["A4"] = "=SUMSQ(K34:Q40)"
    for name, text in (("solver_opt", "pool!$A$1"), ("solver_adj", "pool!$M$2:$O$4"), ("solver_typ", "2")):
        ws.defined_names[name] = DefinedName(name, attr_text=text)


def _torch(kernel: torch.Tensor) -> torch.Tensor:
    x = torch.tensor(_input())[None, None]
    conv = torch.relu(F.conv2d(x, kernel[None, None]))
    return (F.max_pool2d(conv, 2, 2) ** 2).sum()


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    return build(tmp_path_factory.mktemp("pool") / "pool.xlsx")


@pytest.mark.parametrize("objective", ["pool!A1", "pool!A2"])
def test_stride_two_pooling_is_one_max_pool2d(book, objective, monkeypatch, capsys):
    monkeypatch.setenv("XLMNIST_DEBUG", "3")
    m = compile_workbook(book, objective=objective)
    err = capsys.readouterr().err
    src = m._prog.source
    assert m.program_kind == "lowered" and src.count("max_pool2d(") == 1, src
    assert "(2, 2), (2, 2))" in src, src  # a 2 x 2 window, stride 2
    assert ("pool lattice: 16 single-cell amax blocks" if objective.endswith("A1") else "stride 2x2") in err
    fallbacks = [ln for ln in err.splitlines() if "fallback:" in ln]
    assert all("SUMSQ" in ln for ln in fallbacks), fallbacks  # only the loss runs its closure
    kernel = m.initial_params()[0].clone().requires_grad_(True)
    loss = m.objective([kernel])
    loss.backward()
    k = torch.tensor(_kernel(), requires_grad=True)
    want = _torch(k)
    want.backward()
    assert math.isclose(float(loss.detach()), float(want.detach()), rel_tol=1e-12)
    assert torch.allclose(kernel.grad, k.grad, rtol=1e-12, atol=1e-14)
    monkeypatch.setenv("XLMNIST_LOWER", "0")  # the block closures: the same
    ref = compile_workbook(book, objective=objective)
    kernel.grad = None
    ref.objective([kernel]).backward()
    assert torch.allclose(kernel.grad, k.grad, rtol=1e-12, atol=1e-14)


def test_offsets_that_are_not_a_stride_fall_back_announced(book, monkeypatch, capsys):
    monkeypatch.setenv("XLMNIST_DEBUG", "3")
    m = compile_workbook(book, objective="pool!A3")
    err = capsys.readouterr().err
    assert "fallback: pool!K28:N31 runs its compiled closure (_OFFSET)" in err, err
    x = torch.tensor(_input())
    conv = torch.relu(F.conv2d(x[None, None], torch.tensor(_kernel())[None, None]))[0, 0]
    want = sum(float(conv[a : a + 2, j : j + 2].max()) ** 2 for a in (0, 1, 3, 5) for j in range(POOL))
    assert math.isclose(float(m.objective(m.initial_params())), want, rel_tol=1e-12)


@pytest.mark.libreoffice
def test_libreoffice_agrees(book):
    lo = oracle.recalc(book)["pool"]
    m = compile_workbook(book)
    every_other = [f"{L(11 + 2 * j)}{12 + 2 * i}" for i in range(POOL) for j in range(POOL)]
    refs = ["A1", "A2", "A3", "A4", "B12:I19", "K22:N25", "K28:N31", "B34:I41", "K34:Q40"] + every_other
    got = m.evaluate([f"pool!{r}" for r in refs], m.initial_params())
    for r in refs:
        if ":" in r:
            a, b = r.split(":")
            c1, r1 = openpyxl.utils.cell.coordinate_from_string(a)
            c2, r2 = openpyxl.utils.cell.coordinate_from_string(b)
            i1, i2 = openpyxl.utils.column_index_from_string(c1), openpyxl.utils.column_index_from_string(c2)
            want = [[lo[f"{L(c)}{row}"] for c in range(i1, i2 + 1)] for row in range(r1, r2 + 1)]
        else:
            want = [[lo[r]]]
        np.testing.assert_allclose(got[f"pool!{r}"].numpy(), want, rtol=1e-12, atol=1e-14, err_msg=r)
