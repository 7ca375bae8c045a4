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

if TYPE_CHECKING:
    from xlmnist.compile.lower import Lowerer

_NAME = r"[tbk]\d+|p\d+|D"


def fuse_softmax(L: Lowerer) -> None:
    """Rewrite ``L.lines`` in place (the sheet's spelled-out formulas; the same values):

    * ``EXP(z-MAX(z))/SUM(...)`` over a row (or ``EXP(z)/SUM(EXP(z))``) -> ``torch.softmax(z, 1)``;
    * ``-LN(SUMPRODUCT(onehot, softmax))`` -> ``cross_entropy(z, label)`` where the one-hot is
      ``IF(label=0..n-1,1,0)`` of a label column, ``cross_entropy(z, onehot)`` where it is 0/1 data columns
      or values; ``AVERAGE`` of that column -> the fused mean. A guard sends data that is not a clean
      one-hot to the sheet's own form (LN of the sum: ``inf`` for an all-zero row, as Excel's #NUM!).

    One fused op instead of five (and a stable log) in both the forward and the backward pass."""

    res = L.resolve

    def same(a: str, b: str) -> bool:  # one value, or two identical expressions of the same values
        a, b = res(a), res(b)
        return a == b or (a in L.defs and L.defs[a] == L.defs.get(b))

    def setline(name: str, expr: str) -> None:
        for k, line in enumerate(L.lines):
            if line.startswith(name + " = "):
                L.lines[k] = f"{name} = {expr}"
                L.defs[name] = expr
                return

    soft = {}  # softmax variable -> its logits
    for name, expr in list(L.defs.items()):
        m = re.fullmatch(rf"\(({_NAME}) / ({_NAME})\)", expr)
        if not m:
            continue
        x, u = res(m.group(1)), res(m.group(2))
        ue = L.defs.get(u, "")
        mu = re.fullmatch(rf"({_NAME})\.unsqueeze\(1\)", ue)
        sv = res(mu.group(1)) if mu else u
        ms = re.fullmatch(rf"({_NAME})\.sum\(1(, keepdim=True)?\)", L.defs.get(sv, ""))
        if not ms or bool(mu) == bool(ms.group(2)) or res(ms.group(1)) != x:
            continue
        me = re.fullmatch(rf"torch\.exp\(({_NAME})\)", L.defs.get(x, ""))
        if not me:
            continue
        z = res(me.group(1))
        mz = re.fullmatch(rf"\(({_NAME}) - ({_NAME})\)", L.defs.get(z, ""))
        mm = mz and re.fullmatch(rf"({_NAME})\.amax\(1, keepdim=True\)", L.defs.get(res(mz.group(2)), ""))
        if mm and same(mm.group(1), mz.group(1)):
            z = res(mz.group(1))  # softmax is the same for any per-row shift; the sheet's is the row max
        elif mm:
            continue  # shifted by another row's max: leave it
        setline(name, f"torch.softmax({z}, 1)")
        L.note(f"softmax: {name} = EXP/SUM of {z} -> torch.softmax({z}, 1)")
        soft[name] = z
    negs = {}  # log line -> the line that negates it (the sheet's -LN(...))
    for name, expr in L.defs.items():
        m = re.fullmatch(rf"\(-({_NAME})\)", expr)
        if m:
            negs.setdefault(res(m.group(1)), name)
    for name, expr in list(L.defs.items()):
        m = re.fullmatch(rf"torch\.log\(({_NAME})\)", expr)
        ml = m and re.fullmatch(rf"\(({_NAME}) \* ({_NAME})\)\.sum\(1\)", L.defs.get(res(m.group(1)), ""))
        if not ml:
            continue
        a, b = res(ml.group(1)), res(ml.group(2))
        for o, p in ((a, b), (b, a)):
            if p not in soft:
                continue
            z, lab = soft[p], _label_column(L, o) if _zero_one(L, o) else None
            cols = re.fullmatch(r"D\[:, \d+:\d+\]", L.defs.get(o, ""))
            if lab is None and not cols and not _zero_one(L, o):
                continue
            if cols:  # one-hot columns of the data rows: checked, like labels, once per dataset
                ce = f'torch.nn.functional.cross_entropy({z}, {o}, reduction="none")'
                guard = f"(TR or _one_hot({L.defs[o]}))"
                L.guards.append(f"_one_hot({L.defs[o]})")
                L.g["_one_hot"] = _one_hot
            elif lab is not None:  # one-hot of an integer label column: the label itself is the target
                col, n = lab
                ce = f'torch.nn.functional.cross_entropy({z}, D[:, {col}].long(), reduction="none")'
                guard = f"(TR or _int_labels(D[:, {col}], {n}))"
                L.guards.append(f"_int_labels(D[:, {col}], {n})")
                o = _inline(L, o)  # the one-hot only where the labels are not 0..n-1
                L.g["_int_labels"] = _int_labels
            else:  # soft targets: -(o * log_softmax(z)).sum(1)
                ce = f'torch.nn.functional.cross_entropy({z}, {o}, reduction="none")'
                guard = f"bool(({o}.sum(1) == 1).all())"
            sheet = f"torch.log(({o} * torch.softmax({z}, 1)).sum(1))"
            if name in negs:
                line = negs[name]
                setline(line, f"({ce} if {guard} else (-{sheet}))")
                for mean, e in list(L.defs.items()):  # AVERAGE of the loss column: the fused mean
                    mm = re.fullmatch(rf"({_NAME})\.mean\(\)", e)
                    if mm and res(mm.group(1)) == line:
                        fused = ce.replace('reduction="none"', 'reduction="mean"')
                        setline(mean, f"({fused} if {guard} else (-{sheet}).mean())")
            else:
                setline(name, f"((-{ce}) if {guard} else {sheet})")
            L.note(f"cross-entropy: -LN(SUMPRODUCT({o}, softmax({z}))) -> cross_entropy, guarded by {guard}")
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
    m = re.fullmatch(rf"torch\.where\(({_NAME}), 1\.0, ({_NAME}|0\.0)\)", L.origin(name))
    if not m or not (m.group(2) == "0.0" or _zero_one(L, m.group(2)) and not bool(L.g[m.group(2)].any())):
        return None
    me = re.fullmatch(rf"torch\.eq\(({_NAME}), (k\d+)\)", L.origin(m.group(1)))
    if not me:
        return None
    mc = re.fullmatch(r"D\[:, (\d+):(\d+)\]", L.origin(me.group(1)))
    k = L.g[me.group(2)]
    if not mc or int(mc.group(2)) != int(mc.group(1)) + 1 or k.dim() != 2 or k.shape[0] != 1:
        return None
    n = k.shape[1]
    if not torch.equal(k[0], torch.arange(n, dtype=k.dtype, device=k.device)):
        return None
    return int(mc.group(1)), n


