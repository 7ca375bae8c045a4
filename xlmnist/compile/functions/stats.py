"""Aggregates over ranges: SUM, SUMSQ, PRODUCT, COUNT, COUNTA, COUNTBLANK, AVERAGE, AVERAGEA, MIN, MAX,
LARGE, SMALL, MEDIAN and the variances and standard deviations. In a range they read the numbers and
skip empty cells, text and booleans (:func:`xlmnist.compile.values.numbers`); AVERAGEA reads text
as 0 and booleans as 0/1. Each reduces over the range dims and keeps the block dims."""

from __future__ import annotations

import math

import numpy as np
import torch

from xlmnist.compile.values import (
    BOOL,
    EMPTY,
    ERR,
    NUM,
    TEXT,
    ExcelError,
    Value,
    const_int,
    kinds,
    numbers,
    total,
    where_kind,
)


def flat(args, codes=(NUM,), fill: float = 0.0, text_as=None):
    """All arguments' cells side by side: values ``[bR, bC, n]`` (skipped cells = ``fill``) and the mask
    of the cells of kinds ``codes``, the ones counted (None: all of them)."""
    xs, ms = [], []
    for a in args:
        m = where_kind(a, codes)
        x = a.t
        if text_as is not None and a.kind is not None:
            x = torch.where(where_kind(a, (TEXT,)), torch.full_like(x, text_as), x)
        if m is not None:  # error cells stay NaN: the result is the error
            x = torch.where(m | where_kind(a, (ERR,)), x, torch.full_like(x, fill))
        xs.append(x)
        ms.append(m)
    shape = torch.broadcast_shapes(*[(x.shape[0], x.shape[1]) for x in xs])

    def cat(ts):
        return torch.cat([t.expand(*shape, *t.shape[2:]).reshape(*shape, -1) for t in ts], -1)

    if all(m is None for m in ms):
        return cat(xs), None
    return cat(xs), cat([torch.ones_like(x, dtype=torch.bool) if m is None else m for x, m in zip(xs, ms)])


def _cell(t: torch.Tensor) -> Value:
    return Value(t.reshape(*t.shape[:2], 1, 1))


def _count_of(x, m):
    if m is None:
        return torch.full(x.shape[:2], float(x.shape[-1]), dtype=x.dtype, device=x.device)
    return m.to(x.dtype).sum(-1)


def f_sum(ctx, args):
    return Value(total([numbers(a).sum((2, 3), keepdim=True) for a in args]))


def f_sumsq(ctx, args):
    return Value(total([(numbers(a) ** 2).sum((2, 3), keepdim=True) for a in args]))


def f_product(ctx, args):
    x, _ = flat(args, fill=1.0)
    return _cell(x.prod(-1))


def _counter(codes):
    def build(ctx, args):
        x, m = flat(args, codes)
        return _cell(_count_of(x, m))

    return build


def f_countblank(ctx, args):
    """Empty cells and cells holding the empty text ""."""
    (a,) = args
    if a.kind is None:
        return _cell(torch.zeros(a.t.shape[:2], dtype=a.t.dtype, device=a.t.device))
    k = kinds(a)
    blank = k == EMPTY
    if a.s is not None:
        blank = blank | ((k == TEXT) & (np.broadcast_to(a.s, k.shape) == ""))
    return _cell(torch.from_numpy(blank).to(a.t).sum((2, 3)))


def f_average(ctx, args):
    if len(args) == 1 and args[0].kind is None:
        return Value(args[0].t.mean((2, 3), keepdim=True))
    x, m = flat(args)
    return _cell(x.sum(-1) / _count_of(x, m))  # 0/0 -> NaN: #DIV/0!


def f_averagea(ctx, args):
    x, m = flat(args, (NUM, BOOL, TEXT, ERR), text_as=0.0)
    return _cell(x.sum(-1) / _count_of(x, m))


