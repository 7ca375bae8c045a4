"""The program IR (xlmnist.compile.ir), its rewrites (fuse, stacked mv, dead code) and rendering, directly."""

from __future__ import annotations

import re

import openpyxl
import pytest
import torch
from openpyxl.workbook.defined_name import DefinedName

from xlmnist.compile import compile_workbook
from xlmnist.compile.fuse import fuse_softmax
from xlmnist.compile.ir import Op, Stmt, names, render, render_op, render_stmt, substitute
from xlmnist.compile.lower import Lowerer
from xlmnist.compile.program import dead_code
from xlmnist.compile.sources import stacked_mv


def test_render_ops():
    assert render_op(Op("add", "t1", 2.0)) == "(t1 + 2.0)"
    assert render_op(Op("index", "D", (slice(None), slice(3, 5)))) == "D[:, 3:5]"
    assert render_op(Op("index", "p0", 2)) == "p0[2]"
    assert render_op(Op("reduce", "t2", fn="sum", dim=1, keep=True)) == "t2.sum(1, keepdim=True)"
    assert render_op(Op("reduce", "t2", fn="mean")) == "t2.mean()"
    assert render_op(Op("stack", "t1", "t2", "t3")) == "torch.stack([t1, t2, t3], 1)"
    assert render_op(Op("add_n", "t1", "t2", -1.5)) == "(t1 + t2 + -1.5)"
    ce = Op("cross_entropy", "t4", Op("long", Op("index", "D", (slice(None), 7))), reduction="mean")
    assert render_op(ce) == 'torch.nn.functional.cross_entropy(t4, D[:, 7].long(), reduction="mean")'
    assert render_op(Op("dict", "b1", Op("env", 3), keys=(1, 3))) == "{1: b1, 3: env[3]}"
    assert render_op(Op("ifelse", Op("or", "TR", "t1"), "t2", "t3")) == "(t2 if (TR or t1) else t3)"
    assert render_stmt(Stmt(("b7", 7), Op("call", "S7", "env"))) == "b7 = env[7] = S7(env)"
    src = render([Stmt(("p0",), Op("env", -2))], [Stmt(("t1",), Op("exp", "p0"))], "t1", [])
    assert src == "def program(env):\n    p0 = env[-2]\n    t1 = torch.exp(p0)\n    return t1\n"


def test_render_refuses_what_is_not_ours():
    """Only the op table, numbers and variable names reach the source: no text from a formula."""
    with pytest.raises(ValueError):
        render_op(Op("exp", "x); import os; ("))
    with pytest.raises(KeyError):
        Op("system")
    with pytest.raises(KeyError):
        render_op(Op("reduce", "t1", fn="__class__"))
    with pytest.raises(TypeError):
        render_op(Op("add", "t1", object()))


def test_names_substitute_and_equality():
    op = Op("where", "t1", 1.0, Op("neg", "t2"))
    assert names(op) == {"t1", "t2"}
    assert substitute(op, lambda v: "t9" if v == "t2" else v) == Op("where", "t1", 1.0, Op("neg", "t9"))
    assert Op("reduce", "t1", fn="sum", dim=1) == Op("reduce", "t1", dim=1, fn="sum")
    assert Op("reduce", "t1", fn="sum", dim=1) != Op("reduce", "t1", fn="sum", dim=1, keep=True)
    assert Op("index", "D", (slice(None), slice(0, 2))) != Op("index", "D", (slice(None), slice(0, 3)))


def test_dead_code_keeps_closures_and_env_writes():
    body = [
        Stmt(("t1",), Op("exp", "p0")),
        Stmt(("t2",), Op("log", "p0")),  # read by nothing
        Stmt(("b3", 3), Op("call", "S3", "env")),  # a closure writes env: always kept
        Stmt(("t4",), Op("add", "t1", "b3")),
        Stmt((5,), Op("unsqueeze", "t4")),  # env write for a closure
        Stmt(("t6",), Op("neg", "t1")),
    ]
    kept = [s.targets for s in dead_code(body, "t6")]
    assert kept == [("t1",), ("b3", 3), ("t4",), (5,), ("t6",)]


