"""Calc's formula text -> Excel's: the forms LibreOffice 7.4 returns from ``getFormula`` (recorded from a
real office with the expected text from its own ``FormulaParser`` in the OOXML convention)."""

from __future__ import annotations

import pytest

from xlmnist.calc.formula import excel_formula, excel_reference
from xlmnist.calc.live import convert
from xlmnist.formula.parser import parse

CASES = [
    ("=SUM({1;2|3;4})", "SUM({1,2;3,4})"),
    ("=MMULT(A1:A2;A1:A1)", "MMULT(A1:A2,A1:A1)"),
    ("{=MMULT(G4:P103;S4:T13)}", "MMULT(G4:P103,S4:T13)"),
    ("=IF(A1>2;TRUE();FALSE())", "IF(A1>2,TRUE,FALSE)"),
    ("=$'my sheet'.A1+$data.B2", "'my sheet'!A1+data!B2"),
    ("=SUM($data.B1:B5)", "SUM(data!B1:B5)"),
    ("=SUM($data.B1:$data.B3)", "SUM(data!B1:B3)"),
    ("=SUMPRODUCT($A$1:$A$3;$'my sheet'.$A$1:$A$3)", "SUMPRODUCT($A$1:$A$3,'my sheet'!$A$1:$A$3)"),
    ('=IF(A1=1;"a;b.c";"x")', 'IF(A1=1,"a;b.c","x")'),
    ("=STDEV.S(A1:A5)", "STDEV.S(A1:A5)"),
    ("=NORM.S.DIST(A1;1)", "NORM.S.DIST(A1,1)"),
    ("=EXP(-A1)*0.0015", "EXP(-A1)*0.0015"),
    ("=MATCH(MAX(A1:A5);A1:A5;0)-1", "MATCH(MAX(A1:A5),A1:A5,0)-1"),
    ("=SUM(A:A)+SUM(1:1)", "SUM(A:A)+SUM(1:1)"),
    ("=$data.$A:$C", "data!$A:$C"),
    ("=$a.A3", "a!A3"),
    ("=$'it''s'.B2*2", "'it''s'!B2*2"),
    ("=IF(V4<0;0;V4)", "IF(V4<0,0,V4)"),
]


@pytest.mark.parametrize("calc, excel", CASES)
def test_calc_to_excel(calc, excel):
    assert excel_formula(calc) == excel
    assert convert(calc) == excel  # the fast path agrees
    parse(excel)  # and xlmnist's parser reads the result


def test_named_ranges():
    assert excel_reference("$linear.$R$4:$AA$4") == "linear!$R$4:$AA$4"
    assert excel_reference("$'my sheet'.$A$1;$a.$B$2") == "'my sheet'!$A$1,a!$B$2"
    assert excel_reference("0.0001") == "0.0001"
