"""Elementwise math: ABS, SIGN, SQRT, EXP, LN, LOG, LOG10, POWER, MOD, the rounding family, PI and the
trigonometric and hyperbolic functions. An empty cell is 0 here; a domain error is NaN or +-inf."""

from __future__ import annotations

import math

import torch

from xlmnist.compile.values import Value, num_of


def _elementwise(fn):
    return lambda ctx, args: Value(fn(*[a.t for a in args]))


def _digits(args, x):
    return args[1].t if len(args) > 1 else torch.zeros_like(x)


def f_round(ctx, args):
    """Half away from zero, as Excel rounds."""
    x = args[0].t
    f = 10.0 ** _digits(args, x)
    return Value(torch.sign(x) * torch.floor(torch.abs(x) * f + 0.5) / f)


def f_roundup(ctx, args):
    x = args[0].t
    f = 10.0 ** _digits(args, x)
    return Value(torch.sign(x) * torch.ceil(torch.abs(x) * f) / f)


def f_rounddown(ctx, args):
    x = args[0].t
    f = 10.0 ** _digits(args, x)
    return Value(torch.trunc(x * f) / f)


def _multiple(rnd):
    """FLOOR/CEILING(x, significance): x > 0 with a negative significance is #NUM!; significance 0 is
    0 for CEILING, #DIV/0! for FLOOR (unless x is 0)."""

    def build(ctx, args):
        x = args[0].t
        s = args[1].t if len(args) > 1 else torch.ones_like(x)
        out = rnd(x / s) * s
        out = torch.where((x > 0) & (s < 0), torch.full_like(out, math.nan), out)
        zero = torch.zeros_like(out) if rnd is torch.ceil else torch.where(x == 0, 0.0, math.inf).to(out)
        return Value(torch.where(s == 0, zero, out))

    return build


def f_log(ctx, args):
    base = args[1].t if len(args) > 1 else 10.0
    return Value(torch.log(args[0].t) / (math.log(base) if isinstance(base, float) else torch.log(base)))


def f_mod(ctx, args):
    """The remainder with the divisor's sign (Excel's MOD); MOD(x, 0) is #DIV/0!."""
    x, d = args[0].t, args[1].t
    return Value(x - d * torch.floor(x / d))  # x / 0 -> inf, 0 * inf -> NaN


MATH = {
    "ABS": (_elementwise(torch.abs), 1, 1),
    "SIGN": (_elementwise(torch.sign), 1, 1),
    "SQRT": (_elementwise(torch.sqrt), 1, 1),
    "EXP": (_elementwise(torch.exp), 1, 1),
    "LN": (_elementwise(torch.log), 1, 1),
    "LOG": (f_log, 1, 2),
    "LOG10": (_elementwise(torch.log10), 1, 1),
    "POWER": (_elementwise(torch.pow), 2, 2),
    "MOD": (f_mod, 2, 2),
    "ROUND": (f_round, 1, 2),
    "ROUNDUP": (f_roundup, 2, 2),
    "ROUNDDOWN": (f_rounddown, 2, 2),
    "TRUNC": (f_rounddown, 1, 2),
    "INT": (_elementwise(torch.floor), 1, 1),
    "FLOOR": (_multiple(torch.floor), 2, 2),
    "CEILING": (_multiple(torch.ceil), 2, 2),
    "PI": (lambda ctx, args: num_of(ctx, math.pi), 0, 0),
    "SIN": (_elementwise(torch.sin), 1, 1),
    "COS": (_elementwise(torch.cos), 1, 1),
    "TAN": (_elementwise(torch.tan), 1, 1),
    "ATAN": (_elementwise(torch.atan), 1, 1),
    "TANH": (_elementwise(torch.tanh), 1, 1),
    "SINH": (_elementwise(torch.sinh), 1, 1),
    "COSH": (_elementwise(torch.cosh), 1, 1),
}
