"""Each Excel function against LibreOffice and a hand-written torch expression, value and gradient.

One workbook holds every case (one formula per row of column G) over three trainable cells
``A1:A3`` = (a, b, c) and constant inputs; LibreOffice recalculates it once. ``HAND`` gives each
formula's value as torch code over ``p = [a, b, c]``; the compiled cell's gradient with respect to
``A1:A3`` must equal the hand-written expression's.
"""

from __future__ import annotations

import math
import re

import openpyxl
import pytest
import torch

from xlmnist import oracle
from xlmnist.compile import compile_workbook
from xlmnist.errors import FormulaError

P0 = (0.7, -1.3, 2.2)  # A1:A3
# C1:C6: a mixed range (number, number, text, empty, boolean, number); D1:D4 numbers; H1:J1 a row
CONST = {"C1": 1, "C2": 2, "C3": "x", "C5": True, "C6": 4, "D1": 3, "D2": 1, "D3": 4, "D4": 1.5}
CONST |= {"F1": "#N/A", "H1": 1, "I1": 2, "J1": 3, "E1": "apple", "E2": "Banana", "E3": "cherry"}
D = torch.tensor([3.0, 1.0, 4.0], dtype=torch.float64)  # D1:D3


def _pdf(z):
    return torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _cov(x, y):
    return ((x - x.mean()) * (y - y.mean())).sum()


def _devsq(v):
    return ((v - v.mean()) ** 2).sum()


def _ndtri(q):
    return torch.special.ndtri(torch.tensor(q, dtype=torch.float64))


def _var(p, unbiased):
    return torch.var(p, correction=1 if unbiased else 0)


