"""The criteria functions: COUNTIF(S), SUMIF(S), AVERAGEIF(S), MINIFS, MAXIFS.

A criterion is a number or boolean (equal to it), or text with an optional operator (``">0"``,
``"<>x"``, ``"=a*"``: ``*``, ``?`` wildcards, ``~`` escapes them). Numeric criteria match number cells
(and may vary per cell of a block, e.g. ``COUNTIF($A$1:$A$9,A1)`` copied down); ``"<>..."`` matches
every cell that does not match ``"=..."``, empty cells included; ``""`` / ``"="`` match empty cells.
The matched cells of the value range contribute their numbers (empty cells and text are skipped)."""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from xlmnist.compile.functions.operators import CMP, compare_py
from xlmnist.compile.values import BOOL, EMPTY, NUM, TEXT, ExcelError, Value, kinds, pyvalues, where_kind

_OPS = ("<>", ">=", "<=", "=", "<", ">")


def _parse(x):
    """A criterion's Python value -> (operator, operand)."""
    if x is None:
        return "=", 0.0
    if not isinstance(x, str):
        return "=", x
    op = next((o for o in _OPS if x.startswith(o)), "=")
    rest = x[len(op) :] if x.startswith(op) else x
    try:
        return op, float(rest)
    except ValueError:
        pass
    if rest.upper() in ("TRUE", "FALSE"):
        return op, rest.upper() == "TRUE"
    return op, rest


def _wild(pattern: str):
    parts = re.split(r"(~.|\*|\?)", pattern)
    rx = "".join(
        ".*" if p == "*" else "." if p == "?" else re.escape(p[1:] if p[:1] == "~" else p) for p in parts
    )
    return re.compile(rx, re.IGNORECASE | re.DOTALL)


def _equal_text(rng: Value, s: str) -> torch.Tensor:
    k = kinds(rng)
    if s == "":
        hit = k == EMPTY
        if rng.s is not None:
            hit = hit | ((k == TEXT) & (np.broadcast_to(rng.s, k.shape) == ""))
    elif rng.s is None:
        hit = np.zeros(k.shape, bool)
    else:
        rx = _wild(s)
        strs = np.broadcast_to(rng.s, k.shape)
        hit = (k == TEXT) & np.frompyfunc(lambda v: isinstance(v, str) and bool(rx.fullmatch(v)), 1, 1)(
            strs
        ).astype(bool)
    return torch.from_numpy(np.ascontiguousarray(hit)).to(rng.t.device)


def _numeric(rng: Value) -> torch.Tensor:
    """The number cells of ``rng`` (not errors): what a numeric criterion looks at."""
    num = where_kind(rng, (NUM,))
    return torch.isfinite(rng.t) if num is None else num & torch.isfinite(rng.t)


def match(rng: Value, crit: Value) -> torch.Tensor:
    """Where the cells of ``rng`` meet ``crit`` (bool, ``[bR, bC, h, w]``)."""
    num = _numeric(rng)
    if crit.s is None and (crit.kind is None or bool(np.all(np.asarray(crit.kind) == NUM))):
        return num & (rng.t == crit.t)  # a number, possibly one per cell of the block
    if crit.t.numel() != 1:
        return _per_cell(rng, crit)
    return _match_one(rng, pyvalues(crit).reshape(-1)[0], num)


def _per_cell(rng: Value, crit: Value) -> torch.Tensor:
    """A criterion that varies over the block (``">"&D1`` copied down): one match per distinct one."""
    if crit.t.requires_grad or crit.t.shape[2:] != (1, 1):
        raise ExcelError("a criterion that varies from cell to cell must be a constant, one per cell")
    vals = pyvalues(crit)
    keys = np.frompyfunc(lambda v: (type(v).__name__, v), 1, 1)(vals)
    num = _numeric(rng)
    out = None
    for key in dict.fromkeys(keys.reshape(-1)):
        hit = _match_one(rng, key[1], num)
        sel = torch.from_numpy(np.frompyfunc(lambda k, key=key: k == key, 1, 1)(keys).astype(bool))
        out = hit & sel.to(hit.device) if out is None else torch.where(sel.to(hit.device), hit, out)
    return out