def _extreme(big: float):
    """MAX/MIN: per argument over its range, then across arguments (``MAX(0, x)``: one
    ``torch.maximum``; a tie splits the gradient); no numbers at all gives 0."""
    pick = torch.maximum if big < 0 else torch.minimum

    def build(ctx, args):
        out = None
        for a in args:
            x = numbers(a, big)
            x = x.amax((2, 3), keepdim=True) if big < 0 else x.amin((2, 3), keepdim=True)
            out = x if out is None else pick(out, x)
        return Value(torch.where(out == big, torch.zeros_like(out), out))

    return build


def _kth(largest: bool):
    def build(ctx, args):
        x, m = flat(args[:1], fill=-math.inf if largest else math.inf)
        k = const_int(args[1])
        if not 1 <= k <= x.shape[-1]:
            raise ExcelError(f"k = {k} is outside 1..{x.shape[-1]} (#NUM!)")
        out = torch.topk(x, k, -1, largest=largest).values[..., -1]
        if m is not None:
            out = torch.where(_count_of(x, m) >= k, out, torch.full_like(out, math.nan))
        return _cell(out)

    return build


def f_median(ctx, args):
    x, m = flat(args, fill=math.inf)
    s = torch.sort(x, -1).values
    n = _count_of(x, m).long()
    lo = ((n - 1).clamp(min=0) // 2).unsqueeze(-1)
    hi = (n // 2).clamp(max=x.shape[-1] - 1).unsqueeze(-1)
    out = (s.gather(-1, lo) + s.gather(-1, hi)).squeeze(-1) / 2
    return _cell(torch.where(n > 0, out, torch.full_like(out, math.nan)))


def _variance(ddof: int, root: bool):
    def build(ctx, args):
        x, m = flat(args)
        n = _count_of(x, m)
        mean = x.sum(-1, keepdim=True) / n.unsqueeze(-1)
        d = x - mean if m is None else torch.where(m, x - mean, torch.zeros_like(x))
        var = (d * d).sum(-1) / (n - ddof)  # too few numbers: 0/0 -> NaN (#DIV/0!)
        return _cell(torch.sqrt(var) if root else var)

    return build


# Where a boolean typed directly as an argument (TRUE, A1>0) counts as 1/0 while one in a referenced cell or
# an array constant is skipped (Excel: SUM(TRUE,1) is 2; "logical values ... that you type directly into
# the list of arguments are counted"); the compiler turns such arguments into numbers.
DIRECT_BOOLS = {"SUM", "SUMSQ", "PRODUCT", "COUNT", "AVERAGE", "MAX", "MIN", "MEDIAN"}
DIRECT_BOOLS |= {"VAR.S", "VAR", "VAR.P", "VARP", "STDEV.S", "STDEV", "STDEV.P", "STDEVP"}

STATS = {
    "SUM": (f_sum, 1, 255),
    "SUMSQ": (f_sumsq, 1, 255),
    "PRODUCT": (f_product, 1, 255),
    "COUNT": (_counter((NUM,)), 1, 255),
    "COUNTA": (_counter((NUM, BOOL, TEXT, ERR)), 1, 255),
    "COUNTBLANK": (f_countblank, 1, 1),
    "AVERAGE": (f_average, 1, 255),
    "AVERAGEA": (f_averagea, 1, 255),
    "MAX": (_extreme(-math.inf), 1, 255),
    "MIN": (_extreme(math.inf), 1, 255),
    "LARGE": (_kth(True), 2, 2),
    "SMALL": (_kth(False), 2, 2),
    "MEDIAN": (f_median, 1, 255),
    "VAR.S": (_variance(1, False), 1, 254),
    "VAR": (_variance(1, False), 1, 254),
    "VAR.P": (_variance(0, False), 1, 254),
    "VARP": (_variance(0, False), 1, 254),
    "STDEV.S": (_variance(1, True), 1, 254),
    "STDEV": (_variance(1, True), 1, 254),
    "STDEV.P": (_variance(0, True), 1, 254),
    "STDEVP": (_variance(0, True), 1, 254),
}