# (formula, hand(p) -> value); a, b, c = p[0], p[1], p[2]
HAND = [
    # sums and products
    ("=SUM(A1:A3)", lambda p: p.sum()),
    ("=SUM(A1:A3,C1:C6)", lambda p: p.sum() + 7),  # C1:C6 adds its numbers only
    ("=SUMSQ(A1:A3)", lambda p: (p**2).sum()),
    ("=SUMPRODUCT(A1:A3,D1:D3)", lambda p: (p * D).sum()),
    ("=SUMPRODUCT(TRANSPOSE(A1:A3),H1:J1)", lambda p: p[0] * 1 + p[1] * 2 + p[2] * 3),
    ("=SUMX2MY2(A1:A3,D1:D3)", lambda p: (p**2 - D**2).sum()),
    ("=SUMXMY2(A1:A3,D1:D3)", lambda p: ((p - D) ** 2).sum()),
    ("=PRODUCT(A1:A3,2)", lambda p: p.prod() * 2),
    ("=PRODUCT(C1:C6)*A1", lambda p: 8 * p[0]),
    # counts and averages
    ("=AVERAGE(A1:A3,C1:C6)", lambda p: (p.sum() + 7) / 6),
    ("=AVERAGEA(C1:C6)*A1", lambda p: (1 + 2 + 0 + 1 + 4) / 5 * p[0]),  # text 0, TRUE 1, empty skipped
    ("=COUNT(C1:C6)*A1", lambda p: 3 * p[0]),
    ("=COUNTA(C1:C6)*A1", lambda p: 5 * p[0]),
    ("=COUNTBLANK(C1:C6)*A1", lambda p: 1 * p[0]),
    # criteria
    ('=COUNTIF(A1:A3,">0")', lambda p: (p > 0).sum().double()),
    ('=COUNTIF(C1:C6,"X")', lambda p: torch.tensor(1.0)),  # case-insensitive
    ('=COUNTIF(E1:E3,"*an*")', lambda p: torch.tensor(1.0)),  # wildcards
    ('=COUNTIF(C1:C6,"<>2")', lambda p: torch.tensor(5.0)),  # "<>" counts empty and text cells
    ("=COUNTIF(D1:D4,1)*A1", lambda p: 1 * p[0]),
    ('=COUNTIF(E1:E3,">b")*A1', lambda p: 2 * p[0]),  # text order, case-insensitive: Banana, cherry
    ('=SUMIF(E1:E3,"a*",A1:A3)', lambda p: p[0]),
    ('=SUMIF(E1:E3,"<>banana",A1:A3)', lambda p: p[0] + p[2]),
    ('=COUNTIFS(A1:A3,">0",D1:D3,">2")', lambda p: torch.tensor(2.0)),
    ('=SUMIF(A1:A3,">0")', lambda p: p[0] + p[2]),
    ('=SUMIF(D1:D3,">2",A1:A3)', lambda p: p[0] + p[2]),
    ('=SUMIFS(A1:A3,D1:D3,">=1",A1:A3,"<1")', lambda p: p[0] + p[1]),
    ('=AVERAGEIF(A1:A3,"<1")', lambda p: (p[0] + p[1]) / 2),
    ('=AVERAGEIFS(A1:A3,D1:D3,">1")', lambda p: (p[0] + p[2]) / 2),
    ('=_xlfn.MINIFS(A1:A3,D1:D3,">1")', lambda p: torch.minimum(p[0], p[2])),
    ('=_xlfn.MAXIFS(A1:A3,D1:D3,"<4")', lambda p: torch.maximum(p[0], p[1])),
    # order statistics
    ("=MIN(A1:A3,C1:C6)", lambda p: p.min()),
    ("=MAX(A1:A3)", lambda p: p.max()),
    ("=MAX(A1:A3,C1:C6)+A1", lambda p: 4 + p[0]),
    ("=LARGE(A1:A3,2)", lambda p: torch.sort(p).values[1]),
    ("=SMALL(A1:A3,1)", lambda p: p.min()),
    ("=MEDIAN(A1:A3)", lambda p: p.median()),
    ("=MEDIAN(A1:A3,D1)", lambda p: (p[0] + p[2]) / 2),
    # spread
    ("=_xlfn.VAR.P(A1:A3)", lambda p: _var(p, False)),
    ("=_xlfn.VAR.S(A1:A3)", lambda p: _var(p, True)),
    ("=VAR(A1:A3)", lambda p: _var(p, True)),
    ("=VARP(A1:A3)", lambda p: _var(p, False)),
    ("=_xlfn.STDEV.P(A1:A3)", lambda p: _var(p, False).sqrt()),
    ("=_xlfn.STDEV.S(A1:A3)", lambda p: _var(p, True).sqrt()),
    ("=STDEV(A1:A3)", lambda p: _var(p, True).sqrt()),
    ("=_xlfn.VAR.S(A1:A3,C1:C6)", lambda p: _var(torch.cat([p, p.new_tensor([1.0, 2, 4])]), True)),
    # elementwise math
    ("=ABS(A2)", lambda p: p[1].abs()),
    ("=SIGN(A2)*A1", lambda p: p[1].sign() * p[0]),
    ("=SQRT(A3)", lambda p: p[2].sqrt()),
    ("=EXP(A1)", lambda p: p[0].exp()),
    ("=LN(A3)", lambda p: p[2].log()),
    ("=LOG(A3)", lambda p: p[2].log10()),
    ("=LOG(A3,2)", lambda p: p[2].log2()),
    ("=LOG(8,A3)", lambda p: math.log(8) / p[2].log()),
    ("=LOG10(A3)", lambda p: p[2].log10()),
    ("=POWER(A3,A1)", lambda p: p[2] ** p[0]),
    ("=MOD(A3,A1)", lambda p: p[2] - p[0] * torch.floor(p[2] / p[0])),
    ("=MOD(A2,A1)", lambda p: p[1] - p[0] * torch.floor(p[1] / p[0])),  # the divisor's sign
    ("=ROUND(A3*A1,1)+A1", lambda p: torch.tensor(1.5) + p[0]),
    ("=ROUND(A2,0)", lambda p: torch.tensor(-1.0)),
    ("=ROUNDUP(A2,0)", lambda p: torch.tensor(-2.0)),
    ("=ROUNDDOWN(A3,0)", lambda p: torch.tensor(2.0)),
    ("=INT(A2)", lambda p: torch.tensor(-2.0)),
    ("=TRUNC(A2)", lambda p: torch.tensor(-1.0)),
    ("=TRUNC(A3*A1,1)", lambda p: torch.tensor(1.5)),
    ("=FLOOR(A3,0.5)", lambda p: torch.tensor(2.0)),
    ("=FLOOR(A2,0.5)", lambda p: torch.tensor(-1.5)),
    ("=CEILING(A3,0.5)", lambda p: torch.tensor(2.5)),
    ("=CEILING(A2,0.5)", lambda p: torch.tensor(-1.0)),
    ("=PI()*A1", lambda p: math.pi * p[0]),
    ("=TANH(A1)", lambda p: p[0].tanh()),
    ("=SINH(A2)", lambda p: p[1].sinh()),
    ("=COSH(A2)", lambda p: p[1].cosh()),
    ("=ASIN(A1)", lambda p: p[0].asin()),
    ("=ACOS(A1)", lambda p: p[0].acos()),
    ("=ATAN2(A1,A2)", lambda p: torch.atan2(p[1], p[0])),  # (x, y): Excel's order
    ("=ASINH(A2)", lambda p: p[1].asinh()),
    ("=ACOSH(A3)", lambda p: p[2].acosh()),
    ("=ATANH(A1)", lambda p: p[0].atanh()),
    ("=DEGREES(A1)+RADIANS(A2)", lambda p: p[0] * (180 / math.pi) + p[1] * (math.pi / 180)),
    ("=SQRTPI(A3)", lambda p: (p[2] * math.pi).sqrt()),
    ("=(QUOTIENT(D3,D1)+QUOTIENT(-7,2))*A1", lambda p: (1 - 3) * p[0]),
    ("=(EVEN(A3)+ODD(A2)+ODD(0)+EVEN(-1))*A1", lambda p: (4 - 3 + 1 - 2) * p[0]),
    ("=SUMX2PY2(A1:A3,D1:D3)", lambda p: (p**2 + D**2).sum()),
    # the normal distribution
    ("=_xlfn.NORM.DIST(A1,A2,A3,TRUE)", lambda p: torch.special.ndtr((p[0] - p[1]) / p[2])),
    ("=_xlfn.NORM.DIST(A1,A2,A3,FALSE)", lambda p: _pdf((p[0] - p[1]) / p[2]) / p[2]),
    ("=NORMDIST(A2,0,1,1)", lambda p: torch.special.ndtr(p[1])),
    ("=_xlfn.NORM.S.DIST(A2,FALSE)", lambda p: _pdf(p[1])),
    (
        "=_xlfn.NORM.S.DIST(A1,TRUE)+NORMSDIST(A3)",
        lambda p: torch.special.ndtr(p[0]) + torch.special.ndtr(p[2]),
    ),
    (
        "=_xlfn.NORM.INV(0.3,A1,A3)",
        lambda p: p[0] + p[2] * torch.special.ndtri(torch.tensor(0.3, dtype=torch.float64)),
    ),
    (
        "=NORMINV(0.9,A2,A3)",
        lambda p: p[1] + p[2] * torch.special.ndtri(torch.tensor(0.9, dtype=torch.float64)),
    ),
    (
        "=(_xlfn.NORM.S.INV(0.025)+NORMSINV(0.975))*A1+NORMSINV(0.6)",
        lambda p: _ndtri(0.025) * p[0] + _ndtri(0.975) * p[0] + _ndtri(0.6),
    ),
    ("=STANDARDIZE(A1,A2,A3)", lambda p: (p[0] - p[1]) / p[2]),
    # two ranges side by side (y, x)
    ("=_xlfn.COVARIANCE.P(A1:A3,D1:D3)", lambda p: _cov(p, D) / 3),
    ("=COVAR(D1:D3,A1:A3)", lambda p: _cov(D, p) / 3),
    ("=_xlfn.COVARIANCE.S(A1:A3,D1:D3)", lambda p: _cov(p, D) / 2),
    ("=CORREL(A1:A3,D1:D3)", lambda p: _cov(p, D) / (_cov(p, p) * _cov(D, D)).sqrt()),
    ("=PEARSON(D1:D3,A1:A3)", lambda p: _cov(p, D) / (_cov(p, p) * _cov(D, D)).sqrt()),
    ("=RSQ(A1:A3,D1:D3)", lambda p: _cov(p, D) ** 2 / (_cov(p, p) * _cov(D, D))),
    ("=SLOPE(A1:A3,D1:D3)", lambda p: _cov(p, D) / _cov(D, D)),
    ("=INTERCEPT(A1:A3,D1:D3)", lambda p: p.mean() - _cov(p, D) / _cov(D, D) * D.mean()),
    ("=_xlfn.FORECAST.LINEAR(5,A1:A3,D1:D3)", lambda p: p.mean() + _cov(p, D) / _cov(D, D) * (5 - D.mean())),
    ("=FORECAST(A1,D1:D3,A1:A3)", lambda p: D.mean() + _cov(p, D) / _cov(p, p) * (p[0] - p.mean())),
    ("=SLOPE(A1:A3,C1:C3)", lambda p: p[1] - p[0]),  # the pair with text (C3) is skipped: (1, a), (2, b)
    ("=DEVSQ(A1:A3,C1:C6)", lambda p: _devsq(torch.cat([p, p.new_tensor([1.0, 2, 4])]))),
    ("=SIN(A1)+COS(A2)+TAN(A1)+ATAN(A3)", lambda p: p[0].sin() + p[1].cos() + p[0].tan() + p[2].atan()),
    # logic
    ("=IF(A1>0,A1*2,A2)", lambda p: 2 * p[0]),
    ("=IF(A2>0,A1,A2*A3)", lambda p: p[1] * p[2]),
    ("=_xlfn.IFS(A2>0,A1,A3>0,A3*3)", lambda p: 3 * p[2]),
    ("=IFERROR(LN(A2),A1)", lambda p: p[0]),
    ("=IFERROR(LN(A3),A1)", lambda p: p[2].log()),
    ("=_xlfn.IFNA(MATCH(5,D1:D4,0),A1)", lambda p: p[0]),
    ("=_xlfn.IFNA(A3/A1,A2)", lambda p: p[2] / p[0]),
    ("=AND(A1>0,A3>0)*A1", lambda p: p[0]),
    ("=AND(C1:C6)*A1", lambda p: p[0]),  # numbers and TRUE are true; text and empty are skipped
    ("=OR(A2>0,C5)*A1", lambda p: p[0]),
    ("=NOT(A2>0)*A3", lambda p: p[2]),
    ("=_xlfn.XOR(A1>0,A3>0)+A1", lambda p: p[0]),
    ("=_xlfn.XOR(A1>0,A2>0)*A3", lambda p: p[2]),
    ("=_xlfn.SWITCH(D2,1,A1,2,A2,A3)", lambda p: p[0]),
    ("=_xlfn.SWITCH(D1,1,A1,A3)", lambda p: p[2]),
    ("=CHOOSE(2,A1,A2,A3)", lambda p: p[1]),
    ("=CHOOSE(D2+1,A1,A2,A3)", lambda p: p[1]),
    # information and shape
    ("=ISBLANK(C4)*A1+ISBLANK(C3)*A2", lambda p: p[0]),
    ("=ISNUMBER(C3)*A1+ISNUMBER(A3)*A2", lambda p: p[1]),
    ("=ISERROR(LN(A2))*A1+ISERROR(C3)*A2", lambda p: p[0]),
    ("=ISTEXT(C3)*A1+ISTEXT(C1)*A2+ISLOGICAL(C5)*A3+ISLOGICAL(A1>0)*A1", lambda p: 2 * p[0] + p[2]),
    ("=ROWS(A1:A3)*A1+COLUMNS(C1:E2)*A2", lambda p: 3 * p[0] + 3 * p[1]),
    ("=ROW(D3)*A1+COLUMN(E1)*A2", lambda p: 3 * p[0] + 5 * p[1]),  # ROW()/COLUMN(): test_row_and_column
    ("=SUM(ROW(A2:A4))*A1", lambda p: 9 * p[0]),
    # a boolean typed as an argument counts, one in a referenced cell (C5) does not
    ("=SUM(TRUE,1)*A1+SUM(A1>0,C5)*A2", lambda p: 2 * p[0] + p[1]),
    ("=AVERAGE(TRUE,A3)", lambda p: (1 + p[2]) / 2),
    # empty cells (C4) in formulas: the collaborative-filtering pattern IF(rating="",0,...)
    ('=IF(C4="",0,A1*2)+IF(C1="",0,A1)', lambda p: p[0]),
    ("=C4*A1+A1", lambda p: p[0]),
]


