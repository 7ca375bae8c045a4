"""Lookups with cell-dependent positions are gathers (issue #12 item 4): a collaborative-filtering sheet
with OFFSET/MATCH and INDEX/MATCH rows trains its embedding tables (gradients into the looked-up rows
only, as hand-written torch gives them); VLOOKUP/HLOOKUP/XLOOKUP/MATCH values, #N/A included. One
LibreOffice recalculation for the whole workbook (LibreOffice 7.4 has no XLOOKUP: hand-written values)."""

import math

import numpy as np
import openpyxl
import pytest
import torch
from openpyxl.workbook.defined_name import DefinedName

from xlmnist import oracle
from xlmnist.compile import compile_workbook
from xlmnist.errors import FormulaError

NU, NM, K, N = 6, 5, 3, 14
OFFSET_F = (
    '=IF(C{r}="",0,SUMPRODUCT(OFFSET($G$2:$I$2,MATCH(A{r},$F$2:$F$20,0)-1,0),'
    "OFFSET($L$2:$N$2,MATCH(B{r},$K$2:$K$20,0)-1,0)))"
)
INDEX_F = (
    '=IF(C{r}="",0,SUMPRODUCT(INDEX($G$2:$I$20,MATCH(A{r},$F$2:$F$20,0),0),'
    "INDEX($L$2:$N$20,MATCH(B{r},$K$2:$K$20,0),0)))"
)


def _names(ws, sheet, opt, adj):
    for name, text in (("solver_opt", f"{sheet}!{opt}"), ("solver_adj", adj), ("solver_typ", "2")):
        ws.defined_names[name] = DefinedName(name, attr_text=text)


def _cf_sheet(wb, title, formula, rng):
    ws = wb.create_sheet(title)
    U, M = rng.normal(size=(NU, K)) * 0.5, rng.normal(size=(NM, K)) * 0.5
    uids, mids = [10 + 3 * i for i in range(NU)], [f"m{i}" for i in range(NM)]
    ws["A1"], ws["B1"], ws["C1"], ws["F1"], ws["K1"] = "user", "movie", "rating", "uid", "mid"
    for i in range(NU):
        ws.cell(2 + i, 6, uids[i])
        for j in range(K):
            ws.cell(2 + i, 7 + j, float(U[i, j]))
    for i in range(NM):
        ws.cell(2 + i, 11, mids[i])
        for j in range(K):
            ws.cell(2 + i, 12 + j, float(M[i, j]))
    rows = []
    for r in range(2, 2 + N):
        u, m = int(rng.integers(0, NU - 1)), int(rng.integers(0, NM))  # the last user is never rated
        rating = None if r % 5 == 0 else float(rng.integers(1, 6))
        ws.cell(r, 1, uids[u])
        ws.cell(r, 2, mids[m])
        if rating is not None:
            ws.cell(r, 3, rating)
        ws[f"D{r}"] = formula.format(r=r)
        ws[f"E{r}"] = f'=IF(C{r}="",0,(D{r}-C{r})^2)'
        rows.append((u, m, rating))
    ws["P1"] = f"=SUM(E2:E{N + 1})/COUNT(C2:C{N + 1})"
    _names(ws, title, "$P$1", f"{title}!$G$2:$I${NU + 1},{title}!$L$2:$N${NM + 1}")
    return U, M, rows


LOOKUPS = {  # cell: (formula, expected)  -- ids a..e in A2:A6, B = 1..5, C = B*L1 (trainable L1 = 2)
    "E2": ('=VLOOKUP("c",A2:C6,3,FALSE)', 6.0),
    "E3": ('=VLOOKUP("zz",A2:C6,3,FALSE)', math.nan),  # #N/A
    "E4": ("=VLOOKUP(3.5,B2:C6,2)", 6.0),  # approximate: the last <= 3.5
    "E5": ("=VLOOKUP(0.5,B2:C6,2)", math.nan),  # below the first: #N/A
    "E6": ('=HLOOKUP("q",G1:J3,3,FALSE)', 20.0),
    "E7": ('=INDEX(C2:C6,MATCH("D",A2:A6,0))', 8.0),  # case-insensitive
    "E8": ('=MATCH("b*",A2:A6,0)', 2.0),  # wildcard
    "E9": ("=INDEX(C2:C6,MATCH(4,B2:B6,0))*2", 16.0),
}
XLOOKUPS = {
    "F2": ('=_xlfn.XLOOKUP("e",A2:A6,C2:C6)', 10.0),
    "F3": ('=_xlfn.XLOOKUP("zz",A2:A6,C2:C6,-1)', -1.0),
    "F4": ('=_xlfn.XLOOKUP("zz",A2:A6,C2:C6)', math.nan),
    "F5": ("=_xlfn.XLOOKUP(3.5,B2:B6,C2:C6,0,-1)", 6.0),  # exact or next smaller
    "F6": ("=_xlfn.XLOOKUP(3.5,B2:B6,C2:C6,0,1)", 8.0),  # exact or next larger
}


