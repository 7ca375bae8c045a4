"""The one table of Excel functions and operators -> torch builders.

Every value inside a block is a :class:`Value` whose tensor has shape ``[bR, bC, h, w]``: the block's
rows and columns (size 1 where the value does not vary along them, so it broadcasts) and the per-cell
range shape (1 x 1 for a scalar). Builders take ``(ctx, args)`` with ``args`` a list of Values.
"""

from __future__ import annotations

import math

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


def _mask(v: Value, kinds=(NUM,)) -> torch.Tensor | None:
    """Where ``v`` holds plain numbers (what SUM/AVERAGE/COUNT look at in a range), or None for all."""
    if v.kind is None:
        return None
    k = np.broadcast_to(v.kind, v.t.shape)
    return torch.from_numpy(np.isin(k, kinds)).to(v.t.device)


def _numbers(v: Value, fill: float = 0.0) -> torch.Tensor:
    m = _mask(v)
    return v.t if m is None else torch.where(m, v.t, torch.full_like(v.t, fill))


def _num_of(ctx, x) -> Value:
    return Value(torch.as_tensor(float(x), dtype=ctx.dtype, device=ctx.device).reshape(1, 1, 1, 1))


def _reduce(args, fn, fill):
    """Reduce each argument over its range dims, then across arguments."""
    parts = [fn(_numbers(a, fill), (2, 3)) for a in args]
    out = parts[0]
    for p in parts[1:]:
        out = fn(torch.stack(torch.broadcast_tensors(out, p)), (0,)) if fn is not torch.sum else out + p
    return out


def _count(v: Value, kinds=(NUM,)) -> torch.Tensor:
    m = _mask(v, kinds)
    if m is None:
        n = v.t.shape[2] * v.t.shape[3]
        return torch.full((1, 1, 1, 1), float(n), dtype=v.t.dtype, device=v.t.device)
    return m.to(v.t.dtype).sum((2, 3), keepdim=True)


def _total(parts):
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def f_sum(ctx, args):
    return Value(_total([_numbers(a).sum((2, 3), keepdim=True) for a in args]))


def f_count(ctx, args):
    return Value(_total([_count(a) for a in args]))


def f_counta(ctx, args):
    return Value(_total([_count(a, (NUM, BOOL, TEXT, ERR)) for a in args]))


def f_average(ctx, args):
    if len(args) == 1 and args[0].kind is None:
        return Value(args[0].t.mean((2, 3), keepdim=True))
    total = f_sum(ctx, args).t
    n = f_count(ctx, args).t
    return Value(total / n)  # 0/0 -> NaN: #DIV/0!


def _extreme(args, big: float, op):
    vals = []
    for a in args:
        x = _numbers(a, big)
        x = x.amax((2, 3), keepdim=True) if op == "max" else x.amin((2, 3), keepdim=True)
        vals.append(x)
    out = vals[0]
    for v in vals[1:]:
        out = torch.maximum(out, v) if op == "max" else torch.minimum(out, v)
    return Value(torch.where(torch.isinf(out) & (out.sign() * big > 0), torch.zeros_like(out), out))


def f_max(ctx, args):
    return _extreme(args, -math.inf, "max")


def f_min(ctx, args):
    return _extreme(args, math.inf, "min")


_LET = "abij"


_PLANS: dict = {}


def _einsum(ops: list[torch.Tensor], subs: list[str], out: str) -> torch.Tensor:
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


def f_sumproduct(ctx, args):
    ts = [_numbers(a) for a in args]
    if len(ts) == 1:
        return Value(ts[0].sum((2, 3), keepdim=True))
    res = _einsum(ts, ["abij"] * len(ts), "ab")
    return Value(res.reshape(res.shape[0], res.shape[1], 1, 1))


def f_mmult(ctx, args):
    a, b = (_numbers(x) for x in args)
    if a.shape[3] != b.shape[2]:
        raise ExcelError(f"MMULT of {a.shape[2]}x{a.shape[3]} by {b.shape[2]}x{b.shape[3]} (#VALUE!)")
    return Value(_einsum([a, b], ["abik", "abkj"], "abij"))