# LibreOffice has no boolean type: TRUE in a range is the number 1 to SUM, AVERAGE, COUNT, VAR... where
# Excel skips it ("logical values ... in the array or reference are ignored", the SUM/COUNT/AVERAGE
# documentation). These follow Excel; the hand-written expressions above check them.
LO_BOOLEANS_ARE_NUMBERS = {
    "=SUM(TRUE,1)*A1+SUM(A1>0,C5)*A2",
    "=SUM(A1:A3,C1:C6)",
    "=AVERAGE(A1:A3,C1:C6)",
    "=COUNT(C1:C6)*A1",
    "=_xlfn.VAR.S(A1:A3,C1:C6)",
    "=DEVSQ(A1:A3,C1:C6)",  # (Excel: "logical values ... are ignored"; LibreOffice counts C5's TRUE)
}


# Excel's empty-cell rules (xlmnist.compile.values): C4 is empty inside the used range, Z99 is absent
# from the sheet's XML, C7 is formatted but empty. (formula, Excel's value; TRUE = 1)
EMPTY_RULES = [
    ('=C4=""', 1),  # "" against text
    ("=C4=0", 1),  # 0 against a number
    ('=""=C4', 1),
    ('=C4<>""', 0),
    ('=C4<"a"', 1),
    ("=C4=FALSE", 1),  # FALSE against a boolean
    ('=Z99=""', 1),
    ("=Z99=0", 1),
    ('=C7=""', 1),
    ("=C7=0", 1),
    ('=IF(C4="",5,6)', 5),
    ("=C4+1", 1),  # 0 in arithmetic
    ("=Z99*2+1", 1),
    ("=IF(C4,1,2)", 2),  # FALSE in logic
    ("=NOT(C7)", 1),
    ("=AVERAGE(C3:C4,D1)", 3),  # skipped by the range functions
    ("=COUNT(C3:C4)", 0),
    ("=MIN(C3:C4)", 0),
    ("=MAX(C3:C4,-1)", -1),
    ("=SUM(C4,Z99)", 0),
    ("=SUMPRODUCT(C1:C4,D1:D4)", 5),  # 0 in SUMPRODUCT (and text too)
    ("=IFERROR(SUM(MMULT(C1:C4,D1)),-1)", -1),  # MMULT over an empty or text cell: #VALUE!
    ("=SUM(MMULT(D1:D2,H1:I1))", 12),
    ("=ISBLANK(C4)", 1),
    ("=ISBLANK(Z99)", 1),
    ("=ISBLANK(C7)", 1),
    ("=ISBLANK(C3)", 0),
    ("=ISBLANK(Q1)", 0),  # Q1 is =C4: a formula over an empty cell is 0, not empty
    ("=Q1*2+1", 1),
    ("=COUNTBLANK(C1:C7)", 2),
    ('=COUNTIF(C1:C7,"")', 2),
    ('=COUNTIF(C1:C7,"<>")', 5),
]