def _lookup_sheet(wb):
    ws = wb.create_sheet("lk")
    for i, key in enumerate("abcde"):
        ws[f"A{i + 2}"], ws[f"B{i + 2}"], ws[f"C{i + 2}"] = key, float(i + 1), f"=B{i + 2}*$L$1"
    ws["L1"] = 2.0
    for j, key in enumerate("pqrs"):  # a horizontal table G1:J3 for HLOOKUP, row 3 trainable-dependent
        ws.cell(1, 7 + j, key)
        ws.cell(2, 7 + j, float(j))
        ws.cell(3, 7 + j, f"={'GHIJ'[j]}2*10*$L$1")
    for cell, (formula, _) in {**LOOKUPS, **XLOOKUPS}.items():
        ws[cell] = formula
    ws["H5"] = "=E2+E4+E6+E7+E9+F2+F3+F5+F6"
    _names(ws, "lk", "$H$5", "lk!$L$1")


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    rng = np.random.default_rng(0)
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    cf = {"cf": _cf_sheet(wb, "cf", OFFSET_F, rng), "cfi": _cf_sheet(wb, "cfi", INDEX_F, rng)}
    _lookup_sheet(wb)
    path = tmp_path_factory.mktemp("lookup") / "lookup.xlsx"
    wb.save(path)
    return path, cf


def _torch_loss(U, M, rows):
    Ut = torch.tensor(U, requires_grad=True)
    Mt = torch.tensor(M, requires_grad=True)
    rated = [(u, m, r) for u, m, r in rows if r is not None]
    loss = sum((Ut[u] @ Mt[m] - r) ** 2 for u, m, r in rated) / len(rated)
    loss.backward()
    return loss, Ut.grad, Mt.grad


@pytest.mark.parametrize("sheet", ["cf", "cfi"])
def test_embedding_sheet_value_and_gradient(book, sheet):
    path, cf = book
    U, M, rows = cf[sheet]
    model = compile_workbook(path, sheet=sheet)
    params = [p.requires_grad_() for p in model.initial_params()]
    loss = model.objective(params)
    loss.backward()
    want, gu, gm = _torch_loss(U, M, rows)
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-13)
    torch.testing.assert_close(params[0].grad, gu, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(params[1].grad, gm, rtol=1e-12, atol=1e-15)
    assert (params[0].grad[NU - 1] == 0).all()  # the user nobody rated gets no gradient
    # the closures (no generated program) agree, and training lowers the loss
    for _ in range(30):
        params = [p.detach().requires_grad_() for p in params]
        loss = model.objective(params)
        loss.backward()
        params = [p - 0.2 * p.grad for p in params]
    assert float(model.objective(params).detach()) < 0.5 * float(want.detach())


def test_lookup_values(book):
    path, _ = book
    model = compile_workbook(path, sheet="lk")
    cells = {**LOOKUPS, **XLOOKUPS}
    got = model.evaluate([f"lk!{c}" for c in cells], model.initial_params())
    for cell, (_, want) in cells.items():
        have = float(got[f"lk!{cell}"].reshape(()))
        assert have == pytest.approx(want, nan_ok=True), cell
    params = [p.requires_grad_() for p in model.initial_params()]
    model.objective(params).backward()  # d/dL1: the looked-up B's (x10 in HLOOKUP's row, x2 in E9)
    assert float(params[0].grad) == pytest.approx(3 + 3 + 10 + 4 + 8 + 5 + 0 + 3 + 4)


@pytest.mark.libreoffice
def test_against_libreoffice(book):
    path, _ = book
    lo = oracle.recalc(path)
    for sheet in ("cf", "cfi"):
        model = compile_workbook(path, sheet=sheet)
        got = model.evaluate([f"{sheet}!D2:D{N + 1}", f"{sheet}!P1"], model.initial_params())
        want = [lo[sheet][f"D{r}"] for r in range(2, N + 2)]
        np.testing.assert_allclose(
            got[f"{sheet}!D2:D{N + 1}"].reshape(-1).numpy(), want, rtol=1e-12, atol=1e-15
        )
        assert float(got[f"{sheet}!P1"].reshape(())) == pytest.approx(lo[sheet]["P1"], rel=1e-12)
    model = compile_workbook(path, sheet="lk")
    got = model.evaluate([f"lk!{c}" for c in LOOKUPS], model.initial_params())
    for cell in LOOKUPS:
        have, want = float(got[f"lk!{cell}"].reshape(())), lo["lk"][cell]
        if isinstance(want, float):
            assert have == pytest.approx(want, rel=1e-12), cell
        else:  # an error value (#N/A)
            assert math.isnan(have) and str(want) == "#N/A", (cell, want)


def test_offset_relative_base_with_cell_dependent_offset_is_refused(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "s"
    for r in range(1, 5):
        ws[f"A{r}"], ws[f"B{r}"], ws[f"C{r}"] = float(r), 1.0, f"=OFFSET(A{r},B{r}-1,0)*$E$1"
    ws["E1"], ws["E2"] = 1.0, "=SUM(C1:C4)"
    _names(ws, "s", "$E$2", "s!$E$1")
    wb.save(tmp_path / "o.xlsx")
    with pytest.raises(
        FormulaError, match=r"s!C1: OFFSET with a cell-dependent offset needs an absolute base"
    ):
        compile_workbook(tmp_path / "o.xlsx")
