"""Lookup functions: INDEX, MATCH, CHOOSE (per-cell positions: :mod:`xlmnist.compile.gather`)."""

from __future__ import annotations

import math

import numpy as np
import torch

from xlmnist.compile import gather
from xlmnist.compile.values import NUM, ExcelError, Value, const_int, where


def f_index(ctx, args):
    if not all(_fixed(a) for a in args[1:]):  # per-cell positions (INDEX(table, MATCH(...))): a gather
        return gather.index(args[0], args[1], args[2] if len(args) > 2 else None)
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


def _fixed(v: Value) -> bool:
    t = v.t
    return t.numel() == 1 and not t.requires_grad and bool(torch.isfinite(t).all())


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
    return gather.match(look, rng, mtype)  # text, booleans, empty cells: one position per cell


def f_choose(ctx, args):
    """CHOOSE(k, v1, v2, ...): k may vary per cell (it is truncated); out of 1..n is #VALUE! (NaN)."""
    k = torch.trunc(args[0].t.detach())
    nan = Value(torch.full((1, 1, 1, 1), math.nan, dtype=ctx.dtype, device=ctx.device))
    out = nan
    for i in range(len(args) - 1, 0, -1):
        out = where(k == i, args[i], out)
    return out