def _inline(L: Lowerer, name: str, depth: int = 0) -> str:
    """The expression of a temporary with the temporaries it reads written out (for a rarely taken branch)."""
    expr = L.defs.get(name)
    if expr is None or depth > 20:
        return name
    return "(" + re.sub(r"\b[tb]\d+\b", lambda m: _inline(L, m.group(0), depth + 1), expr) + ")"


def _zero_one(L: Lowerer, name: str) -> bool:
    """Whether ``name`` can only hold 0s and 1s and needs no gradient (data or constants only)."""
    expr = L.defs.get(name)
    if expr is None:
        t = L.g.get(name)
        return isinstance(t, torch.Tensor) and bool(((t == 0) | (t == 1)).all())
    if L.resolve(name) != name:
        return _zero_one(L, L.resolve(name))
    m = re.fullmatch(rf"torch\.where\(({_NAME}), ([^,]+), ([^,]+)\)", expr)
    if not m or not _no_grad(L, m.group(1)):
        return False
    return all(v in ("1.0", "0.0") or _zero_one(L, v) for v in (m.group(2), m.group(3)))


def _no_grad(L: Lowerer, name: str) -> bool:
    """Whether ``name`` is computed from the data rows and constants only (no parameter, no closure)."""
    expr = L.defs.get(name)
    if expr is None:
        return name == "D" or name.startswith("k")
    if "env" in expr or re.search(r"\bp\d+\b", expr):
        return False
    return all(_no_grad(L, v) for v in re.findall(r"\b[tbk]\d+\b|\bD\b", expr) if v != name)
