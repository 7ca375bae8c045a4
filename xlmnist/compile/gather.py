"""Lookups whose positions depend on cells, as gathers: INDEX and OFFSET with per-cell positions, MATCH
over any values (text ids too) one position per cell, VLOOKUP/HLOOKUP/XLOOKUP as MATCH + INDEX.

Positions carry no gradient (they are whole numbers); the looked-up values do: a gather's gradient
flows into exactly the table cells it read (an embedding table trained through INDEX/MATCH or
OFFSET/MATCH rows). A position outside the table is an error value (NaN: ``#REF!``), a key not found
is ``#N/A`` (NaN), as Excel gives them. Values are ``[bR, bC, h, w]`` (see
:mod:`xlmnist.compile.values`).
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from xlmnist.compile.values import EMPTY, ERR, ExcelError, Value, pyvalues, where


def positions(v: Value) -> torch.Tensor:
    """A position argument per cell: ``[R, C, 1, 1]`` whole numbers (truncated, as Excel), no gradient."""
    t = v.t.detach()
    if t.shape[2] * t.shape[3] != 1:
        raise ExcelError("a position must be one number per cell")
    return torch.trunc(t)


def take(table: Value, ri: torch.Tensor, ci: torch.Tensor) -> Value:
    """``table[..., ri, ci]`` per cell with 0-based float index tensors ``ri`` ``[R, C, hh, 1]`` and
    ``ci`` ``[R, C, 1, ww]``; an index outside the table (or NaN) gives an error value (NaN)."""
    T = table.t
    h, w = T.shape[2], T.shape[3]
    R = max(T.shape[0], ri.shape[0], ci.shape[0])
    C = max(T.shape[1], ri.shape[1], ci.shape[1])
    ok = (ri >= 0) & (ri < h) & (ci >= 0) & (ci < w)  # NaN compares False
    flat = (torch.where(ok, ri, 0.0) * w + torch.where(ok, ci, 0.0)).long().expand(R, C, -1, -1)
    hh, ww = flat.shape[2], flat.shape[3]
    if T.shape[0] == 1 and T.shape[1] == 1:  # one table for all cells (the usual $A$1:$C$9)
        out = T.reshape(-1)[flat]
    else:  # a window per cell
        out = T.expand(R, C, h, w).reshape(R, C, h * w).gather(2, flat.reshape(R, C, hh * ww))
        out = out.reshape(R, C, hh, ww)
    ok = ok.expand(R, C, hh, ww)
    bad = not bool(ok.all())
    if bad:
        out = torch.where(ok, out, torch.full_like(out, math.nan))
    kind = s = None
    if table.kind is not None or bad:
        idx, okn = flat.cpu().numpy(), ok.cpu().numpy()
        k = np.zeros((1, 1, h, w), np.int8) if table.kind is None else table.kind
        kind = np.where(okn, _pick(k, idx, R, C), ERR).astype(np.int8)
        if table.s is not None:
            s = np.where(okn, _pick(table.s, idx, R, C), None)
    return Value(out, kind, s)


def _pick(a: np.ndarray, idx: np.ndarray, R: int, C: int) -> np.ndarray:
    """The numpy twin of the gather in :func:`take` (kind codes, strings)."""
    h, w = a.shape[2], a.shape[3]
    if a.shape[0] == 1 and a.shape[1] == 1:
        return a.reshape(-1)[idx]
    flat = np.broadcast_to(a, (R, C, h, w)).reshape(R, C, h * w)
    return np.take_along_axis(flat, idx.reshape(R, C, -1), 2).reshape(idx.shape)


def _whole(n: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    shape = [1, 1, 1, 1]
    shape[dim] = n
    return torch.arange(n, dtype=like.dtype, device=like.device).reshape(shape)


def index(table: Value, r: Value | None, c: Value | None) -> Value:
    """INDEX(table, r, [c]) with per-cell positions; a position 0 (constant) is the whole row/column."""
    T = table.t
    h, w = T.shape[2], T.shape[3]
    if c is None and h == 1:  # INDEX(row_vector, n)
        r, c = None, r
    ri = _whole(h, 2, T) if r is None or _zero(r) else positions(r) - 1
    ci = _whole(w, 3, T) if c is None or _zero(c) else positions(c) - 1
    if c is None and w > 1 and r is not None and not _zero(r):
        ci = _whole(w, 3, T)  # INDEX(2-D table, r): the whole row
    return take(table, ri, ci)


def _zero(v: Value) -> bool:
    return v.t.numel() == 1 and not v.t.requires_grad and float(v.t.reshape(())) == 0.0


def offset(reach: Value, rows: Value, cols: Value, top: int, left: int, h: int, w: int) -> Value:
    """OFFSET with cell-dependent offsets over ``reach`` (the rectangle it can address), the base at
    (``top``, ``left``) inside it, the result ``h`` x ``w``."""
    T = reach.t
    ri = positions(rows) + top + _whole(h, 2, T)
    ci = positions(cols) + left + _whole(w, 3, T)
    return take(reach, ri, ci)


# ---- MATCH ------------------------------------------------------------------------------------------
def _key(x):
    """A value as MATCH compares it: (class, value); text case-insensitive."""
    if isinstance(x, bool):
        return (2, float(x))
    if isinstance(x, str):
        return (1, x.lower())
    if x is None:
        return None
    return (0, float(x))


def _wild(text: str):
    """Excel's wildcards (``*``, ``?``, ``~`` escapes) as a regex, or None without any."""
    if not any(ch in text for ch in "*?"):
        return None
    out, esc = [], False
    for ch in text:
        if esc:
            out.append(re.escape(ch))
            esc = False
        elif ch == "~":
            esc = True
        else:
            out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def match(look: Value, rng: Value, mode: int, last: bool = False) -> Value:
    """Positions (1-based, float, NaN = #N/A) of ``look`` (one value per cell) in the one-row or
    one-column ``rng``. ``mode`` 0: exact (text wildcards); 1: the last value <= key (MATCH on sorted
    data); -1: the last value >= key; 2/-2: XLOOKUP's smallest >= key / largest <= key."""
    if look.t.shape[2] * look.t.shape[3] != 1 or 1 not in rng.t.shape[2:]:
        raise ExcelError("MATCH needs one lookup value and a one-row or one-column range")
    keys = pyvalues(look)
    vals = pyvalues(rng)
    R, C = max(keys.shape[0], vals.shape[0]), max(keys.shape[1], vals.shape[1])
    keys = np.broadcast_to(keys, (R, C, 1, 1))
    shared = vals.shape[0] == 1 and vals.shape[1] == 1  # one range for all cells (the usual $F$2:$F$20)
    vals = vals.reshape(vals.shape[0], vals.shape[1], -1)
    first = None
    if shared and mode == 0 and not last:
        first = {}
        for p, x in enumerate(vals[0, 0]):
            first.setdefault(_key(x), p + 1)
    out = np.full((R, C), math.nan)
    for i in range(R):
        for j in range(C):
            key = keys[i, j, 0, 0]
            k = _key(key)
            if k is None or (k[0] == 0 and not math.isfinite(k[1])):
                continue  # an empty or error key: #N/A / the error
            row = vals[0, 0] if shared else vals[min(i, vals.shape[0] - 1), min(j, vals.shape[1] - 1)]
            if mode != 0:
                out[i, j] = _approx(row, k, mode)
            elif first is not None and not (k[0] == 1 and _wild(key)):
                out[i, j] = first.get(k, math.nan)
            else:
                out[i, j] = _scan(row, k, key, last)
    return Value(torch.tensor(out, dtype=look.t.dtype, device=look.t.device).reshape(R, C, 1, 1))