ERROR = "error"
# Errors and types (F1 holds #N/A): a range function over an error cell is the error (COUNT, COUNTA
# and IFERROR look at it); a boolean is not a number to a comparison (Excel: "=TRUE=1" is FALSE,
# booleans sort after numbers and text). (formula, Excel's value)
TYPE_RULES = [
    ("=SUM(C1:C2,F1)", ERROR),
    ("=AVERAGE(F1:F2)", ERROR),
    ("=MAX(C1,F1)", ERROR),
    ("=SUMPRODUCT(C1:C2,F1:F2)", ERROR),
    ("=COUNT(C1:C2,F1)", 2),
    ("=COUNTA(F1:F2)", 1),
    ("=IFERROR(SUM(F1),7)", 7),
    ("=ISERROR(F1)", 1),
    ("=SUMXMY2(C1:C4,D1:D4)", 5),  # pairs with an empty or text cell are skipped
    ("=SUMX2MY2(C1:C4,D1:D4)", -5),
    ("=TRUE=1", 0),
    ("=C5=1", 0),
    ("=C5>100", 1),
    ("=C5=TRUE", 1),
    ("=(A1>0)=TRUE", 1),
    ("=(A1>0)=1", 0),
    ("=SUM(TRUE,1)", 2),  # a boolean typed as an argument counts
    ("=SUM(C5,1)", 1),  # one in a referenced cell does not
    ("=COUNT(TRUE,C5,1)", 2),
    ("=SUM({TRUE,1})", 1),  # nor one in an array constant
    ("=Q1", 0),  # =C4 of an empty C4
]
# Where LibreOffice differs from Excel's documented result: it has no boolean type (TRUE is the number
# 1), so it answers TRUE to these comparisons; its SUMXMY2 (not SUMX2MY2) gives #VALUE! for a text cell
# where Excel's documentation says "text, logical values, or empty cells ... are ignored".
LO_DIFFERS = {
    "=TRUE=1": 1,
    "=C5=1": 1,
    "=C5>100": 0,
    "=(A1>0)=1": 1,
    "=SUMXMY2(C1:C4,D1:D4)": ERROR,
    "=SUM(C5,1)": 2,
    "=COUNT(TRUE,C5,1)": 3,
    "=SUM({TRUE,1})": 2,
}


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "S"
    for k, x in enumerate(P0):
        ws.cell(k + 1, 1, x)
    ws["B1"] = "=A1+A2+A3"
    for ref, v in CONST.items():
        ws[ref] = v
    for k, (f, _) in enumerate(HAND):
        ws[f"G{k + 1}"] = f
    for k, (f, _) in enumerate(EMPTY_RULES):
        ws[f"K{k + 1}"] = f
    for k, (f, _) in enumerate(TYPE_RULES):
        ws[f"M{k + 1}"] = f
    for r in (1, 2, 3):  # copied down: a criterion per row
        ws[f"O{r}"] = f'=SUMIF($D$1:$D$3,">"&D{r},$A$1:$A$3)+COUNTIF($D$1:$D$4,D{r})*A{r}'
    ws["C7"].font = openpyxl.styles.Font(bold=True)  # formatted, no value
    ws["Q1"] = "=C4"
    _collaborative_filtering(wb.create_sheet("CF"))
    _blocks(wb.create_sheet("B"))
    path = tmp_path_factory.mktemp("functions") / "functions.xlsx"
    wb.save(path)
    return path


