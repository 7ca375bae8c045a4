"""Two ranges side by side: COVARIANCE.P / COVAR, COVARIANCE.S, CORREL / PEARSON, RSQ, SLOPE, INTERCEPT,
FORECAST / FORECAST.LINEAR, and DEVSQ of one set. A pair counts where both cells hold numbers (Excel skips
a pair with an empty, text or boolean cell; an error cell gives the error); the ranges must hold as many
cells (else #N/A). A variance of 0 or too few pairs is #DIV/0! (NaN or inf)."""

from __future__ import annotations

import torch

from xlmnist.compile.functions.stats import _cell, flat
from xlmnist.compile.values import ExcelError, Value


def _moments(y_arg, x_arg):
    """(n, mean y, mean x, sum dy*dx, sum dx^2, sum dy^2) over the counted pairs, per block cell."""
    y, my = flat([y_arg])
    x, mx = flat([x_arg])
    if y.shape[-1] != x.shape[-1]:
        raise ExcelError("the two ranges hold different numbers of cells (#N/A)")
    m = my if mx is None else mx if my is None else my & mx
    if m is not None:  # a skipped pair: both sides 0 and not counted (no text NaN reaches the gradient)
        y, x = torch.where(m, y, torch.zeros_like(y)), torch.where(m, x, torch.zeros_like(x))
        w = m.to(y.dtype)
    else:
        w = torch.ones_like(y)
    n = w.sum(-1)
    mean_y, mean_x = y.sum(-1) / n, x.sum(-1) / n
    dy, dx = (y - mean_y[..., None]) * w, (x - mean_x[..., None]) * w
    return n, mean_y, mean_x, (dy * dx).sum(-1), (dx * dx).sum(-1), (dy * dy).sum(-1)


def f_covariance_p(ctx, args):
    n, _, _, sxy, _, _ = _moments(args[0], args[1])
    return _cell(sxy / n)


def f_covariance_s(ctx, args):
    n, _, _, sxy, _, _ = _moments(args[0], args[1])
    return _cell(sxy / (n - 1))


def f_correl(ctx, args):
    _, _, _, sxy, sxx, syy = _moments(args[0], args[1])
    return _cell(sxy / torch.sqrt(sxx * syy))


def f_rsq(ctx, args):
    _, _, _, sxy, sxx, syy = _moments(args[0], args[1])
    return _cell(sxy * sxy / (sxx * syy))


def f_slope(ctx, args):  # SLOPE(known_y's, known_x's)
    _, _, _, sxy, sxx, _ = _moments(args[0], args[1])
    return _cell(sxy / sxx)


def f_intercept(ctx, args):
    _, mean_y, mean_x, sxy, sxx, _ = _moments(args[0], args[1])
    return _cell(mean_y - sxy / sxx * mean_x)


def f_forecast(ctx, args):  # FORECAST(x, known_y's, known_x's): the fitted line at x
    _, mean_y, mean_x, sxy, sxx, _ = _moments(args[1], args[2])
    slope = sxy / sxx
    line = (mean_y - slope * mean_x)[..., None, None], slope[..., None, None]
    return Value(line[0] + line[1] * args[0].t)


def f_devsq(ctx, args):
    x, m = flat(args)
    w = torch.ones_like(x) if m is None else m.to(x.dtype)
    mean = x.sum(-1) / w.sum(-1)
    return _cell((((x - mean[..., None]) * w) ** 2).sum(-1))


REGRESS = {
    "COVARIANCE.P": (f_covariance_p, 2, 2),
    "COVAR": (f_covariance_p, 2, 2),
    "COVARIANCE.S": (f_covariance_s, 2, 2),
    "CORREL": (f_correl, 2, 2),
    "PEARSON": (f_correl, 2, 2),
    "RSQ": (f_rsq, 2, 2),
    "SLOPE": (f_slope, 2, 2),
    "INTERCEPT": (f_intercept, 2, 2),
    "FORECAST": (f_forecast, 3, 3),
    "FORECAST.LINEAR": (f_forecast, 3, 3),
    "DEVSQ": (f_devsq, 1, 255),
}
