"""Formula parsing: precedence, references, and Hypothesis fuzzing."""

from __future__ import annotations

import math

import openpyxl
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xlmnist.errors import FormulaError
from xlmnist.formula import parser as P
from xlmnist.formula.r1c1 import r1c1_key

CASES = [
    ("-2^2", P.Binary("^", P.Unary("-", P.Number(2.0)), P.Number(2.0))),
    ("2^3^2", P.Binary("^", P.Binary("^", P.Number(2.0), P.Number(3.0)), P.Number(2.0))),
    ("1+2*3", P.Binary("+", P.Number(1.0), P.Binary("*", P.Number(2.0), P.Number(3.0)))),
    ("50%", P.Percent(P.Number(50.0))),
    ('"a"&"b"="ab"', P.Binary("=", P.Binary("&", P.String("a"), P.String("b")), P.String("ab"))),
    ("'My sheet'!$A$1", P.Ref("My sheet", 1, 1, 1, 1, True, True, True, True)),
    ("Sheet1!A1:B2", P.Ref("Sheet1", 1, 1, 2, 2)),
    ("A:A", P.Ref(None, 1, 1, P.MAX_ROW, 1, True, False, True, False)),
    ("3:3", P.Ref(None, 3, 1, 3, P.MAX_COL, False, True, False, True)),
    ("T[@col]", P.StructRef("T", "@col")),
    ("Table13[[#This Row],[SibSp]:[Ones]]", P.StructRef("Table13", "[#This Row],[SibSp]:[Ones]")),
    ("{1,2;3,-4}", P.Array(((P.Number(1.0), P.Number(2.0)), (P.Number(3.0), P.Number(-4.0))))),
    ("#N/A", P.Error("#N/A")),
    ("_xlfn.SINGLE(x)", P.Call("SINGLE", (P.Name(None, "x"),))),
    ("IF(a,,TRUE)", P.Call("IF", (P.Name(None, "a"), P.Missing(), P.Bool(True)))),
    ("SUM((A1,B2))", P.Call("SUM", (P.Binary(",", P.Ref(None, 1, 1, 1, 1), P.Ref(None, 2, 2, 2, 2)),))),
]


@pytest.mark.parametrize("text,tree", CASES)
def test_parse(text, tree):
    assert P.parse(text) == tree


@pytest.mark.parametrize("bad", ["1+", "SUM(1", "(1", "1)", "{1,2;3}", '"abc', "A1:", "", "{A1}", ")(", ","])
def test_parse_errors_name_the_cell(bad):
    with pytest.raises(FormulaError, match=r"^Sheet!B7: "):
        P.parse(bad, "Sheet!B7")


def test_r1c1_key_groups_copied_formulas():
    assert r1c1_key("IF(AC4<0,0,AC4)", 4, 31) == r1c1_key("IF(AC9<0,0,AC9)", 9, 31)
    assert r1c1_key("$A$1+A1", 1, 2) != r1c1_key("$A$1+A2", 1, 2)
    assert r1c1_key('LOG10(T[[#This Row],[A1]])&"B2"', 3, 3) == 'LOG10(T[[#This Row],[A1]])&"B2"'


TOKENS = ["1", "2.5", "A1", "$B$2", "(", ")", "+", "-", "*", "/", "^", "%", "&", "=", "<>", ",", ";", ":",
          "SUM(", "IF(", '"x"', "{", "}", "#N/A", "TRUE", " ", "T[a]", "'s'!", "!", "[", "]", "@", "..."]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=12))
def test_token_soup_raises_only_formula_error(tokens):
    try:
        P.parse("".join(tokens), "S!A1")
    except FormulaError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_random_text_raises_only_formula_error(text):
    try:
        P.parse(text, "S!A1")
    except FormulaError:
        pass


def _formulas():
    num = st.integers(min_value=1, max_value=9).map(str)
    leaf = st.one_of(num, st.just("A1"), st.just("B1"))
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*"]), inner).map(lambda t: f"{t[0]}{t[1]}{t[2]}"),
            inner.map(lambda x: f"({x})"),
            inner.map(lambda x: f"-{x}"),
            st.tuples(inner, inner).map(lambda t: f"SUM({t[0]},{t[1]})"),
            st.tuples(inner, inner).map(lambda t: f"IF({t[0]}>{t[1]},{t[0]},{t[1]})"),
        ),
        max_leaves=8,
    )


def _reference(text: str, env: dict) -> float:
    """A small independent evaluator over Python floats (its own recursive descent)."""
    toks, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit():
            toks.append(float(ch))
        elif text.startswith("SUM(", i) or text.startswith("IF(", i):
            name = "SUM" if text.startswith("SUM(", i) else "IF"
            toks.append(name)
            i += len(name) + 1  # the name and its "("
            continue
        elif text.startswith("A1", i) or text.startswith("B1", i):
            toks.append(env[text[i : i + 2]])
            i += 2
            continue
        else:
            toks.append(ch)
        i += 1
    pos = [0]

    def peek():
        return toks[pos[0]] if pos[0] < len(toks) else None

    def take():
        pos[0] += 1
        return toks[pos[0] - 1]

    def comparison():
        left = additive()
        if peek() == ">":
            take()
            return float(left > additive())
        return left

    def additive():
        v = term()
        while peek() in ("+", "-"):
            v = v + term() if take() == "+" else v - term()
        return v

    def term():
        v = unary()
        while peek() == "*":
            take()
            v = v * unary()
        return v

    def unary():
        if peek() == "-":
            take()
            return -unary()
        t = take()
        if t == "(":
            v = comparison()
            take()
            return v
        if t in ("SUM", "IF"):
            args = [comparison()]
            while take() == ",":
                args.append(comparison())
            return args[0] + args[1] if t == "SUM" else (args[1] if args[0] else args[2])
        return t

    return comparison()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_formulas(), min_size=1, max_size=5))
def test_generated_formulas_evaluate_like_reference(tmp_path, formulas):
    from xlmnist.compile import compile_workbook

    book = openpyxl.Workbook()
    ws = book.active
    ws.title = "S"
    ws["A1"], ws["B1"], ws["C1"] = 3.0, -2.0, "=A1+B1"
    for k, f in enumerate(formulas):
        ws[f"D{k + 1}"] = "=" + f
    path = tmp_path / "gen.xlsx"
    book.save(path)
    m = compile_workbook(path, objective="S!C1", params="S!A1:B1")
    refs = [f"S!D{k + 1}" for k in range(len(formulas))]
    got = m.evaluate(refs, [torch.tensor([[3.0, -2.0]], dtype=torch.float64)])
    for ref, f in zip(refs, formulas):
        want = _reference(f, {"A1": 3.0, "B1": -2.0})
        assert math.isclose(float(got[ref].reshape(())), want, rel_tol=1e-12, abs_tol=1e-9), f