@pytest.fixture(scope="module")
def model(book):
    return compile_workbook(book, objective="S!B1", params="S!A1:A3")


@pytest.fixture(scope="module")
def recalculated(book):
    return oracle.recalc(book)


@pytest.fixture(scope="module")
def libreoffice(recalculated):
    return recalculated["S"]


def _compiled(model, ref):
    (p0,) = model.initial_params()
    p = p0.detach().clone().requires_grad_()
    out = model.evaluate([ref], [p])[ref].reshape(())
    (g,) = torch.autograd.grad(out, p, allow_unused=True) if out.requires_grad else (None,)
    return out.detach(), (torch.zeros(3, dtype=p.dtype) if g is None else g.reshape(-1))


def _hand(fn):
    p = torch.tensor(P0, dtype=torch.float64, requires_grad=True)
    out = torch.as_tensor(fn(p), dtype=torch.float64)
    g = torch.autograd.grad(out, p, allow_unused=True)[0] if out.requires_grad else None
    return out.detach(), (torch.zeros(3, dtype=torch.float64) if g is None else g)


@pytest.mark.parametrize("k", range(len(HAND)), ids=[f for f, _ in HAND])
def test_value_and_gradient_match_hand_written_torch(model, k):
    formula, fn = HAND[k]
    got, grad = _compiled(model, f"S!G{k + 1}")
    want, want_grad = _hand(fn)
    assert float(got) == pytest.approx(float(want), rel=1e-12, abs=1e-12), formula
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-12, msg=formula)