def _scan(row, k, key, last: bool) -> float:
    rx = _wild(key) if k[0] == 1 else None
    hit = math.nan
    for p, x in enumerate(row):
        kx = _key(x)
        if kx == k or (rx is not None and kx is not None and kx[0] == 1 and rx.fullmatch(x)):
            hit = p + 1
            if not last:
                return hit
    return hit


def _approx(row, k, mode: int) -> float:
    best, bestv = math.nan, None
    for p, x in enumerate(row):
        kx = _key(x)
        if kx is None or kx[0] != k[0]:
            continue
        if mode == 1 and kx <= k or mode == -1 and kx >= k:
            best = p + 1
        elif mode == -2 and kx <= k and (bestv is None or kx > bestv):
            best, bestv = p + 1, kx
        elif mode == 2 and kx >= k and (bestv is None or kx < bestv):
            best, bestv = p + 1, kx
    return best


# ---- the lookup functions -----------------------------------------------------------------------------
def _const(v: Value, default):
    if v is None or (v.kind is not None and (np.asarray(v.kind) == EMPTY).all()):
        return default
    if v.t.numel() != 1 or v.t.requires_grad:
        raise ExcelError("needs a constant here")
    return float(v.t.reshape(()))


def _part(v: Value, rs, cs) -> Value:
    def sl(a):
        return (
            None
            if a is None
            else a[:, :, rs if a.shape[2] > 1 else slice(None), cs if a.shape[3] > 1 else slice(None)]
        )

    return Value(v.t[:, :, rs, cs], sl(v.kind), sl(v.s))


def f_vlookup(ctx, args):
    table = args[1]
    exact = _const(args[3], 1.0) == 0.0 if len(args) > 3 else False
    pos = match(args[0], _part(table, slice(None), slice(0, 1)), 0 if exact else 1)
    return index(table, pos, args[2])


def f_hlookup(ctx, args):
    table = args[1]
    exact = _const(args[3], 1.0) == 0.0 if len(args) > 3 else False
    pos = match(args[0], _part(table, slice(0, 1), slice(None)), 0 if exact else 1)
    return index(table, args[2], pos)


_XMODE = {0: 0, 2: 0, -1: -2, 1: 2}


def f_xlookup(ctx, args):
    look, ret = args[1], args[2]
    mode = int(_const(args[4], 0.0)) if len(args) > 4 else 0
    search = int(_const(args[5], 1.0)) if len(args) > 5 else 1
    if mode not in _XMODE or search not in (1, -1, 2, -2):
        raise ExcelError("XLOOKUP match_mode must be -1, 0, 1 or 2 and search_mode 1, -1, 2 or -2")
    pos = match(args[0], look, _XMODE[mode], last=search == -1)
    T = ret.t
    if look.t.shape[3] == 1:  # a column of keys: rows of the return range
        out = take(ret, pos.t - 1, _whole(T.shape[3], 3, T))
    else:
        out = take(ret, _whole(T.shape[2], 2, T), pos.t - 1)
    if len(args) > 3 and not (args[3].kind is not None and (np.asarray(args[3].kind) == EMPTY).all()):
        out = where(torch.isnan(pos.t), args[3], out)
    return out


def f_offset(ctx, args):
    """``_OFFSET(reach, rows, cols, top, left, h, w)``: what :mod:`xlmnist.formula.graph` makes of an
    OFFSET with cell-dependent offsets."""
    top, left, h, w = (int(float(a.t.reshape(()))) for a in args[3:7])
    return offset(args[0], args[1], args[2], top, left, h, w)


LOOKUPS = {
    "VLOOKUP": (f_vlookup, 3, 4),
    "HLOOKUP": (f_hlookup, 3, 4),
    "XLOOKUP": (f_xlookup, 3, 6),
    "_OFFSET": (f_offset, 7, 7),
}