@pytest.fixture(scope="module")
def comp(tmp_path_factory):
    """A real compiled sheet: parameters A1:C2 (two rows), data rows E3:K8."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Sheet"
    for r in (1, 2):
        for c in "ABC":
            ws[f"{c}{r}"] = 0.5
    for r in range(3, 9):
        for c in "EFGHIJK":
            ws[f"{c}{r}"] = 1.0
        ws[f"L{r}"] = f"=SUMPRODUCT(E{r}:G{r},$A$1:$C$1)"
    ws["Z1"] = "=SUM(L3:L8)"
    ws.defined_names["solver_opt"] = DefinedName("solver_opt", attr_text="Sheet!$Z$1")
    ws.defined_names["solver_adj"] = DefinedName("solver_adj", attr_text="Sheet!$A$1:$C$2")
    ws.defined_names["xlmnist_data"] = DefinedName("xlmnist_data", attr_text="Sheet!$E$3:$K$8")
    path = tmp_path_factory.mktemp("lower") / "t.xlsx"
    wb.save(path)
    return compile_workbook(path).compiler


def _softmax_ops(L, shift_of=None):
    z = L.tmp(Op("mm", Op("index", "D", (slice(None), slice(0, 3))), "p0"))
    m = L.tmp(Op("reduce", shift_of or z, fn="amax", dim=1, keep=True))
    e = L.tmp(Op("exp", L.tmp(Op("sub", z, m))))
    s = L.tmp(Op("reduce", e, fn="sum", dim=1, keep=True))
    return z, L.tmp(Op("div", e, s))


def test_softmax_rewrite(comp):
    L = Lowerer(comp)
    z, p = _softmax_ops(L)
    fuse_softmax(L)
    assert L.defs[p] == Op("softmax", z) and any(n.startswith("softmax:") for n in L.notes)
    L = Lowerer(comp)  # shifted by the max of another row: not a softmax of z; left alone
    other = L.tmp(Op("neg", "p0"))
    _, p = _softmax_ops(L, shift_of=other)
    fuse_softmax(L)
    assert L.defs[p].kind == "div" and L.notes == []


def test_cross_entropy_rewrite_on_one_hot_data_columns(comp):
    L = Lowerer(comp)
    z, p = _softmax_ops(L)
    o = L.tmp(Op("index", "D", (slice(None), slice(4, 7))))
    loss = L.tmp(Op("neg", L.tmp(Op("log", L.tmp(Op("rowdot", o, p))))))
    mean = L.tmp(Op("reduce", loss, fn="mean"))
    fuse_softmax(L)
    fused = L.defs[mean]
    assert fused.kind == "ifelse" and fused.args[1] == Op("cross_entropy", z, o, reduction="mean")
    assert L.guards == [Op("call", "_one_hot", Op("index", "D", (slice(None), slice(4, 7))))]
    assert render_op(fused.args[0]) == "(TR or _one_hot(D[:, 4:7]))"


def test_stacked_mv(comp):
    """mv(K, p0[0]), mv(K, p0[1]) stacked as columns over all rows of p0 -> one mm(K, p0.T)."""
    L = Lowerer(comp)
    k = L.const(torch.ones(6, 3).numpy())
    cols = [L.tmp(Op("mv", k, L.tmp(Op("index", "p0", i)))) for i in (0, 1)]
    t = stacked_mv(L, cols)
    assert L.defs[t] == Op("mmT", k, "p0")
    L = Lowerer(comp)
    cols = [L.tmp(Op("mv", k, L.tmp(Op("index", "p0", i)))) for i in (1, 0)]  # not in row order
    assert stacked_mv(L, cols) is None


def test_formula_text_never_reaches_the_program(tmp_path):
    """A string in a formula makes its block run its closure; the text is not in the generated source."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Sheet"
    ws["A1"], ws["B1"], ws["C1"] = 2.0, '=IF(A1>0,A1,"x) ; import os ; (")', "=B1*B1"
    ws.defined_names["solver_opt"] = DefinedName("solver_opt", attr_text="Sheet!$C$1")
    ws.defined_names["solver_adj"] = DefinedName("solver_adj", attr_text="Sheet!$A$1")
    wb.save(tmp_path / "t.xlsx")
    m = compile_workbook(tmp_path / "t.xlsx")
    assert m.program_kind == "lowered" and m._prog.fallback != []
    assert "import" not in m._prog.source and re.search(r"= S\d+\(env\)", m._prog.source)
    assert float(m.objective(m.initial_params())) == 4.0
