"""The normal distribution: NORM.DIST, NORM.S.DIST, NORM.INV, NORM.S.INV (and their Excel 2007 names
NORMDIST, NORMSDIST, NORMINV, NORMSINV) and STANDARDIZE. A standard deviation <= 0, or a probability
outside (0, 1), is #NUM! (NaN); ``cumulative`` is any number (0 = the density)."""

from __future__ import annotations

import math

import torch

from xlmnist.compile.values import Value

_NAN = math.nan


def _z(x, mean, sd):
    return torch.where(sd > 0, (x - mean) / sd, _NAN)


def _density_or_cdf(z, sd, cumulative):
    pdf = torch.exp(-0.5 * z * z) / (sd * math.sqrt(2 * math.pi))
    return torch.where(cumulative != 0, torch.special.ndtr(z), pdf)


def f_norm_dist(ctx, args):
    x, mean, sd, cumulative = (a.t for a in args)
    return Value(_density_or_cdf(_z(x, mean, sd), sd, cumulative))


def f_norm_s_dist(ctx, args):
    z = args[0].t
    cumulative = args[1].t if len(args) > 1 else torch.ones_like(z)  # NORMSDIST: the distribution function
    return Value(_density_or_cdf(z, torch.ones_like(z), cumulative))


def _inverse(p):
    return torch.where((p > 0) & (p < 1), torch.special.ndtri(p), _NAN)


def f_norm_inv(ctx, args):
    p, mean, sd = (a.t for a in args)
    return Value(torch.where(sd > 0, mean + sd * _inverse(p), _NAN))


def f_norm_s_inv(ctx, args):
    return Value(_inverse(args[0].t))


def f_standardize(ctx, args):
    x, mean, sd = (a.t for a in args)
    return Value(_z(x, mean, sd))


DIST = {
    "NORM.DIST": (f_norm_dist, 4, 4),
    "NORMDIST": (f_norm_dist, 4, 4),
    "NORM.S.DIST": (f_norm_s_dist, 2, 2),
    "NORMSDIST": (f_norm_s_dist, 1, 1),
    "NORM.INV": (f_norm_inv, 3, 3),
    "NORMINV": (f_norm_inv, 3, 3),
    "NORM.S.INV": (f_norm_s_inv, 1, 1),
    "NORMSINV": (f_norm_s_inv, 1, 1),
    "STANDARDIZE": (f_standardize, 3, 3),
}