def f_sumsq(ctx, args):
    return Value(_total([(_numbers(a) ** 2).sum((2, 3), keepdim=True) for a in args]))


def f_sumxmy2(ctx, args):
    a, b = (_numbers(x) for x in args)
    return Value(((a - b) ** 2).sum((2, 3), keepdim=True))


def f_transpose(ctx, args):
    v = args[0]
    tr = (lambda x: None if x is None else np.swapaxes(x, 2, 3)) if True else None
    return Value(v.t.transpose(2, 3), tr(v.kind), tr(v.s))


def _truth(v: Value) -> torch.Tensor:
    return v.b if v.b is not None else v.t != 0


def _where(c: torch.Tensor, a: Value, b: Value) -> Value:
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


def f_if(ctx, args):
    cond = args[0]
    yes = args[1] if len(args) > 1 else Value(torch.ones_like(cond.t), np.full((1, 1, 1, 1), BOOL, np.int8))
    no = args[2] if len(args) > 2 else Value(torch.zeros_like(cond.t), np.full((1, 1, 1, 1), BOOL, np.int8))
    out = _where(_truth(cond), yes, no)
    if not cond.t.requires_grad:  # an error condition gives the error
        bad = torch.isnan(cond.t)
        if bool(bad.any()):
            out.t = torch.where(bad, cond.t, out.t)
    return out


def f_iferror(ctx, args):
    v, alt = args
    bad = ~torch.isfinite(v.t)
    if v.kind is not None:
        bad = bad & torch.from_numpy(np.broadcast_to(v.kind, v.t.shape) != TEXT).to(bad.device)
    return _where(bad, alt, v)


def _bool(t: torch.Tensor) -> Value:
    return Value(t, np.full((1, 1, 1, 1), BOOL, np.int8))


def f_and(ctx, args):
    return _bool(
        torch.stack(
            torch.broadcast_tensors(*[(_numbers(a, 1.0) != 0).all((2, 3), keepdim=True) for a in args])
        )
        .all(0)
        .to(args[0].t.dtype)
    )


def f_or(ctx, args):
    return _bool(
        torch.stack(torch.broadcast_tensors(*[(_numbers(a) != 0).any((2, 3), keepdim=True) for a in args]))
        .any(0)
        .to(args[0].t.dtype)
    )


def f_not(ctx, args):
    return _bool((args[0].t == 0).to(args[0].t.dtype))


def f_round(ctx, args):
    x = args[0].t
    d = args[1].t if len(args) > 1 else torch.zeros_like(x)
    f = 10.0**d
    return Value(torch.sign(x) * torch.floor(torch.abs(x) * f + 0.5) / f)


def f_log(ctx, args):
    base = args[1].t if len(args) > 1 else 10.0
    return Value(torch.log(args[0].t) / (math.log(base) if isinstance(base, float) else torch.log(base)))


def f_index(ctx, args):
    v = args[0]
    h, w = v.t.shape[2], v.t.shape[3]
    r = _const_int(args[1]) if len(args) > 1 else 0
    c = _const_int(args[2]) if len(args) > 2 else 0
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


def _const_int(v: Value) -> int:
    if v.t.numel() != 1 or v.t.requires_grad:
        raise ExcelError("needs a constant number here")
    return int(v.t.reshape(()).item())


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
    mtype = _const_int(args[2]) if len(args) > 2 else 1
    if _plain_numbers(look) and _plain_numbers(rng):
        return _match_numbers(look, rng, mtype)
    vals = _pyvalues(rng).reshape(-1)
    key = _pyvalues(look).reshape(-1)[0]
    for k, x in enumerate(vals):
        if mtype == 0 and _eq(x, key):
            return _num_of(ctx, k + 1)
    if mtype == 1:
        best = None
        for k, x in enumerate(vals):
            if isinstance(x, float) == isinstance(key, float) and x is not None and x <= key:
                best = k + 1
        if best is not None:
            return _num_of(ctx, best)
    return Value(torch.full((1, 1, 1, 1), math.nan, dtype=ctx.dtype, device=ctx.device))


