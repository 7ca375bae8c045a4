"""Matrix functions: SUMPRODUCT, MMULT (one matmul where the shapes allow), TRANSPOSE, SUMXMY2,
SUMX2MY2, SUMX2PY2, ROWS, COLUMNS. SUMPRODUCT reads empty cells and text as 0; MMULT makes them #VALUE!."""

from __future__ import annotations

import math

import numpy as np
import torch

from xlmnist.compile.values import ERR, NUM, ExcelError, Value, num_of, numbers, where_kind

_PLANS: dict = {}


def einsum(ops: list[torch.Tensor], subs: list[str], out: str) -> torch.Tensor:
    """einsum over ``[bR, bC, h, w]``-style operands, squeezing the size-1 (broadcast) dims first."""
    key = (tuple(tuple(t.shape) for t in ops), tuple(subs), out)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = _plan(ops, subs, out)
    shapes, eq, oshape = plan
    if eq == "mv":  # matrix @ vector: one matmul, as a hand-written model would do
        (a, b), (sa, sb) = ops, shapes
        return torch.mv(a.reshape(sa), b.reshape(sb)).reshape(oshape)
    if eq == "vm":
        (a, b), (sa, sb) = ops, shapes
        return torch.mv(b.reshape(sb), a.reshape(sa)).reshape(oshape)
    if eq == "mmT":  # [n, k] x [m, k] -> [n, m]: the copied-down MMULT(row, weight column) block
        (a, b), (sa, sb) = ops, shapes
        return torch.mm(a.reshape(sa), b.reshape(sb).T).reshape(oshape)
    if eq == "mm":
        (a, b), (sa, sb) = ops, shapes
        return torch.mm(a.reshape(sa), b.reshape(sb)).reshape(oshape)
    return torch.einsum(eq, *[t.reshape(s) for t, s in zip(ops, shapes)]).reshape(oshape)


def _plan(ops, subs, out):
    sizes: dict[str, int] = {}
    for t, s in zip(ops, subs):
        for d, ch in zip(t.shape, s):
            if d != 1:
                if sizes.get(ch, d) != d:
                    raise ExcelError("ranges of different sizes (#VALUE!)")
                sizes[ch] = d
    squeezed, ss = [], []
    for t, s in zip(ops, subs):
        keep = [k for k, ch in enumerate(s) if t.shape[k] != 1]  # broadcast dims go: "aj,j->a" is a matvec
        squeezed.append(t.reshape([t.shape[k] for k in keep]))
        ss.append("".join(s[k] for k in keep))
    o = "".join(ch for ch in out if ch in sizes)
    oshape = tuple(sizes.get(ch, 1) for ch in out)
    if len(ss) == 2:
        s1, s2 = ss
        n = lambda chars: math.prod(sizes[c] for c in chars)  # noqa: E731
        if s2 and s1.endswith(s2) and s1[: -len(s2)] == o and o:
            return [(n(o), n(s2)), (n(s2),)], "mv", oshape
        if s1 and s2.endswith(s1) and s2[: -len(s1)] == o and o:
            return [(n(s1),), (n(o), n(s1))], "vm", oshape
        if len(s1) == 2 and len(s2) == 2 and s1[1] == s2[0] and o == s1[0] + s2[1]:
            return [tuple(squeezed[0].shape), tuple(squeezed[1].shape)], "mm", oshape
        if len(s1) == 2 and len(s2) == 2 and s1[1] == s2[1] and o == s1[0] + s2[0]:  # rows x columns
            return [tuple(squeezed[0].shape), tuple(squeezed[1].shape)], "mmT", oshape
    return [tuple(t.shape) for t in squeezed], ",".join(ss) + "->" + o, oshape


def _same_size(a: torch.Tensor, b: torch.Tensor) -> None:
    for d in (2, 3):
        if a.shape[d] != b.shape[d] and 1 not in (a.shape[d], b.shape[d]):
            raise ExcelError("ranges of different sizes (#VALUE!)")


def f_sumproduct(ctx, args):
    ts = [numbers(a) for a in args]
    if len(ts) == 1:
        return Value(ts[0].sum((2, 3), keepdim=True))
    res = einsum(ts, ["abij"] * len(ts), "ab")
    return Value(res.reshape(res.shape[0], res.shape[1], 1, 1))


def f_mmult(ctx, args):
    """MMULT; an empty, text or boolean cell in either matrix makes the whole result #VALUE! (NaN), as
    Excel documents and LibreOffice does."""
    a, b = (numbers(x) for x in args)
    if a.shape[3] != b.shape[2]:
        raise ExcelError(f"MMULT of {a.shape[2]}x{a.shape[3]} by {b.shape[2]}x{b.shape[3]} (#VALUE!)")
    out = einsum([a, b], ["abik", "abkj"], "abij")
    bad = [~m.all(3, keepdim=True).all(2, keepdim=True) for m in map(_numeric, args) if m is not None]
    for m in bad:
        out = torch.where(m, torch.full_like(out, math.nan), out)
    return Value(out)


def _numeric(v: Value) -> torch.Tensor | None:
    return where_kind(v, (NUM, ERR))


def _pairs(args, term):
    """SUMXMY2/SUMX2MY2: ``term(x, y)`` summed over the pairs where both cells hold numbers (Excel skips
    a pair with an empty, text or boolean cell; an error cell gives the error)."""
    a, b = args
    _same_size(a.t, b.t)
    x, y = a.t, b.t
    ok = [m for m in (where_kind(v, (NUM, ERR)) for v in (a, b)) if m is not None]
    if ok:  # zero both sides of a skipped pair first: no NaN of a text cell reaches the gradient
        ok = ok[0] if len(ok) == 1 else ok[0] & ok[1]
        x, y = torch.where(ok, x, torch.zeros_like(x)), torch.where(ok, y, torch.zeros_like(y))
    return Value(term(x, y).sum((2, 3), keepdim=True))


def f_sumxmy2(ctx, args):
    return _pairs(args, lambda x, y: (x - y) ** 2)


def f_sumx2my2(ctx, args):
    return _pairs(args, lambda x, y: x**2 - y**2)


def f_sumx2py2(ctx, args):
    return _pairs(args, lambda x, y: x**2 + y**2)


def f_transpose(ctx, args):
    v = args[0]
    tr = lambda x: None if x is None else np.swapaxes(x, 2, 3)  # noqa: E731
    return Value(v.t.transpose(2, 3), tr(v.kind), tr(v.s))


def f_rows(ctx, args):
    return num_of(ctx, args[0].t.shape[2])


def f_columns(ctx, args):
    return num_of(ctx, args[0].t.shape[3])
