"""Peephole rewrites of the generated objective program (:mod:`xlmnist.compile.lower`): the spelled-out softmax
and cross-entropy of a sheet become the fused torch ops a hand-written model uses.

The sheet's formulas stay the reference: a rewrite only applies where it computes the same values (the
same function up to float rounding), rows whose data break a rewrite's precondition (a label outside
0..n-1, a one-hot row that is not one 1) take the sheet's own form through a guard, and the whole program
is checked against the block closures before it is used (``CompiledModel._lowered``). Guards that read
only the data rows are also collected in ``Lowerer.guards``: the training loop checks them once per
dataset (``CompiledModel.trusts``) instead of once per batch.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from xlmnist.compile.ir import Op, names, substitute

if TYPE_CHECKING:
    from xlmnist.compile.lower import Lowerer

_TB = re.compile(r"[tb]\d+")  # temporaries and block variables (names of our own program)
_INPUT = re.compile(r"[tbk]\d+|D")  # what a data-only value may be computed from


def _is(x, kind: str, n: int | None = None) -> bool:
    """Whether ``x`` is an Op of ``kind`` (with ``n`` operands, all variable names, when given)."""
    return (
        isinstance(x, Op)
        and x.kind == kind
        and (n is None or (len(x.args) == n and all(isinstance(a, str) for a in x.args)))
    )


def _data_cols(x) -> tuple[int, int] | None:
    """(a, b) where ``x`` is ``D[:, a:b]`` (columns of the data rows), else None."""
    if not (_is(x, "index") and x.args[0] == "D" and isinstance(x.args[1], tuple) and len(x.args[1]) == 2):
        return None
    rows, cols = x.args[1]
    if rows != slice(None) or not isinstance(cols, slice):
        return None
    return cols.start, cols.stop


def fuse_softmax(L: Lowerer) -> None:
    """Rewrite the ops of ``L`` in place (the sheet's spelled-out formulas; the same values):

    * ``EXP(z-MAX(z))/SUM(...)`` over a row (or ``EXP(z)/SUM(EXP(z))``) -> ``torch.softmax(z, 1)``;
    * ``-LN(SUMPRODUCT(onehot, softmax))`` -> ``cross_entropy(z, label)`` where the one-hot is
      ``IF(label=0..n-1,1,0)`` of a label column, ``cross_entropy(z, onehot)`` where it is 0/1 data columns
      or values; ``AVERAGE`` of that column -> the fused mean. A guard sends data that is not a clean
      one-hot to the sheet's own form (LN of the sum: ``inf`` for an all-zero row, as Excel's #NUM!).

    One fused op instead of five (and a stable log) in both the forward and the backward pass."""

    res = L.resolve

    def same(a: str, b: str) -> bool:  # one value, or two identical ops of the same values
        a, b = res(a), res(b)
        return a == b or (a in L.defs and L.defs[a] == L.defs.get(b))

    def setop(name: str, op: Op) -> None:
        for s in L.stmts:
            if s.targets == (name,):
                s.op = L.defs[name] = op
                return

    soft = {}  # softmax variable -> its logits
    for name, e in list(L.defs.items()):
        if not _is(e, "div", 2):
            continue
        x, u = res(e.args[0]), res(e.args[1])
        ue = L.defs.get(u)
        mu = _is(ue, "unsqueeze", 1)
        sv = res(ue.args[0]) if mu else u
        ms = L.defs.get(sv)
        if not (_is(ms, "reduce", 1) and ms.attrs.get("fn") == "sum" and ms.attrs.get("dim") == 1):
            continue
        if mu == bool(ms.attrs.get("keep")) or res(ms.args[0]) != x:
            continue
        me = L.defs.get(x)
        if not _is(me, "exp", 1):
            continue
        z = res(me.args[0])
        mz = L.defs.get(z)
        mm = L.defs.get(res(mz.args[1])) if _is(mz, "sub", 2) else None
        is_max = _is(mm, "reduce", 1) and mm.attrs == {"fn": "amax", "dim": 1, "keep": True}
        if is_max and same(mm.args[0], mz.args[0]):
            z = res(mz.args[0])  # softmax is the same for any per-row shift; the sheet's is the row max
        elif is_max:
            continue  # shifted by another row's max: leave it
        setop(name, Op("softmax", z))
        L.note(f"softmax: {name} = EXP/SUM of {z} -> torch.softmax({z}, 1)")
        soft[name] = z
    negs = {}  # log variable -> the variable that negates it (the sheet's -LN(...))
    for name, e in L.defs.items():
        if _is(e, "neg", 1):
            negs.setdefault(res(e.args[0]), name)
    for name, e in list(L.defs.items()):
        ml = L.defs.get(res(e.args[0])) if _is(e, "log", 1) else None
        if not _is(ml, "rowdot", 2):
            continue
        a, b = res(ml.args[0]), res(ml.args[1])
        for o, p in ((a, b), (b, a)):
            if p not in soft:
                continue
            z, lab = soft[p], _label_column(L, o) if _zero_one(L, o) else None
            cols = _data_cols(L.defs.get(o))
            if lab is None and not cols and not _zero_one(L, o):
                continue
            target = o
            if cols:  # one-hot columns of the data rows: checked, like labels, once per dataset
                check = Op("call", "_one_hot", L.defs[o])
                guard = Op("or", "TR", check)
                L.guards.append(check)
                L.g["_one_hot"] = _one_hot
            elif lab is not None:  # one-hot of an integer label column: the label itself is the target
                col, n = lab
                y = Op("index", "D", (slice(None), col))
                target = Op("long", y)
                check = Op("call", "_int_labels", y, n)
                guard = Op("or", "TR", check)
                L.guards.append(check)
                o = _inline(L, o)  # the one-hot only where the labels are not 0..n-1
                L.g["_int_labels"] = _int_labels
            else:  # soft targets: -(o * log_softmax(z)).sum(1)
                guard = Op("bool", Op("all", Op("eq", Op("reduce", o, fn="sum", dim=1), 1.0)))
            ce = Op("cross_entropy", z, target, reduction="none")
            sheet = Op("log", Op("rowdot", o, Op("softmax", z)))
            if name in negs:
                line = negs[name]
                setop(line, Op("ifelse", guard, ce, Op("neg", sheet)))
                for mean, m in list(L.defs.items()):  # AVERAGE of the loss column: the fused mean
                    if _is(m, "reduce", 1) and m.attrs == {"fn": "mean"} and res(m.args[0]) == line:
                        fused = Op("cross_entropy", z, target, reduction="mean")
                        setop(mean, Op("ifelse", guard, fused, Op("reduce", Op("neg", sheet), fn="mean")))
                        L.note(f"cross-entropy mean: {mean} = AVERAGE of {line} -> one fused mean")
            else:
                setop(name, Op("ifelse", guard, Op("neg", ce), sheet))
            L.note(f"cross-entropy: {name} = LN(SUMPRODUCT({a}, {b})) -> cross_entropy({z}, ...), guarded")
            break


def _int_labels(y: torch.Tensor, n: int) -> bool:
    """Whether every label is an integer in 0..n-1 (then a one-hot of it is one 1 per row)."""
    yl = y.long()
    lo, hi = torch.aminmax(yl)
    return bool(torch.equal(yl.to(y.dtype), y)) and int(lo) >= 0 and int(hi) < n


def _one_hot(o: torch.Tensor) -> bool:
    """Whether every row of ``o`` is 0s and exactly one 1."""
    return bool(((o == 0) | (o == 1)).all() and (o.sum(1) == 1).all())


def _label_column(L: Lowerer, name: str):
    """(column, n) where ``name`` is ``IF(label=0..n-1, 1, 0)`` over one data column, else None."""
    m = L.origin(name)
    if not (_is(m, "where") and isinstance(m.args[0], str) and m.args[1] == 1.0):
        return None
    no = m.args[2]
    if not (no == 0.0 or isinstance(no, str) and _zero_one(L, no) and not bool(L.g[no].any())):
        return None
    me = L.origin(m.args[0])
    if not (_is(me, "eq", 2) and me.args[1].startswith("k")):
        return None
    mc = _data_cols(L.origin(me.args[0]))
    k = L.g[me.args[1]]
    if not mc or mc[1] != mc[0] + 1 or k.dim() != 2 or k.shape[0] != 1:
        return None
    n = k.shape[1]
    if not torch.equal(k[0], torch.arange(n, dtype=k.dtype, device=k.device)):
        return None
    return mc[0], n


def _inline(L: Lowerer, name: str, depth: int = 0):
    """The op of a temporary with the temporaries it reads written out (for a rarely taken branch)."""
    op = L.defs.get(name)
    if op is None or depth > 20:
        return name
    return substitute(op, lambda v: _inline(L, v, depth + 1) if _TB.fullmatch(v) else v)


def _zero_one(L: Lowerer, name: str) -> bool:
    """Whether ``name`` can only hold 0s and 1s and needs no gradient (data or constants only)."""
    op = L.defs.get(name)
    if op is None:
        t = L.g.get(name)
        return isinstance(t, torch.Tensor) and bool(((t == 0) | (t == 1)).all())
    if L.resolve(name) != name:
        return _zero_one(L, L.resolve(name))
    if not (_is(op, "where") and isinstance(op.args[0], str) and _no_grad(L, op.args[0])):
        return False
    return all(v in (1.0, 0.0) if not isinstance(v, str) else _zero_one(L, v) for v in op.args[1:])


def _no_grad(L: Lowerer, name: str) -> bool:
    """Whether ``name`` is computed from the data rows and constants only (no parameter, no closure)."""
    op = L.defs.get(name)
    if op is None:
        return name == "D" or name.startswith("k")
    used = names(op)
    if "env" in used or any(re.fullmatch(r"p\d+", v) for v in used):
        return False
    return all(_no_grad(L, v) for v in used if _INPUT.fullmatch(v) and v != name)