def _match_one(rng: Value, criterion, num: torch.Tensor) -> torch.Tensor:
    op, x = _parse(criterion)
    neg = op == "<>"
    if neg:
        op = "="
    if isinstance(x, bool):
        hit = where_kind(rng, (BOOL,))
        hit = torch.zeros_like(num) if hit is None else hit & CMP[op](rng.t, float(x))
    elif isinstance(x, float):
        hit = num & CMP[op](rng.t, x)
    elif op == "=":
        hit = _equal_text(rng, x)
    else:  # text ordering: text cells only
        vals = pyvalues(rng)
        cmp = np.frompyfunc(lambda v: isinstance(v, str) and compare_py(op, v, x), 1, 1)
        hit = torch.from_numpy(cmp(vals).astype(bool)).to(rng.t.device)
    return ~hit if neg else hit


def _all(pairs) -> torch.Tensor:
    """The criteria of ``(range, criterion)`` pairs, all met (the ranges must be the same size)."""
    hits = [match(r, c) for r, c in pairs]
    sizes = {tuple(h.shape[2:]) for h in hits}
    if len(sizes) > 1:
        raise ExcelError("the criteria ranges are of different sizes (#VALUE!)")
    out = hits[0]
    for h in hits[1:]:
        out = out & h
    return out


def _pairs(args):
    if len(args) % 2:
        raise ExcelError("needs range, criterion pairs")
    return [(args[i], args[i + 1]) for i in range(0, len(args), 2)]


def _values(v: Value, hit: torch.Tensor):
    if tuple(v.t.shape[2:]) != tuple(hit.shape[2:]):
        raise ExcelError("the value range and the criteria range are of different sizes")
    ok = hit & torch.isfinite(v.t)
    m = where_kind(v, (NUM,))
    return ok if m is None else ok & m


def _sum(v: Value, ok: torch.Tensor) -> torch.Tensor:
    return torch.where(ok, v.t, torch.zeros_like(v.t)).sum((2, 3), keepdim=True)


def _count(ok: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return ok.to(like.dtype).sum((2, 3), keepdim=True)


def f_countif(ctx, args):
    hit = _all(_pairs(args))
    return Value(_count(hit, args[0].t))


def f_sumif(ctx, args):
    rng, crit = args[0], args[1]
    v = args[2] if len(args) > 2 else rng
    return Value(_sum(v, _values(v, match(rng, crit))))


def f_sumifs(ctx, args):
    v = args[0]
    return Value(_sum(v, _values(v, _all(_pairs(args[1:])))))


def _average(v, ok):
    return Value(_sum(v, ok) / _count(ok, v.t))  # nothing matched: 0/0 -> #DIV/0!


def f_averageif(ctx, args):
    rng, crit = args[0], args[1]
    v = args[2] if len(args) > 2 else rng
    return _average(v, _values(v, match(rng, crit)))


def f_averageifs(ctx, args):
    v = args[0]
    return _average(v, _values(v, _all(_pairs(args[1:]))))


def _extreme_ifs(big: float):
    def build(ctx, args):
        v = args[0]
        ok = _values(v, _all(_pairs(args[1:])))
        x = torch.where(ok, v.t, torch.full_like(v.t, big))
        out = x.amax((2, 3), keepdim=True) if big < 0 else x.amin((2, 3), keepdim=True)
        return Value(torch.where(ok.any((2, 3), keepdim=True), out, torch.zeros_like(out)))

    return build


CRITERIA = {
    "COUNTIF": (f_countif, 2, 2),
    "COUNTIFS": (f_countif, 2, 254),
    "SUMIF": (f_sumif, 2, 3),
    "SUMIFS": (f_sumifs, 3, 255),
    "AVERAGEIF": (f_averageif, 2, 3),
    "AVERAGEIFS": (f_averageifs, 3, 255),
    "MINIFS": (_extreme_ifs(math.inf), 3, 255),
    "MAXIFS": (_extreme_ifs(-math.inf), 3, 255),
}
