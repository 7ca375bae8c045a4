"""Convolution sheets: 2-D copied blocks (a window over a grid times a kernel, pooling over windows) lowered
to conv2d / max_pool2d / avg_pool2d (xlmnist.compile.conv), checked against the block closures, a
hand-written torch model and LibreOffice."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import openpyxl
import pytest
import torch
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.formula import ArrayFormula

from xlmnist import oracle
from xlmnist.compile import compile_workbook
from xlmnist.formula.graph import Graph
from xlmnist.xlsx.reader import read_workbook

sys.path.insert(0, str(Path(__file__).resolve().parent))
import conv_book  # noqa: E402

EDGE = "edge"


def add_edge_sheet(path) -> None:
    """Sheet ``edge``: the other window forms on an 8 x 8 grid with empty cells: SUM(kernel*window) as
    per-cell array formulas (the kernel first), a second conv layer over the first (SUMPRODUCT), MIN,
    AVERAGE, SUM and MAX over moving windows, windows of one row or column, a layer over two channels,
    and a loss of their squares."""
    wb = openpyxl.load_workbook(path)
    ws = wb.create_sheet(EDGE)
    rng = np.random.default_rng(1)
    for i in range(8):
        for j in range(8):
            if (i + 2 * j) % 7:  # some cells stay empty (0 in a product)
                ws.cell(2 + i, 2 + j, float(rng.normal()))
    for i in range(2):
        for j in range(2):
            ws.cell(2 + i, 12 + j, float(rng.normal()))  # L2:M3, a 2 x 2 kernel
    for i in range(3):
        for j in range(3):
            ws.cell(5 + i, 12 + j, float(rng.normal()))  # L5:N7, a 3 x 3 kernel
    L = openpyxl.utils.get_column_letter

    def fill(r0, c0, n, m, text):
        for i in range(n):
            for j in range(m):
                ws.cell(r0 + i, c0 + j, text(i, j))

    def win(r, c, h, w):
        return f"{L(c)}{r}:{L(c + w - 1)}{r + h - 1}"

    for i in range(7):  # A: B12:H18
        for j in range(7):
            cell = f"{L(2 + j)}{12 + i}"
            ws[cell] = ArrayFormula(cell, f"=SUM($L$2:$M$3*{win(2 + i, 2 + j, 2, 2)})")
    fill(21, 2, 5, 5, lambda i, j: f"=SUMPRODUCT({win(12 + i, 2 + j, 3, 3)},$L$5:$N$7)")  # B: B21:F25
    fill(28, 2, 4, 4, lambda i, j: f"=MIN({win(21 + i, 2 + j, 2, 2)})")  # C: B28:E31
    fill(28, 8, 6, 6, lambda i, j: f"=AVERAGE({win(12 + i, 2 + j, 2, 2)})")  # D: H28:M33
    fill(36, 2, 5, 5, lambda i, j: f"=SUM({win(12 + i, 2 + j, 3, 3)})")  # E: B36:F40
    fill(36, 8, 4, 4, lambda i, j: f"=MAX({win(21 + i, 2 + j, 2, 2)})")  # F: H36:K39
    for j in range(3):
        ws.cell(9, 12 + j, float(rng.normal()))  # L9:N9, a 1 x 3 kernel
    fill(44, 2, 1, 5, lambda i, j: f"=SUMPRODUCT({win(12, 2 + j, 1, 3)},$L$9:$N$9)")  # G: one row, B44:F44
    fill(46, 2, 5, 1, lambda i, j: f"=MAX({win(12 + i, 2, 3, 2)})")  # H: one column, B46:B50
    two = "=MAX(0,SUMPRODUCT({},$L$5:$N$7)+SUMPRODUCT({},$L$2:$M$3))"  # a layer over two channels
    fill(46, 8, 5, 5, lambda i, j: two.format(win(12 + i, 2 + j, 3, 3), win(28 + i, 8 + j, 2, 2)))  # H46:L50
    parts = ["B28:E31", "H28:M33", "B36:F40", "H36:K39", "B44:F44", "B46:B50", "H46:L50"]
    ws["P1"] = "=" + "+".join(f"SUMPRODUCT({a},{a})" for a in parts)
    for name, text in (
        ("solver_opt", f"{EDGE}!$P$1"),
        ("solver_adj", f"{EDGE}!$L$2:$M$3,{EDGE}!$L$5:$N$7,{EDGE}!$L$9:$N$9"),
    ):
        ws.defined_names[name] = DefinedName(name, attr_text=text, hidden=True)
    wb.save(path)


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    d = tmp_path_factory.mktemp("conv")
    array = conv_book.build(d / "conv_array.xlsx", "array")
    add_edge_sheet(array)
    plain = conv_book.build(d / "conv_plain.xlsx", "plain")
    return {"array": array, "plain": plain, "stacked": conv_book.build(d / "conv_st.xlsx", stacked=True)}


def _closures(path, sheet, monkeypatch):
    monkeypatch.setenv("XLMNIST_LOWER", "0")
    m = compile_workbook(path, sheet=sheet)
    monkeypatch.delenv("XLMNIST_LOWER")
    assert m.program_kind == "closures"
    return m


def _value_grad(model, params=None):
    ps = [p.clone().requires_grad_(True) for p in (params or model.initial_params())]
    v = model.objective(ps)
    v.backward()
    return float(v.detach()), torch.cat([p.grad.reshape(-1) for p in ps])


def test_copied_one_cell_array_formulas_are_one_block(books):
    """4,056 per-cell {=...} formulas of the six conv layers: six blocks, not 4,056."""
    g = Graph(read_workbook(books["array"]))
    conv = [b for b in g.blocks if b.sheet == "conv"]
    assert len(conv) < 30
    big = [b for b in conv if (b.R, b.C) == (conv_book.OUT, conv_book.OUT)]
    assert len(big) == conv_book.K and not any(b.array for b in big)


@pytest.mark.parametrize("form", ["array", "plain", "stacked"])
def test_conv_sheet_is_one_conv2d_and_matches_torch(books, form, monkeypatch):
    m = compile_workbook(books[form])
    assert m.program_kind == "lowered" and m._prog.fallback == []
    src = m._prog.source
    assert src.count("conv2d(") == 1 and src.count("max_pool2d(") == 1, src  # six kernels, one op each
    assert form != "stacked" or "conv2d(k1[None, None], p0.reshape(6, 1, 3, 3))" in src, src
    assert "S" not in {ln.split("=")[-1].strip()[:1] for ln in src.splitlines()}  # no closure calls
    value, grad = _value_grad(m)
    loss, k0 = conv_book.torch_model()
    k = k0.clone().requires_grad_(True)
    want = loss(k)
    want.backward()
    assert math.isclose(value, float(want.detach()), rel_tol=1e-12)
    assert torch.allclose(grad, k.grad.reshape(-1), rtol=1e-10, atol=1e-12)
    ref = _closures(books[form], None, monkeypatch)
    rv, rg = _value_grad(ref)
    assert math.isclose(value, rv, rel_tol=1e-12)
    assert torch.allclose(grad, rg, rtol=1e-10, atol=1e-12)


def test_dense_readout_is_batched_too(tmp_path, monkeypatch):
    """A readout per kernel (SUMPRODUCT of its pooled map and fixed weights) after the one conv2d: one
    row-wise dot over the six channels, not six dot products."""
    path = conv_book.build(tmp_path / "dense.xlsx", dense=True)
    m = compile_workbook(path)
    src = m._prog.source
    assert src.count("conv2d(") == 1 and "torch.dot" not in src and ".flatten(1)" in src, src
    ref = _closures(path, None, monkeypatch)
    (value, grad), (rv, rg) = _value_grad(m), _value_grad(ref)
    assert math.isclose(value, rv, rel_tol=1e-12)
    assert torch.allclose(grad, rg, rtol=1e-10, atol=1e-12)


def test_conv_sheet_trains(books):
    m = compile_workbook(books["array"])
    ps = [p.clone().requires_grad_(True) for p in m.initial_params()]
    opt = torch.optim.LBFGS(ps, max_iter=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        v = m.objective(ps)
        v.backward()
        return v

    start = float(m.objective(m.initial_params()))
    opt.step(closure)
    assert float(m.objective(ps).detach()) < 0.5 * start


def test_other_window_forms_match_the_closures(books, monkeypatch):
    path = books["array"]
    m = compile_workbook(path, sheet=EDGE)
    assert m.program_kind == "lowered" and m._prog.fallback == [], m._prog.notes
    src = m._prog.source
    assert src.count("conv2d(") == 4 and "max_pool2d(-" in src and src.count("avg_pool2d(") == 2, src
    assert src.count("max_pool2d(") == 3, src
    ref = _closures(path, EDGE, monkeypatch)
    rng = np.random.default_rng(2)
    for params in (None, [torch.tensor(rng.normal(size=p.shape)) for p in m.initial_params()]):
        value, grad = _value_grad(m, params)
        rv, rg = _value_grad(ref, params)
        assert math.isclose(value, rv, rel_tol=1e-12)
        assert torch.allclose(grad, rg, rtol=1e-10, atol=1e-12)
    f32 = m.recompile(dtype=torch.float32)  # the same program, retargeted
    assert f32.program_kind == "lowered"
    want = float(m.objective(m.initial_params()))
    assert math.isclose(float(f32.objective(f32.initial_params())), want, rel_tol=1e-5)
    blocks = ["edge!B12:H18", "edge!B21:F25", "edge!B28:E31", "edge!H28:M33", "edge!B36:F40", "edge!H36:K39"]
    blocks += ["edge!B44:F44", "edge!B46:B50", "edge!H46:L50"]
    got, want = m.evaluate(blocks, m.initial_params()), ref.evaluate(blocks, m.initial_params())
    for r in blocks:
        assert torch.allclose(got[r], want[r], rtol=1e-12, atol=1e-14), r


@pytest.mark.libreoffice
def test_libreoffice_agrees(books):
    """One recalculation of the array-form book (the conv sheet and the edge sheet) against the model."""
    path = books["array"]
    lo = oracle.recalc(path)
    for sheet, cells in (
        ("conv", [conv_book.LOSS, "B32", "Z57", f"AD{conv_book.conv_row(5) + 3}"]),
        (EDGE, ["P1", "B12", "H18", "F25", "E31", "M33", "F40", "K39", "F44", "B50", "L50"]),
    ):
        m = compile_workbook(path, sheet=sheet)
        got = m.evaluate([f"{sheet}!{c}" for c in cells], m.initial_params())
        for c in cells:
            assert math.isclose(
                float(got[f"{sheet}!{c}"].reshape(())), lo[sheet][c], rel_tol=1e-9, abs_tol=1e-12
            ), (
                sheet,
                c,
            )