@pytest.mark.libreoffice
def test_values_match_libreoffice(model, libreoffice):
    bad = []
    for k, (formula, _) in enumerate(HAND):
        if formula in LO_BOOLEANS_ARE_NUMBERS:
            continue
        got, _ = _compiled(model, f"S!G{k + 1}")
        lo = libreoffice.get(f"G{k + 1}")
        if not isinstance(lo, (int, float)) or float(got) != pytest.approx(float(lo), rel=1e-12, abs=1e-12):
            bad.append((formula, float(got), lo))
    assert not bad


@pytest.mark.parametrize("k", range(len(EMPTY_RULES)), ids=[f for f, _ in EMPTY_RULES])
def test_empty_cell_rules(model, k):
    formula, want = EMPTY_RULES[k]
    got = model.evaluate([f"S!K{k + 1}"], model.initial_params())[f"S!K{k + 1}"]
    assert float(got.reshape(())) == want, formula


@pytest.mark.libreoffice
def test_empty_cell_rules_match_libreoffice(libreoffice):
    got = {f: libreoffice.get(f"K{k + 1}") for k, (f, _) in enumerate(EMPTY_RULES)}
    assert got == {f: want for f, want in EMPTY_RULES}


# The course's collaborative-filtering sheet: user factors A4:B6, movie factors D1:G2, ratings D4:G6
# with missing ones (E4 empty, D5 formatted but empty, G5 and F6 absent), the squared errors of the
# rated cells IF(rating="",0,...) and the RMSE.
USERS = [[0.5, -0.2], [0.1, 0.9], [-0.7, 0.4]]
MOVIES = [[0.3, -1.1, 0.8, 0.2], [1.2, 0.6, -0.4, 0.9]]
RATINGS = [[3, None, 5, 1], [None, 4, 2, None], [1, 5, None, 3]]


def _collaborative_filtering(ws):
    for i, row in enumerate(MOVIES):
        for j, x in enumerate(row):
            ws.cell(i + 1, j + 4, x)
    for i, (u, r) in enumerate(zip(USERS, RATINGS)):
        ws.cell(i + 4, 1, u[0]), ws.cell(i + 4, 2, u[1])
        for j, x in enumerate(r):
            if x is not None:
                ws.cell(i + 4, j + 4, x)
            col, err = "DEFG"[j], "IJKL"[j]
            ws[f"{err}{i + 4}"] = (
                f'=IF({col}{i + 4}="",0,(MMULT($A{i + 4}:$B{i + 4},{col}$1:{col}$2)-{col}{i + 4})^2)'
            )
    ws["D5"].font = openpyxl.styles.Font(italic=True)
    ws["H1"] = "=SQRT(SUM(I4:L6)/COUNT(D4:G6))"


def test_collaborative_filtering_skips_missing_ratings(book):
    m = compile_workbook(book, objective="CF!H1", params="CF!A4:B6,CF!D1:G2")
    ps = [p.detach().clone().requires_grad_() for p in m.initial_params()]
    loss = m.objective(ps)
    grads = torch.autograd.grad(loss, ps)
    u = torch.tensor(USERS, dtype=torch.float64, requires_grad=True)
    v = torch.tensor(MOVIES, dtype=torch.float64, requires_grad=True)
    r = torch.tensor([[math.nan if x is None else x for x in row] for row in RATINGS], dtype=torch.float64)
    rated = ~torch.isnan(r)
    err = torch.where(rated, (u @ v - torch.nan_to_num(r)) ** 2, 0.0)
    want = torch.sqrt(err.sum() / rated.sum())
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    for g, w in zip(grads, torch.autograd.grad(want, [u, v])):
        torch.testing.assert_close(g.reshape(w.shape), w, rtol=1e-10, atol=1e-12)


@pytest.mark.libreoffice
def test_collaborative_filtering_matches_libreoffice(book, recalculated):
    m = compile_workbook(book, objective="CF!H1", params="CF!A4:B6,CF!D1:G2")
    assert float(m.objective(m.initial_params())) == pytest.approx(recalculated["CF"]["H1"], rel=1e-12)


