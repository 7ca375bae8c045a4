"""Lookup functions with constant positions: INDEX, MATCH, CHOOSE."""

from __future__ import annotations

import math

import numpy as np
import torch

from xlmnist.compile.values import NUM, ExcelError, Value, const_int, num_of, pyvalues, where


def f_index(ctx, args):
    v = args[0]
    h, w = v.t.shape[2], v.t.shape[3]
    r = const_int(args[1]) if len(args) > 1 else 0
    c = const_int(args[2]) if len(args) > 2 else 0
    if h == 1 and len(args) == 2:  # INDEX(row_vector, n)
        r, c = 1, r
    if r > h or c > w or r < 0 or c < 0:
        raise ExcelError("INDEX out of range (#REF!)")
    rs = slice(None) if r == 0 else slice(r - 1, r)
    cs = slice(None) if c == 0 else slice(c - 1, c)
    return Value(
        v.t[:, :, rs, cs],
        None if v.kind is None else _bsl(v.kind, rs, cs),
        None if v.s is None else _bsl(v.s, rs, cs),
    )


def _bsl(a, rs, cs):
    return a[:, :, rs if a.shape[2] > 1 else slice(None), cs if a.shape[3] > 1 else slice(None)]


def _plain_numbers(v: Value) -> bool:
    return v.kind is None or bool(np.all(np.asarray(v.kind) == NUM))


def _match_numbers(look: Value, rng: Value, mtype: int) -> Value:
    """MATCH over plain numbers, vectorised over the block's cells (e.g. ``MATCH(MAX(B2:K2),B2:K2,0)``
    copied down: one position per row). Not found -> NaN (#N/A). The position carries no gradient."""
    key, vals = look.t.detach(), rng.t.detach()
    if key.shape[2] * key.shape[3] != 1 or 1 not in vals.shape[2:]:
        raise ExcelError("MATCH needs one lookup value and a one-row or one-column range")
    R, C = max(key.shape[0], vals.shape[0]), max(key.shape[1], vals.shape[1])
    n = vals.shape[2] * vals.shape[3]
    flat = vals.expand(R, C, *vals.shape[2:]).reshape(R, C, n)
    k = key.expand(R, C, 1, 1).reshape(R, C, 1)
    pos = torch.arange(1, n + 1, dtype=flat.dtype, device=flat.device)
    if mtype == 0:
        idx = torch.where(flat == k, pos, torch.full_like(pos, math.inf)).amin(-1)
        idx = torch.where(torch.isinf(idx), torch.full_like(idx, math.nan), idx)
    else:  # 1: last value <= key; -1: last value >= key (Excel assumes sorted data)
        hit = flat <= k if mtype == 1 else flat >= k
        idx = torch.where(hit, pos, torch.zeros_like(pos)).amax(-1)
        idx = torch.where(idx == 0, torch.full_like(idx, math.nan), idx)
    return Value(idx.reshape(R, C, 1, 1))


def f_match(ctx, args):
    look, rng = args[0], args[1]
    mtype = const_int(args[2]) if len(args) > 2 else 1
    if _plain_numbers(look) and _plain_numbers(rng):
        return _match_numbers(look, rng, mtype)
    vals = pyvalues(rng).reshape(-1)
    key = pyvalues(look).reshape(-1)[0]
    for k, x in enumerate(vals):
        if mtype == 0 and _eq(x, key):
            return num_of(ctx, k + 1)
    if mtype == 1:
        best = None
        for k, x in enumerate(vals):
            if isinstance(x, float) == isinstance(key, float) and x is not None and x <= key:
                best = k + 1
        if best is not None:
            return num_of(ctx, best)
    return Value(torch.full((1, 1, 1, 1), math.nan, dtype=ctx.dtype, device=ctx.device))


def _eq(a, b) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    return a == b


def f_choose(ctx, args):
    """CHOOSE(k, v1, v2, ...): k may vary per cell (it is truncated); out of 1..n is #VALUE! (NaN)."""
    k = torch.trunc(args[0].t.detach())
    nan = Value(torch.full((1, 1, 1, 1), math.nan, dtype=ctx.dtype, device=ctx.device))
    out = nan
    for i in range(len(args) - 1, 0, -1):
        out = where(k == i, args[i], out)
    return out
