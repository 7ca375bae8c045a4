"""Range arguments in the lowered program (:class:`xlmnist.compile.lower.Lowerer`): a SUMPRODUCT/MMULT
of two ranges as one ``mv`` / ``mm`` / row-wise dot over data laid out once, a SUM/AVERAGE/MAX/MIN over a
range as one reduction (a window moving down and across: pooling, :mod:`xlmnist.compile.conv`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xlmnist.compile import conv
from xlmnist.compile.ir import Op
from xlmnist.compile.sources import N, Unsupported

if TYPE_CHECKING:
    from xlmnist.compile.lower import Lowerer


def vec(L: Lowerer, n: N, b):
    """A range argument as ("rows", [R, k]), ("cols", [k, C]) or ("fixed", [k]) code, and k."""
    area, h, w, rrel, crel = n.win
    if rrel and not crel:
        if h != 1:
            raise Unsupported("moving window of several rows")
        return "rows", L.code(area.node(), "2d"), w
    if crel and not rrel:
        if w != 1:
            raise Unsupported("moving window of several columns")
        return "cols", L.code(area.node(), "2d"), h
    if rrel or crel:
        raise Unsupported("window moving both ways")
    if area.k is not None:
        return "fixed", L.const(area.k.reshape(-1)), h * w
    x = area.node(one_d=True)
    if x.lay == "2d":
        return "fixed", L.tmp(Op("flat", x.code)), h * w
    return "fixed", x.code, h * w


def dot(L: Lowerer, name: str, vals: list[N], b) -> N:
    if b.array:
        a, m = vals
        if name != "MMULT" or a.win is not None or m.win is not None or a.c != m.r:
            raise Unsupported("array form")
        return N(L.tmp(Op("mm", L.code(a, "2d"), L.code(m, "2d"))), a.r, m.c, "2d")
    if any(v.win is None for v in vals):
        raise Unsupported("scalar argument")
    if name == "MMULT" and (vals[0].win[1] != 1 or vals[1].win[2] != 1):
        raise Unsupported("MMULT of a range per cell")
    if name == "SUMPRODUCT" and vals[0].win[1:3] != vals[1].win[1:3]:
        raise Unsupported("different sizes")
    (ka, a, na), (kb, m, nb) = vec(L, vals[0], b), vec(L, vals[1], b)
    if na != nb:
        raise Unsupported("different sizes")
    R, C = vals[0].r if ka == "rows" else vals[1].r, vals[0].c if ka == "cols" else vals[1].c
    if (ka, kb) == ("rows", "fixed"):
        return N(L.tmp(Op("mv", a, m)), R, 1, "col")
    if (ka, kb) == ("fixed", "rows"):
        return N(L.tmp(Op("mv", m, a)), R, 1, "col")
    if (ka, kb) == ("rows", "cols"):
        return N(L.tmp(Op("mm", a, m)), R, C, "2d")
    if (ka, kb) == ("rows", "rows") and name == "SUMPRODUCT":
        return N(L.tmp(Op("rowdot", a, m)), R, 1, "col")
    if (ka, kb) == ("fixed", "fixed"):
        return N(L.tmp(Op("dot", a, m)), 1, 1, "0")
    raise Unsupported(f"{ka} x {kb}")


def reduce(L: Lowerer, fn: str, n: N, b) -> N:
    area, h, w, rrel, crel = n.win
    if not rrel and not crel:
        return N(L.tmp(Op("reduce", area.node(one_d=True).code, fn=fn)), 1, 1, "0")
    if rrel and not crel and h == 1:
        x = L.code(area.node(), "2d")
        if b.C == 1:
            return N(L.tmp(Op("reduce", x, fn=fn, dim=1)), n.r, 1, "col")
        return N(L.tmp(Op("reduce", x, fn=fn, dim=1, keep=True)), n.r, 1, "2d")
    if (rrel and h > 1 or crel and w > 1) and (rrel or b.R == 1) and (crel or b.C == 1):
        return conv.pool(L, fn, n, b)
    raise Unsupported("reduction window")