@pytest.mark.libreoffice
def test_criterion_per_row(model, libreoffice):
    (p0,) = model.initial_params()
    p = p0.detach().clone().requires_grad_()
    got = model.evaluate(["S!O1:O3"], [p])["S!O1:O3"].reshape(-1)
    a, b, c = torch.tensor(P0, dtype=torch.float64, requires_grad=True).unbind()
    # D1:D3 = 3, 1, 4: the A values where D is above 3 / 1 / 4, plus the row's own A (one match each)
    want = torch.stack([c + a, a + c + b, c])
    torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-12, atol=1e-12)
    g = torch.autograd.grad(got.sum(), p)[0].reshape(-1)
    torch.testing.assert_close(g, torch.tensor([2.0, 1.0, 3.0], dtype=torch.float64))
    assert [libreoffice[f"O{r}"] for r in (1, 2, 3)] == pytest.approx(want.tolist(), rel=1e-12)


# Copied-down blocks: each row reduces its own window H:K = X * a (a = S!A1), X a 4 x 4 grid.
X = [[1.0, -2.0, 3.5, 0.5], [4.0, 4.0, -1.0, 2.0], [-3.0, 0.0, 2.5, -0.5], [0.25, 1.5, -2.0, 3.0]]
BLOCKS = [
    ("MEDIAN", lambda w: torch.quantile(w, 0.5, dim=-1)),  # the mean of the middle two
    ("LARGE({},2)", lambda w: torch.sort(w, -1).values[:, -2]),
    ("SMALL({},3)", lambda w: torch.sort(w, -1).values[:, 2]),
    ("_xlfn.STDEV.S", lambda w: w.std(-1)),
    ("_xlfn.VAR.P", lambda w: w.var(-1, correction=0)),
    ("AVERAGE", lambda w: w.mean(-1)),
    ("MAX", lambda w: w.amax(-1)),
    ("PRODUCT", lambda w: w.prod(-1)),
    ('SUMIF({},">0")', lambda w: torch.where(w > 0, w, 0.0).sum(-1)),
    ('COUNTIF({},">0")', lambda w: (w > 0).sum(-1).double()),
    ("SUMSQ", lambda w: (w**2).sum(-1)),
]


def _blocks(ws):
    for i, row in enumerate(X):
        for j, x in enumerate(row):
            ws.cell(i + 1, j + 1, x)
            ws.cell(i + 1, j + 8, f"={'ABCD'[j]}{i + 1}*S!$A$1")
        for k, (f, _) in enumerate(BLOCKS):
            rng = f"H{i + 1}:K{i + 1}"
            ws.cell(i + 1, 13 + k, "=" + (f.format(rng) if "{}" in f else f"{f}({rng})"))
        ws[f"Z{i + 1}"] = f"=ROW()*S!$A$1+COLUMN()+ROW(A$2)+COLUMN(B{i + 1})"  # copied down
        ws.cell(6, 8 + i, f"=COLUMN()*S!$A$1+COLUMN({'ABCD'[i]}1)+ROW()+ROW($A1)")  # copied across
    ws["Z6"] = openpyxl.worksheet.formula.ArrayFormula("Z6:Z8", "=ROW()*S!$A$1+COLUMN()")


@pytest.mark.libreoffice
def test_row_and_column(book, recalculated):
    """ROW()/COLUMN() of the cell, of a moving and of a fixed reference, in blocks copied down and across."""
    m = compile_workbook(book, objective="S!B1", params="S!A1:A3")
    (p0,) = m.initial_params()
    p = p0.detach().clone().requires_grad_()
    down = m.evaluate(["B!Z1:Z4"], [p])["B!Z1:Z4"].reshape(-1)
    across = m.evaluate(["B!H6:K6"], [p])["B!H6:K6"].reshape(-1)
    a = P0[0]
    want_down = [r * a + 26 + 2 + 2 for r in range(1, 5)]
    want_across = [c * a + (c - 7) + 6 + 1 for c in range(8, 12)]
    assert down.tolist() == pytest.approx(want_down, rel=1e-12)
    assert across.tolist() == pytest.approx(want_across, rel=1e-12)
    array = m.evaluate(["B!Z6:Z8"], [p])["B!Z6:Z8"].reshape(-1)  # {=ROW()...} over Z6:Z8
    want_array = [r * a + 26 for r in (6, 7, 8)]
    assert array.tolist() == pytest.approx(want_array, rel=1e-12)
    (g,) = torch.autograd.grad(down.sum() + across.sum() + array.sum(), p)
    assert g.reshape(-1).tolist() == pytest.approx([1 + 2 + 3 + 4 + 8 + 9 + 10 + 11 + 6 + 7 + 8, 0, 0])
    lo = recalculated["B"]
    assert [lo[f"Z{r}"] for r in range(1, 5)] == pytest.approx(want_down, rel=1e-12)
    assert [lo[f"{c}6"] for c in "HIJK"] == pytest.approx(want_across, rel=1e-12)
    assert [lo[f"Z{r}"] for r in (6, 7, 8)] == pytest.approx(want_array, rel=1e-12)


