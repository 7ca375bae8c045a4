"""The values of the lowered program (:class:`N`) and the rectangles a formula reads (:class:`Area`), as
:mod:`xlmnist.compile.ir` ops over the program's variables (parameters, the data rows, blocks).

Values stand for a logical 2-D ``[r, c]`` broadcastable to the block (``r == -1``: the data rows, any
number of them) in one of three layouts: ``"0"`` (a 0-d tensor or a Python float), ``"col"`` (``[r]``,
for ``c == 1``) or ``"2d"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from xlmnist.compile.functions import BOOL, EMPTY, NUM
from xlmnist.compile.ir import Op

if TYPE_CHECKING:
    from xlmnist.compile.lower import Lowerer


class Unsupported(Exception):
    """The block uses something this lowering does not handle: it runs its compiled closure instead."""


class N:
    __slots__ = ("code", "r", "c", "lay", "k", "b", "win")

    def __init__(self, code=None, r=1, c=1, lay="2d", k=None, b=False, win=None):
        self.code, self.r, self.c, self.lay = code, r, c, lay  # code: a variable name (an ir operand)
        self.k = k  # constant: 2-D float64 numpy array [r, c]
        self.b = b  # a bool tensor (a comparison)
        self.win = win  # a range: (area, h, w, rrel, crel)


class Area:
    """A rectangle the formula reads: a constant, or column strips of sources (params, data, blocks)."""

    def __init__(self, L: Lowerer, e, fh: int, fw: int):
        self.L, self.fh, self.fw = L, fh, fw
        self.k = None
        self.parts = []  # (col0, col1, ("var", name, lay, sr, sc, rs, cs) | ("const", numpy [fh|1, k]))
        if e.const is not None:
            self.k = e.const.detach().cpu().numpy().astype(np.float64)
            return
        if e.info is None:
            raise Unsupported("area")
        if e.info[0] == "aligned":
            self.fh = -1
            for start, i, csl, const in e.info[1]:
                if i is None:
                    k = const.detach().cpu().numpy()
                    self.parts.append((start, start + k.shape[1], ("const", k)))
                    continue
                name, lay, sr, sc = L.source(i)
                a, b = (0, sc) if csl == slice(None) else (csl.start, csl.stop)
                self.parts.append((start, start + b - a, ("var", name, lay, sr, sc, (0, sr), (a, b))))
            self.parts.sort(key=lambda p: p[0])
            return
        _, pieces, num, kind = e.info
        covered = np.zeros((fh, fw), bool)
        for i, src, dst in pieces:
            name, lay, sr, sc = L.source(i)
            if src is ...:
                rs, cs = (0, sr), (0, sc)
            else:
                rs, cs = (src[0].start, src[0].stop), (src[1].start, src[1].stop)
            if (dst[0].start, dst[0].stop) != (0, fh):
                raise Unsupported("not full-height strips")
            covered[:, dst[1]] = True
            self.parts.append((dst[1].start, dst[1].stop, ("var", name, lay, sr, sc, rs, cs)))
        free = np.flatnonzero(~covered[0])
        if len(free):
            if kind is not None and not np.isin(kind[:, free], (NUM, BOOL, EMPTY)).all():
                raise Unsupported("text beside dynamic cells")
            for run in np.split(free, np.flatnonzero(np.diff(free) != 1) + 1):
                k = num[:, run[0] : run[-1] + 1].astype(np.float64)
                self.parts.append((int(run[0]), int(run[-1]) + 1, ("const", k)))
        self.parts.sort(key=lambda p: p[0])

    def _var(self, part, one_d: bool) -> tuple[str, str]:
        """Variable and layout of one source strip; 1-D (a row or a column) where asked and possible."""
        _, name, lay, sr, sc, (ra, rb), (ca, cb) = part
        full_r, full_c = (ra, rb) == (0, sr), (ca, cb) == (0, sc)
        tmp = self.L.tmp
        if lay == "0":
            return (name, "0") if one_d else (tmp(Op("as11", name)), "2d")
        if lay == "col":
            code = name if full_r else tmp(Op("index", name, slice(ra, rb)))
            return (code, "col") if one_d else (tmp(Op("unsqueeze", code)), "2d")
        if full_r and full_c:
            if one_d and sc == 1:
                return tmp(Op("index", name, (slice(None), 0))), "col"
            if one_d and sr == 1:
                return tmp(Op("index", name, 0)), "col"
            return name, "2d"
        rows = slice(None) if full_r else slice(ra, rb)
        if one_d and cb - ca == 1:
            return tmp(Op("index", name, (rows, ca))), "col"
        if one_d and rb - ra == 1 and sr != -1:
            return tmp(Op("index", name, ra if full_c else (ra, slice(ca, cb)))), "col"
        return tmp(Op("index", name, (rows, slice(ca, cb)))), "2d"

    def node(self, one_d: bool = False) -> N:
        """The whole area as a value (1-D where ``one_d`` and it is one row or one column)."""
        if self.k is not None:
            return N(r=self.fh, c=self.fw, k=self.k)
        one_d = one_d and (self.fw == 1 or self.fh == 1)
        if len(self.parts) == 1:
            code, lay = self._var(self.parts[0][2], one_d)
            return N(code, self.fh, self.fw, lay)
        L = self.L
        if all(p[2][0] == "var" for p in self.parts) and all(p[1] - p[0] == 1 for p in self.parts):
            mark = len(L.stmts)
            vs = [self._var(p[2], True) for p in self.parts]
            if all(lay == "col" for _, lay in vs):  # single cells (layout "0") are joined by cat below
                cols = [code for code, _ in vs]
                code = stacked_mv(L, cols) or L.tmp(Op("stack", *cols))
                return N(code, self.fh, self.fw, "2d")
            del L.stmts[mark:]
        cols = []
        for _, _, part in self.parts:
            if part[0] == "const":
                k = part[1]
                if self.fh == -1:
                    cols.append(Op("expand", L.const(k), "M", -1))
                else:
                    cols.append(L.const(np.broadcast_to(k, (self.fh, k.shape[1]))))
            else:
                cols.append(self._var(part, False)[0])
        return N(L.tmp(Op("cat", *cols)), self.fh, self.fw, "2d")


def stacked_mv(L: Lowerer, cols: list[str]) -> str | None:
    """stack([mv(K, p[0]), mv(K, p[1]), ...], 1) over all rows of p -> mm(K, p.T) (nnet's hidden layer)."""
    ks, ps = set(), []
    for c in cols:
        m = L.origin(c)
        if not (isinstance(m, Op) and m.kind == "mv" and isinstance(m.args[1], str)):
            return None
        w = L.defs.get(m.args[1])
        if not (isinstance(w, Op) and w.kind == "index" and isinstance(w.args[1], int)):
            return None
        if not (w.args[0].startswith("p") and m.args[0].startswith("k")):
            return None
        ks.add(m.args[0])
        ps.append((w.args[0], w.args[1]))
    p = ps[0][0]
    rows = L.comp.params[int(p[1:])]
    if len(ks) != 1 or ps != [(p, i) for i in range(len(cols))] or rows[3] - rows[1] + 1 != len(cols):
        return None
    L.note(f"stacked mv: {len(cols)} torch.mv of the rows of {p} -> one torch.mm")
    return L.tmp(Op("mmT", ks.pop(), p))


def relu_t(dtype) -> float:
    """``-s``, ``s`` the smallest subnormal of ``dtype``: ``threshold(x, -s, 0)`` keeps x = 0 (gradient 1)."""
    return -float(torch.nextafter(torch.zeros((), dtype=dtype), torch.ones((), dtype=dtype)))