def _eq(a, b) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    return a == b


def _pyvalues(v: Value) -> np.ndarray:
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


def _order(x) -> tuple:
    """Excel's comparison order: numbers < text < booleans; text compares case-insensitively."""
    if x is None:
        return (0, 0.0)
    if isinstance(x, bool):
        return (2, float(x))
    if isinstance(x, str):
        return (1, x.lower())
    return (0, float(x))


_CMP = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def compare(ctx, op: str, a: Value, b: Value) -> Value:
    fn = _CMP[op]
    if a.s is None and b.s is None:
        if b.kind is None and b.t.numel() == 1 and a.t.requires_grad:
            res = fn(a.t, float(b.t.reshape(())))
        else:
            res = fn(a.t, b.t)
        out = _bool(res.to(a.t.dtype))
        out.b = res
        return out
    if a.t.requires_grad or b.t.requires_grad:
        raise ExcelError("comparing text with a value that depends on trainable cells is not supported")
    pa, pb = np.broadcast_arrays(_pyvalues(a), _pyvalues(b))
    ofn = np.frompyfunc(lambda x, y: bool(fn(_order(x), _order(y))), 2, 1)
    res = ofn(pa, pb).astype(np.float64)
    return _bool(torch.from_numpy(res).to(dtype=ctx.dtype, device=ctx.device))


def concat(ctx, a: Value, b: Value) -> Value:
    if a.t.requires_grad or b.t.requires_grad:
        raise ExcelError("& on values that depend on trainable cells is not supported")
    pa, pb = np.broadcast_arrays(_pyvalues(a), _pyvalues(b))
    s = np.frompyfunc(lambda x, y: _text(x) + _text(y), 2, 1)(pa, pb).astype(object)
    t = torch.full(s.shape, math.nan, dtype=ctx.dtype, device=ctx.device)
    return Value(t, np.full(s.shape, TEXT, np.int8), s)


def _text(x) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return "TRUE" if x else "FALSE"
    if isinstance(x, float):
        return repr(int(x)) if x == int(x) else repr(x)
    return str(x)


def _elementwise(fn):
    return lambda ctx, args: Value(fn(*[a.t for a in args]))


ARITH = {
    "+": torch.add,
    "-": torch.sub,
    "*": torch.mul,
    "/": torch.div,
    "^": torch.pow,
}

# name -> (builder, min args, max args)
FUNCTIONS = {
    "SUM": (f_sum, 1, 255),
    "SUMPRODUCT": (f_sumproduct, 1, 255),
    "MMULT": (f_mmult, 2, 2),
    "TRANSPOSE": (f_transpose, 1, 1),
    "AVERAGE": (f_average, 1, 255),
    "COUNT": (f_count, 1, 255),
    "COUNTA": (f_counta, 1, 255),
    "MAX": (f_max, 1, 255),
    "MIN": (f_min, 1, 255),
    "IF": (f_if, 1, 3),
    "IFERROR": (f_iferror, 2, 2),
    "AND": (f_and, 1, 255),
    "OR": (f_or, 1, 255),
    "NOT": (f_not, 1, 1),
    "ABS": (_elementwise(torch.abs), 1, 1),
    "EXP": (_elementwise(torch.exp), 1, 1),
    "LN": (_elementwise(torch.log), 1, 1),
    "LOG": (f_log, 1, 2),
    "LOG10": (_elementwise(torch.log10), 1, 1),
    "SQRT": (_elementwise(torch.sqrt), 1, 1),
    "POWER": (_elementwise(torch.pow), 2, 2),
    "TANH": (_elementwise(torch.tanh), 1, 1),
    "SIGN": (_elementwise(torch.sign), 1, 1),
    "SUMSQ": (f_sumsq, 1, 255),
    "SUMXMY2": (f_sumxmy2, 2, 2),
    "ROUND": (f_round, 1, 2),
    "INDEX": (f_index, 2, 3),
    "MATCH": (f_match, 2, 3),
}