@pytest.mark.libreoffice
def test_functions_copied_down(book, recalculated):
    m = compile_workbook(book, objective="S!B1", params="S!A1:A3")
    (p0,) = m.initial_params()
    p = p0.detach().clone().requires_grad_()
    a = torch.tensor(P0[0], dtype=torch.float64, requires_grad=True)
    for k, (f, fn) in enumerate(BLOCKS):
        w = torch.tensor(X, dtype=torch.float64) * a
        col = openpyxl.utils.get_column_letter(13 + k)
        got = m.evaluate([f"B!{col}1:{col}4"], [p])[f"B!{col}1:{col}4"].reshape(-1)
        want = fn(w)
        torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-12, atol=1e-12, msg=f)
        g = torch.autograd.grad(got.sum(), p, allow_unused=True)[0] if got.requires_grad else None
        gw = torch.autograd.grad(want.sum(), a, allow_unused=True)[0] if want.requires_grad else None
        g = 0.0 if g is None else float(g.reshape(-1)[0])
        assert g == pytest.approx(0.0 if gw is None else float(gw), rel=1e-10, abs=1e-12), f
        lo = [recalculated["B"][f"{col}{r}"] for r in range(1, 5)]
        assert lo == pytest.approx(want.tolist(), rel=1e-12, abs=1e-12), f


def _value(x):
    return ERROR if not math.isfinite(float(x.reshape(()))) else float(x.reshape(()))


@pytest.mark.parametrize("k", range(len(TYPE_RULES)), ids=[f for f, _ in TYPE_RULES])
def test_errors_and_types(model, k):
    formula, want = TYPE_RULES[k]
    got = model.evaluate([f"S!M{k + 1}"], model.initial_params())[f"S!M{k + 1}"]
    assert _value(got) == want, formula


@pytest.mark.libreoffice
def test_errors_and_types_match_libreoffice(libreoffice):
    got, want = {}, {}
    for k, (f, w) in enumerate(TYPE_RULES):
        lo = libreoffice.get(f"M{k + 1}")
        got[f] = ERROR if isinstance(lo, oracle.CellError) else lo
        want[f] = LO_DIFFERS.get(f, w)
    assert got == want


# issue #12's list; ROW and COLUMN need the cell's position, which the compiler has and the builders do
# not: they live in xlmnist.compile.cellwise
LISTED = """SUM SUMSQ SUMPRODUCT SUMX2MY2 SUMXMY2 PRODUCT AVERAGE AVERAGEA COUNT COUNTA COUNTBLANK COUNTIF
COUNTIFS SUMIF SUMIFS AVERAGEIF AVERAGEIFS MIN MAX MINIFS MAXIFS LARGE SMALL MEDIAN VAR.P VAR.S VAR STDEV.P
STDEV.S STDEV ABS SIGN SQRT EXP LN LOG LOG10 POWER MOD ROUND ROUNDUP ROUNDDOWN INT TRUNC FLOOR CEILING PI
IF IFS IFERROR IFNA AND OR NOT XOR SWITCH CHOOSE ISBLANK ISNUMBER ISERROR ROWS COLUMNS TRANSPOSE TANH SINH
COSH ROW COLUMN""".split()
LISTED += """ASIN ACOS ATAN2 ASINH ACOSH ATANH DEGREES RADIANS SQRTPI QUOTIENT EVEN ODD SUMX2PY2 NORM.DIST NORMDIST
NORM.S.DIST NORMSDIST NORM.INV NORMINV NORM.S.INV NORMSINV STANDARDIZE COVARIANCE.P COVAR COVARIANCE.S CORREL
PEARSON RSQ SLOPE INTERCEPT FORECAST FORECAST.LINEAR DEVSQ""".split()  # added after issue #12


def test_listed_functions_are_in_the_table_and_tested():
    from xlmnist.compile.cellwise import POSITION
    from xlmnist.compile.functions import FUNCTIONS

    assert [f for f in LISTED if f not in FUNCTIONS and f not in POSITION] == []
    formulas = " ".join([f for f, _ in HAND] + [f if "(" in f else f + "()" for f, _ in BLOCKS])
    assert [f for f in LISTED if not re.search(rf"(?<![A-Z]){re.escape(f)}\(", formulas)] == []


def test_unsupported_function_names_the_cell(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "S"
    ws["A1"], ws["B1"] = 1.0, "=_xlfn.NOSUCHFN(A1)"
    wb.save(tmp_path / "u.xlsx")
    with pytest.raises(FormulaError, match=r"S!B1.*NOSUCHFN"):
        compile_workbook(tmp_path / "u.xlsx", objective="S!B1", params="S!A1")
