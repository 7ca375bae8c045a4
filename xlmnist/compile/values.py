"""The values builders pass around, and Excel's coercion rules, declared once.

Every value inside a block is a :class:`Value` whose tensor has shape ``[bR, bC, h, w]``: the block's
rows and columns (size 1 where the value does not vary along them, so it broadcasts) and the per-cell
range shape (1 x 1 for a scalar). Constants read from cells also carry an int8 ``kind`` code array
(:data:`NUM`, :data:`BOOL`, :data:`TEXT`, :data:`EMPTY`, :data:`ERR`) and their strings; a value
computed from trainable cells has ``kind`` None (plain numbers; NaN or +-inf is an error value).

Excel's rules for an empty cell (absent from the sheet's XML, or formatted but empty):

- arithmetic and logic read it as 0 / FALSE (its tensor holds 0),
- comparisons read it as the other side's blank: ``""`` against text, FALSE against a boolean, 0
  against a number (:func:`blank_like`), so ``A1=""`` and ``A1=0`` are both TRUE,
- SUM, AVERAGE, COUNT, MIN, MAX, the statistics and the ``*IF(S)`` functions skip it in a range, as
  they skip text and booleans there (:func:`numbers`; an error cell is not skipped: the result is the
  error); SUMPRODUCT reads it (and text) as 0; MMULT over it is #VALUE!, as Excel documents,
- ISBLANK and COUNTBLANK see it (kind :data:`EMPTY`).
"""

from __future__ import annotations

import numpy as np
import torch

NUM, BOOL, TEXT, EMPTY, ERR = 0, 1, 2, 3, 4


class Value:
    """A tensor ``t`` plus, for constants read from cells, an int8 ``kind`` code array and strings ``s``."""

    __slots__ = ("t", "kind", "s", "b")

    def __init__(self, t: torch.Tensor, kind: np.ndarray | None = None, s: np.ndarray | None = None, b=None):
        self.t, self.kind, self.s, self.b = t, kind, s, b  # b: the bool tensor of a comparison

    @property
    def shape(self):
        return tuple(self.t.shape)


class ExcelError(Exception):
    """Raised by a builder for a problem it can name (the compiler adds sheet!cell)."""


def num_of(ctx, x) -> Value:
    return Value(torch.as_tensor(float(x), dtype=ctx.dtype, device=ctx.device).reshape(1, 1, 1, 1))


def typed(v: Value) -> Value:
    """An argument typed into the formula (not a reference): its booleans count as numbers (SUM(TRUE,1))."""
    if v.kind is None or not (v.kind == BOOL).any():
        return v
    return Value(v.t, np.where(v.kind == BOOL, NUM, v.kind).astype(np.int8), v.s)


def as_bool(t: torch.Tensor) -> Value:
    """A 0/1 tensor as Excel booleans."""
    return Value(t, np.full((1, 1, 1, 1), BOOL, np.int8))


def kinds(v: Value) -> np.ndarray:
    """The kind codes broadcast to ``v``'s shape (all NUM for a computed value)."""
    if v.kind is None:
        return np.zeros(v.t.shape, np.int8)
    return np.broadcast_to(v.kind, v.t.shape)


def where_kind(v: Value, codes) -> torch.Tensor | None:
    """Where ``v`` holds one of the kinds ``codes`` (bool tensor), or None when ``v`` has no kind array."""
    if v.kind is None:
        return None
    return torch.from_numpy(np.isin(np.broadcast_to(v.kind, v.t.shape), codes)).to(v.t.device)


def numbers(v: Value, fill: float = 0.0) -> torch.Tensor:
    """``v``'s numbers with the cells a range function skips set to ``fill`` (0: SUMPRODUCT); an
    error cell stays NaN, so the result is the error, as in Excel."""
    m = where_kind(v, (NUM, ERR))
    return v.t if m is None else torch.where(m, v.t, torch.full_like(v.t, fill))


def truth(v: Value) -> torch.Tensor:
    """Logic: nonzero is TRUE, an empty cell is FALSE."""
    return v.b if v.b is not None else v.t != 0


def is_error(v: Value) -> torch.Tensor:
    """Error values: NaN/inf numbers, and cells holding an error (text, also NaN, is not one)."""
    bad = ~torch.isfinite(v.t)
    if v.kind is not None:
        bad = bad & torch.from_numpy(np.broadcast_to(v.kind, v.t.shape) != TEXT).to(bad.device)
    return bad


def pyvalues(v: Value) -> np.ndarray:
    """Object array of Python values (float/str/bool/None) of a constant Value."""
    t = v.t.detach().cpu().numpy()
    out = t.astype(object)
    if v.kind is not None:
        k = np.broadcast_to(v.kind, t.shape)
        out = np.where(k == BOOL, t != 0, out)
        out = np.where(k == EMPTY, None, out)
        if v.s is not None:
            out = np.where(k == TEXT, np.broadcast_to(v.s, t.shape), out)
    return out


def blank_like(other):
    """What an empty cell is when compared with ``other``: "" to text, FALSE to a boolean, else 0."""
    if isinstance(other, str):
        return ""
    if isinstance(other, bool):
        return False
    return 0.0


def order(x) -> tuple:
    """Excel's comparison order: numbers < text < booleans; text compares case-insensitively."""
    if x is None:
        return (0, 0.0)
    if isinstance(x, bool):
        return (2, float(x))
    if isinstance(x, str):
        return (1, x.lower())
    return (0, float(x))


def text(x) -> str:
    """A value as ``&`` writes it."""
    if x is None:
        return ""
    if isinstance(x, bool):
        return "TRUE" if x else "FALSE"
    if isinstance(x, float):
        return repr(int(x)) if x == int(x) else repr(x)
    return str(x)


def where(c: torch.Tensor, a: Value, b: Value) -> Value:
    """``c ? a : b`` elementwise, kinds and strings included."""
    t = torch.where(c, a.t, b.t)
    kind = s = None
    if a.kind is not None or b.kind is not None or a.s is not None or b.s is not None:
        cn = c.cpu().numpy()
        ka = a.kind if a.kind is not None else np.zeros((1, 1, 1, 1), np.int8)
        kb = b.kind if b.kind is not None else np.zeros((1, 1, 1, 1), np.int8)
        kind = np.where(cn, ka, kb).astype(np.int8)
        if a.s is not None or b.s is not None:
            sa = a.s if a.s is not None else np.full((1, 1, 1, 1), None, object)
            sb = b.s if b.s is not None else np.full((1, 1, 1, 1), None, object)
            s = np.where(cn, sa, sb)
    return Value(t, kind, s)


def const_int(v: Value) -> int:
    """A constant whole number argument (an INDEX position, LARGE's k)."""
    if v.t.numel() != 1 or v.t.requires_grad:
        raise ExcelError("needs a constant number here")
    return int(v.t.reshape(()).item())


def total(parts):
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out
