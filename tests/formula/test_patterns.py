"""The layer patterns (xlmnist.formula.patterns) on parsed formulas: what they match and what they refuse."""

from __future__ import annotations

import pytest

from xlmnist.formula import parser as P
from xlmnist.formula import patterns as pt


def _p(text):
    return P.parse(text)


@pytest.mark.parametrize(
    "text,arg,g0",
    [
        ("IF(A1<0,0,A1)", "A1", 1.0),
        ("IF(A1>=0,A1,0)", "A1", 1.0),
        ("IF(A1<=0,0,A1)", "A1", 0.0),
        ("IF(A1>0,A1,0)", "A1", 0.0),
        ("MAX(0,A1)", "A1", 0.5),
        ("MAX(A1,0)", "A1", 0.5),
        ("IF(B2+C2<0,0,B2+C2)", "B2+C2", 1.0),
    ],
)
def test_relu_forms(text, arg, g0):
    node = _p(text)
    assert pt.relu(node) == (_p(arg), g0)
    assert pt.relu_arg(node) == _p(arg)


@pytest.mark.parametrize(
    "text",
    [
        "IF(A1<0,0,B1)",
        "IF(A1<0,1,A1)",
        "IF(A1<1,0,A1)",
        "IF(A1>0,0,A1)",
        "MAX(1,A1)",
        "MAX(A1,B1)",
        "A1",
        "MAX(0,A1,B1)",
    ],
)
def test_not_relu(text):
    assert pt.relu(_p(text)) is None and pt.relu_arg(_p(text)) is None


def test_sigmoid():
    assert pt.sigmoid_arg(_p("1/(1+EXP(-A1))")) == _p("A1")
    assert pt.sigmoid_arg(_p("1/(EXP(-(A1+B1))+1)")) == _p("A1+B1")
    for text in ("1/(1+EXP(A1))", "2/(1+EXP(-A1))", "1/(2+EXP(-A1))", "1/(1-EXP(-A1))", "EXP(-A1)"):
        assert pt.sigmoid_arg(_p(text)) is None, text


def test_affine():
    node = _p("SUMPRODUCT(E3:G3,$A$1:$C$1)")
    is_w = lambda r: r.ar1  # noqa: E731 - the absolute range is the weight here
    assert pt.affine(node, is_w) == ("SUMPRODUCT", _p("E3:G3"), _p("$A$1:$C$1"))
    swapped = _p("SUMPRODUCT($A$1:$C$1,E3:G3)")
    assert pt.affine(swapped, is_w) == ("SUMPRODUCT", _p("E3:G3"), _p("$A$1:$C$1"))
    assert pt.affine(_p("MMULT(E3:G3,A$1:A$3)"), lambda r: r.ar1) == ("MMULT", _p("E3:G3"), _p("A$1:A$3"))
    assert pt.affine(_p("MMULT(A$1:C$1,E3:E5)"), lambda r: r.ar1) is None  # MMULT keeps its order
    assert pt.affine(_p("SUMPRODUCT(E3:G3,A1:C1*2)")) is None
    assert pt.affine(_p("SUM(E3:G3,A1:C1)")) is None


def test_softmax_and_cross_entropy():
    assert pt.exp_shift(_p("EXP(L3-MAX($L3:$N3))")) == (_p("L3"), _p("$L3:$N3"))
    assert pt.exp_shift(_p("EXP(L3)")) == (_p("L3"), None)
    assert pt.exp_shift(_p("LN(L3)")) is None
    assert pt.softmax(_p("EXP(L3-MAX($L3:$N3))/SUM($P3:$R3)")) == (_p("L3"), _p("$L3:$N3"), _p("$P3:$R3"))
    assert pt.softmax(_p("EXP(L3)/SUM(P3:R3)")) == (_p("L3"), None, _p("P3:R3"))
    assert pt.softmax(_p("EXP(L3)/P3")) is None and pt.softmax(_p("L3/SUM(P3:R3)")) is None
    assert pt.ratio(_p("P3/$T3")) == (_p("P3"), _p("$T3")) and pt.sum_arg(_p("SUM(P3:R3)")) == _p("P3:R3")
    assert pt.cross_entropy(_p("-LN(SUMPRODUCT(I3:K3,U3:W3))")) == (_p("I3:K3"), _p("U3:W3"))
    for text in ("LN(SUMPRODUCT(I3:K3,U3:W3))", "-LN(SUM(I3:K3))", "-LOG10(SUMPRODUCT(I3:K3,U3:W3))"):
        assert pt.cross_entropy(_p(text)) is None, text


@pytest.mark.parametrize(
    "text,ok",
    [
        ("=IF(A1<0,0,A1)", True),
        ("=IF(AB12<=0,0,AB12)", True),
        ("=MAX(0,$C$3)", True),
        ("= MAX( C3 , 0 )", True),
        ("=IF(A1<0,0,B1)", False),
        ("=IF(A1+B1<0,0,A1+B1)", False),  # a ReLU, but not of one cell
        ("=MAX(0,A1:A3)", False),
        ("=Sheet2!A1", False),
        ("=IF(", False),
    ],
)
def test_is_relu_formula(text, ok):
    assert pt.is_relu_formula(text) is ok
