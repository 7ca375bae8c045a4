"""The operators: arithmetic (``+ - * / ^``), comparisons and ``&``."""

from __future__ import annotations

import math

import numpy as np
import torch

from xlmnist.compile.values import (
    BOOL,
    EMPTY,
    TEXT,
    ExcelError,
    Value,
    as_bool,
    blank_like,
    kinds,
    order,
    pyvalues,
    text,
)

ARITH = {
    "+": torch.add,
    "-": torch.sub,
    "*": torch.mul,
    "/": torch.div,
    "^": torch.pow,
}

CMP = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def compare_py(op: str, x, y) -> bool:
    """One comparison of Python values by Excel's rules (an empty cell is the other side's blank)."""
    if x is None:
        x = blank_like(y)
    if y is None:
        y = blank_like(x)
    return bool(CMP[op](order(x), order(y)))


def _ranks(a: Value, b: Value):
    """Excel's type order of each side (number 0 < boolean 2; an empty cell takes the other side's), or
    None where no boolean meets a number (the tensors alone decide)."""
    if not any(v.kind is not None and (np.asarray(v.kind) == BOOL).any() for v in (a, b)):
        return None
    ka, kb = np.broadcast_arrays(kinds(a), kinds(b))
    ra, rb = np.where(ka == BOOL, 2, 0), np.where(kb == BOOL, 2, 0)
    ra, rb = np.where(ka == EMPTY, rb, ra), np.where(kb == EMPTY, ra, rb)
    return None if (ra == rb).all() else (ra, rb)


def compare(ctx, op: str, a: Value, b: Value) -> Value:
    fn = CMP[op]
    if a.s is None and b.s is None:  # numbers, booleans and empty cells (0): the tensors compare
        if b.kind is None and b.t.numel() == 1 and a.t.requires_grad:
            res = fn(a.t, float(b.t.reshape(())))
        else:
            res = fn(a.t, b.t)
        ranks = _ranks(a, b)
        if ranks is not None:  # a boolean against a number: the type order decides (TRUE=1 is FALSE)
            ra, rb = ranks
            by_type = torch.from_numpy(np.ascontiguousarray(fn(ra, rb))).to(res.device)
            res = torch.where(torch.from_numpy(np.ascontiguousarray(ra == rb)).to(res.device), res, by_type)
        out = as_bool(res.to(a.t.dtype))
        out.b = res
        return out
    if a.t.requires_grad or b.t.requires_grad:
        raise ExcelError("comparing text with a value that depends on trainable cells is not supported")
    pa, pb = np.broadcast_arrays(pyvalues(a), pyvalues(b))
    res = np.frompyfunc(lambda x, y: compare_py(op, x, y), 2, 1)(pa, pb).astype(np.float64)
    return as_bool(torch.from_numpy(res).to(dtype=ctx.dtype, device=ctx.device))


def concat(ctx, a: Value, b: Value) -> Value:
    if a.t.requires_grad or b.t.requires_grad:
        raise ExcelError("& on values that depend on trainable cells is not supported")
    pa, pb = np.broadcast_arrays(pyvalues(a), pyvalues(b))
    s = np.frompyfunc(lambda x, y: text(x) + text(y), 2, 1)(pa, pb).astype(object)
    t = torch.full(s.shape, math.nan, dtype=ctx.dtype, device=ctx.device)
    return Value(t, np.full(s.shape, TEXT, np.int8), s)
