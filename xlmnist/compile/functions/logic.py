"""Logic and information functions: IF, IFS, IFERROR, IFNA, SWITCH, AND, OR, XOR, NOT, TRUE(), FALSE(), ISBLANK,
ISNUMBER, ISTEXT, ISLOGICAL, ISERROR, ISNA. An empty cell is FALSE; in a range AND/OR/XOR read the
numbers and booleans and skip empty cells and text."""

from __future__ import annotations

import math

import numpy as np
import torch

from xlmnist.compile.functions.operators import compare
from xlmnist.compile.values import (
    BOOL,
    EMPTY,
    ERR,
    NUM,
    TEXT,
    Value,
    as_bool,
    is_error,
    kinds,
    truth,
    where,
    where_kind,
)


def _na(ctx) -> Value:
    return Value(torch.full((1, 1, 1, 1), math.nan, dtype=ctx.dtype, device=ctx.device))


def _const_bool(ctx, value: bool) -> Value:
    return as_bool(torch.full((1, 1, 1, 1), float(value), dtype=ctx.dtype, device=ctx.device))


def f_if(ctx, args):
    cond = args[0]
    yes = args[1] if len(args) > 1 else as_bool(torch.ones_like(cond.t))
    no = args[2] if len(args) > 2 else as_bool(torch.zeros_like(cond.t))
    out = where(truth(cond), yes, no)
    if not cond.t.requires_grad:  # an error condition gives the error
        bad = torch.isnan(cond.t)
        if bool(bad.any()):
            out.t = torch.where(bad, cond.t, out.t)
    return out


def f_ifs(ctx, args):
    """IFS(c1, v1, c2, v2, ...): the first true condition's value; none true is #N/A."""
    out = _na(ctx)
    for i in range(len(args) - 2, -1, -2):
        out = where(truth(args[i]), args[i + 1], out)
    return out


def f_switch(ctx, args):
    """SWITCH(x, v1, r1, v2, r2, ..., [default]); no match and no default is #N/A."""
    x, rest = args[0], args[1:]
    out = rest[-1] if len(rest) % 2 else _na(ctx)
    for i in range(len(rest) - 2 - len(rest) % 2, -1, -2):
        out = where(truth(compare(ctx, "=", x, rest[i])), rest[i + 1], out)
    return out


def f_iferror(ctx, args):
    v, alt = args
    return where(is_error(v), alt, v)


def f_ifna(ctx, args):
    """IFNA: NaN is the not-found (#N/A) of MATCH and the lookups; +-inf (a division by zero) stays.
    (A NaN from 0/0 or SQRT(-1) is caught too: the tensor does not tell those errors apart.)"""
    v, alt = args
    bad = torch.isnan(v.t)
    if v.kind is not None:
        bad = bad & torch.from_numpy(np.broadcast_to(v.kind, v.t.shape) != TEXT).to(bad.device)
    return where(bad, alt, v)


def _logicals(a: Value) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Truth of each cell, and where the cell counts (numbers and booleans; None: all)."""
    return a.t != 0 if a.b is None else a.b, where_kind(a, (NUM, BOOL))


def _flat_truths(args):
    ts, ms = [], []
    for a in args:
        t, m = _logicals(a)
        ts.append(t)
        ms.append(torch.ones_like(t) if m is None else m)
    shape = torch.broadcast_shapes(*[(t.shape[0], t.shape[1]) for t in ts])
    flat = lambda xs: torch.cat([x.expand(*shape, *x.shape[2:]).reshape(*shape, -1) for x in xs], -1)  # noqa: E731
    return flat(ts), flat(ms)


def _reshape(t: torch.Tensor, dtype) -> Value:
    return as_bool(t.to(dtype).reshape(*t.shape[:2], 1, 1))


def f_and(ctx, args):
    t, m = _flat_truths(args)
    return _reshape((t | ~m).all(-1), args[0].t.dtype)


def f_or(ctx, args):
    t, m = _flat_truths(args)
    return _reshape((t & m).any(-1), args[0].t.dtype)


def f_xor(ctx, args):
    t, m = _flat_truths(args)
    return _reshape((t & m).sum(-1) % 2 == 1, args[0].t.dtype)


def f_not(ctx, args):
    return as_bool((~truth(args[0])).to(args[0].t.dtype))


def _is(codes, computed):
    """IS* on a kind: ``computed(t)`` decides for a value computed from trainable cells (kind None)."""

    def build(ctx, args):
        v = args[0]
        if v.kind is None:
            return as_bool(computed(v.t).to(v.t.dtype))
        k = np.isin(kinds(v), codes) & ~((kinds(v) == NUM) & ~np.isfinite(v.t.detach().cpu().numpy()))
        if ERR in codes:
            k = k | ((kinds(v) != TEXT) & ~np.isfinite(v.t.detach().cpu().numpy()))
        return as_bool(torch.from_numpy(k).to(dtype=v.t.dtype, device=v.t.device))

    return build


LOGIC = {
    "IF": (f_if, 1, 3),
    "IFS": (f_ifs, 2, 254),
    "SWITCH": (f_switch, 3, 254),
    "IFERROR": (f_iferror, 2, 2),
    "IFNA": (f_ifna, 2, 2),
    "AND": (f_and, 1, 255),
    "OR": (f_or, 1, 255),
    "XOR": (f_xor, 1, 254),
    "NOT": (f_not, 1, 1),
    "TRUE": (
        lambda ctx, args: _const_bool(ctx, True),
        0,
        0,
    ),  # TRUE(): LibreOffice writes VLOOKUP(...,FALSE())
    "FALSE": (lambda ctx, args: _const_bool(ctx, False), 0, 0),
    "ISBLANK": (_is((EMPTY,), lambda t: torch.zeros_like(t, dtype=torch.bool)), 1, 1),
    "ISNUMBER": (_is((NUM,), torch.isfinite), 1, 1),
    "ISTEXT": (_is((TEXT,), lambda t: torch.zeros_like(t, dtype=torch.bool)), 1, 1),
    "ISLOGICAL": (_is((BOOL,), lambda t: torch.zeros_like(t, dtype=torch.bool)), 1, 1),
    "ISERROR": (_is((ERR,), lambda t: ~torch.isfinite(t)), 1, 1),
}
