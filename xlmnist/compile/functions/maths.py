"""Elementwise math: ABS, SIGN, SQRT, SQRTPI, EXP, LN, LOG, LOG10, POWER, MOD, QUOTIENT, the rounding
family (EVEN, ODD too), PI, DEGREES, RADIANS and the trigonometric and hyperbolic functions and their
inverses. An empty cell is 0 here; a domain error is NaN or +-inf."""

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


def f_atan2(ctx, args):
    """ATAN2(x, y): the angle of the point (x, y), Excel's argument order; ATAN2(0, 0) is #DIV/0!."""
    x, y = args[0].t, args[1].t
    return Value(torch.where((x == 0) & (y == 0), math.nan, torch.atan2(y, x)))


def f_quotient(ctx, args):
    """The integer part of n / d (towards zero); d = 0 is #DIV/0!."""
    return Value(torch.trunc(args[0].t / args[1].t))


def f_even(ctx, args):
    """Rounded away from zero to an even integer."""
    x = args[0].t
    return Value(torch.sign(x) * torch.ceil(torch.abs(x) / 2) * 2)


def f_odd(ctx, args):
    """Rounded away from zero to an odd integer (ODD(0) is 1)."""
    x = args[0].t
    side = torch.where(x < 0, -1.0, 1.0).to(x)
    return Value(side * (torch.ceil((torch.abs(x) + 1) / 2) * 2 - 1))


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
    "ASIN": (_elementwise(torch.asin), 1, 1),
    "ACOS": (_elementwise(torch.acos), 1, 1),
    "ATAN2": (f_atan2, 2, 2),
    "ASINH": (_elementwise(torch.asinh), 1, 1),
    "ACOSH": (_elementwise(torch.acosh), 1, 1),
    "ATANH": (_elementwise(torch.atanh), 1, 1),
    "DEGREES": (_elementwise(lambda x: x * (180 / math.pi)), 1, 1),
    "RADIANS": (_elementwise(lambda x: x * (math.pi / 180)), 1, 1),
    "SQRTPI": (_elementwise(lambda x: torch.sqrt(x * math.pi)), 1, 1),
    "QUOTIENT": (f_quotient, 2, 2),
    "EVEN": (f_even, 1, 1),
    "ODD": (f_odd, 1, 1),
}
