"""Rectangles a formula reads, assembled from the sources behind them (constants, trainable cells, the
data rows, other blocks), and the reference text of ``--objective``/``--params``/``--data``.

:class:`Areas` is the part of :class:`xlmnist.compile.compiler.Compiler` that turns a rectangle into an
``_Expr`` (with ``info`` describing the assembly, read by :mod:`xlmnist.compile.lower`).
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from xlmnist.compile.functions import BOOL, EMPTY, ERR, NUM, TEXT, Value
from xlmnist.errors import WorkbookError
from xlmnist.formula import parser as P
from xlmnist.xlsx import limits
from xlmnist.xlsx.extent import dense_ok
from xlmnist.xlsx.reader import XLError
from xlmnist.xlsx.refs import area_name, cell_name
from xlmnist.xlsx.sheetxml import CellValues

DATA = -1_000_000  # env slot of the data rows (the ``xlmnist_data`` range)
TRUSTED = "trusted"  # env key: the data rows passed the generated program's ``check`` (skip its guards)


def _windows(a, R: int, C: int, h: int, w: int, rrel: bool, crel: bool, unfold):
    """Footprint [FH, FW] -> per-cell windows [bR, bC, h, w] (views)."""
    rrel, crel = rrel and (R > 1 or R == -1), crel and C > 1
    if (not rrel or h == 1) and (not crel or w == 1):  # one reshape does it
        if crel and not rrel and h > 1:  # one column each: [h, C] -> [1, C, h, 1]
            return a.transpose(0, 1).reshape(1, C, h, 1)
        return a.reshape(R if rrel else 1, C if crel else 1, 1 if rrel else h, 1 if crel else w)
    a = unfold(a, 0, h).swapaxes(1, 2) if rrel else a[None]
    return unfold(a, 2, w).swapaxes(1, 2) if crel else a[:, None]


def _t_unfold(t, dim, size):
    return t.unfold(dim, size, 1)


def _np_unfold(a, dim, size):
    return np.lib.stride_tricks.sliding_window_view(a, size, axis=dim)


class _Expr:
    __slots__ = ("const", "fn", "aligned", "info")

    def __init__(self, const: Value | None = None, fn=None, aligned: bool = False, info=None):
        self.const, self.fn, self.aligned = const, fn, aligned
        self.info = info  # for areas: how the rectangle is assembled (read by xlmnist.compile.lower)

    def __call__(self, env):
        return self.const if self.const is not None else self.fn(env)


class Areas:
    """Rectangle assembly over ``self.src`` / ``cnum`` / ``ckind`` / ``cstr`` (see Compiler)."""

    def _check_extent(self, sheet, where, what, r1, c1, r2, c2) -> None:
        """Before anything is allocated: a range (and the grid grown to hold it) within the limits."""
        cells = (r2 - r1 + 1) * (c2 - c1 + 1)
        if cells > limits.MAX_RANGE_CELLS:
            raise WorkbookError(
                f"{where}: the {what} spans {cells:,} cells, more than {limits.MAX_RANGE_CELLS:,} "
                "(XLMNIST_MAX_RANGE_CELLS); name only the cells the model uses"
            )
        h, w = self.src[sheet].shape
        if max(h, r2 + 2) * max(w, c2 + 2) > limits.MAX_CELLS:
            raise WorkbookError(
                f"{where}: the {what} reaches far beyond the sheet's cells (a grid of more than "
                f"{limits.MAX_CELLS:,} cells, XLMNIST_MAX_CELLS); name only the cells the model uses"
            )

    # ---- grids --------------------------------------------------------------------------------------
    def _init_grids(self) -> None:
        """Per sheet, dense grids from A1: ``src`` (block ids, trainable ranges, the data rows) and the values
        ``cnum``/``ckind``/``cstr``, over the part of the sheet its cells fill (the density rule of
        :mod:`xlmnist.xlsx.extent`: a stray cell far away does not size them); :meth:`_cover` grows them
        when the model reads beyond."""
        for name in self.wb.order:
            sh, g = self.wb.sheets[name], self.graph.grid[name]
            H, W = sh.max_row + 2, sh.max_col + 2
            if not dense_ok(H, W, len(sh.values)):
                H, W = sh.values.num.shape if isinstance(sh.values, CellValues) else (2, 2)
            shape = (max(g.shape[0], H), max(g.shape[1], W))
            src = np.full(shape, -1, np.int32)
            src[: g.shape[0], : g.shape[1]] = g
            self.src[name] = self.graph.ids(name, 0, 0, 0, 0, out=src)
            self.cnum[name], self.ckind[name], self.cstr[name] = (
                np.zeros(shape),
                np.full(shape, EMPTY, np.int8),
                None,
            )
            self._load(name, 0, 0, shape[0] - 1, shape[1] - 1)

    def _load(self, name: str, r1: int, c1: int, r2: int, c2: int) -> None:
        """The file's values of the rectangle into the value grids (which hold nothing there yet)."""
        values, num, kind = self.wb.sheets[name].values, self.cnum[name], self.ckind[name]
        if isinstance(values, CellValues):  # the dense number grid in one go, then the few other cells
            h, w = min(r2 + 1, values.num.shape[0]), min(c2 + 1, values.num.shape[1])
            if h > r1 and w > c1:
                has = values.has[r1:h, c1:w]
                num[r1:h, c1:w] = np.where(has, values.num[r1:h, c1:w], 0.0)
                kind[r1:h, c1:w][has] = NUM
            values = values.other
        for (r, c), v in values.items():
            if not (r1 <= r <= r2 and c1 <= c <= c2):
                continue
            if isinstance(v, bool):
                num[r, c], kind[r, c] = float(v), BOOL
            elif isinstance(v, float):
                num[r, c], kind[r, c] = v, NUM
            elif isinstance(v, XLError):
                num[r, c], kind[r, c] = math.nan, ERR
                self.cerr.setdefault(name, {})[(r, c)] = str(v)
            else:
                if self.cstr[name] is None:
                    self.cstr[name] = np.full(num.shape, None, object)
                num[r, c], kind[r, c], self.cstr[name][r, c] = math.nan, TEXT, v

    def _cover(self, sheet: str, r1: int, c1: int, r2: int, c2: int, what: str) -> None:
        """Grow the grids of ``sheet`` to hold the rectangle (within the limits), with the file's values."""
        h, w = self.src[sheet].shape
        if r2 >= h or c2 >= w:
            self._check_extent(sheet, area_name(sheet, r1, c1, r2, c2), what, r1, c1, r2, c2)
            self._grow(sheet, r2, c2)

    def _grow(self, sheet, r2, c2):
        old = self.src[sheet]
        (h, w), shape = old.shape, (max(old.shape[0], r2 + 2), max(old.shape[1], c2 + 2))
        for store, fill in ((self.src, -1), (self.cnum, 0.0), (self.ckind, EMPTY), (self.cstr, None)):
            a = store[sheet]
            if a is None:
                continue
            b = np.full(shape, fill, dtype=a.dtype)
            b[: a.shape[0], : a.shape[1]] = a
            store[sheet] = b
        self.graph.ids(sheet, 0, 0, 0, 0, out=self.src[sheet])  # the far blocks that now fall inside
        self._load(sheet, 0, w, h - 1, shape[1] - 1)
        self._load(sheet, h, 0, shape[0] - 1, shape[1] - 1)

    def _grid_slice(self, arr, r1, c1, r2, c2, fill):
        H, W = arr.shape
        if r2 < H and c2 < W:
            return arr[r1 : r2 + 1, c1 : c2 + 1]
        out = np.full((r2 - r1 + 1, c2 - c1 + 1), fill, dtype=arr.dtype)
        sub = arr[r1 : min(r2 + 1, H), c1 : min(c2 + 1, W)]
        out[: sub.shape[0], : sub.shape[1]] = sub
        return out

    def _src_rect(self, i: int):
        if i == DATA:
            return self.data[1:]
        return self.params[-i - 2][1:] if i <= -2 else self.graph.blocks[i].out

    # ---- areas --------------------------------------------------------------------------------------
    def area(self, sheet: str, r1: int, c1: int, r2: int, c2: int, owner: int | None = None):
        """An _Expr for the 2-D tensor of a rectangle, plus its kind/string arrays (None if all numbers)."""
        self._cover(sheet, r1, c1, r2, c2, "range")
        ids = np.unique(self._grid_slice(self.src[sheet], r1, c1, r2, c2, -1))
        dyn = [int(i) for i in ids if i <= -2 or (i >= 0 and self.compiled.get(int(i)))]
        if owner is not None:
            self.reads.setdefault(owner, set()).update(i for i in dyn if i >= 0)
        kind = self._grid_slice(self.ckind[sheet], r1, c1, r2, c2, EMPTY).copy()
        strs = self.cstr[sheet]
        strs = None if strs is None else self._grid_slice(strs, r1, c1, r2, c2, None)
        num = self._grid_slice(self.cnum[sheet], r1, c1, r2, c2, 0.0)
        pieces = []
        for i in dyn:
            s1, sc1, s2, sc2 = self._src_rect(i)
            a1, b1, a2, b2 = max(r1, s1), max(c1, sc1), min(r2, s2), min(c2, sc2)
            src = (slice(a1 - s1, a2 - s1 + 1), slice(b1 - sc1, b2 - sc1 + 1))
            if (a1, b1, a2, b2) == (s1, sc1, s2, sc2):
                src = ...  # the whole source: no slicing op
            dst = (slice(a1 - r1, a2 - r1 + 1), slice(b1 - c1, b2 - c1 + 1))
            if i == DATA:
                self._check_data_text(kind[dst], a1, b1, owner)
            kind[dst] = NUM
            pieces.append((i, src, dst))
        if any(i in self.aligned for i, _, _ in pieces):
            return self._aligned_area(sheet, r1, c1, r2, c2, pieces, kind, num, owner)
        if owner is not None:
            bad = np.argwhere((kind == TEXT) | (kind == ERR))
            if len(bad) and owner not in self.bad_inputs:
                rr, cc = int(bad[0][0]), int(bad[0][1])
                code = self.cerr.get(sheet, {}).get((r1 + rr, c1 + cc))
                what = "text" if kind[rr, cc] == TEXT else code or "an error value"
                self.bad_inputs[owner] = f"{cell_name(sheet, r1 + rr, c1 + cc)} holds {what}"
        kind = None if (kind == NUM).all() else kind
        if strs is not None and not (kind is not None and (kind == TEXT).any()):
            strs = None
        base = torch.tensor(num, dtype=self.ctx.dtype, device=self.ctx.device)
        if not pieces:
            return _Expr(base), kind, strs
        H, W = r2 - r1 + 1, c2 - c1 + 1
        e, kind, strs = self._pieces_expr(pieces, base, H, W), kind, strs
        e.info = ("pieces", pieces, num, kind)
        return e, kind, strs

    def _pieces_expr(self, pieces, base, H, W) -> _Expr:
        if len(pieces) == 1 and pieces[0][2] == (slice(0, H), slice(0, W)):
            i, src, _ = pieces[0]
            if src is ...:
                return _Expr(fn=lambda env: env[i])
            return _Expr(fn=lambda env: env[i][src])

        strips = sorted(pieces, key=lambda p: p[2][1].start)
        if (
            all(p[2][0] == slice(0, H) for p in strips)
            and [p[2][1].start for p in strips] == [0] + [p[2][1].stop for p in strips[:-1]]
            and strips[-1][2][1].stop == W
        ):
            return _Expr(
                fn=lambda env: torch.cat([env[i] if src is ... else env[i][src] for i, src, _ in strips], 1)
            )

        def assemble(env):
            out = base.clone()
            for i, src, dst in pieces:
                out[dst] = env[i] if src is ... else env[i][src]
            return out

        return _Expr(fn=assemble)

    def _check_data_text(self, kind, r, c, owner) -> None:
        bad = np.argwhere(kind == TEXT)
        if len(bad) and owner is not None:
            b = self.graph.blocks[owner]
            where = cell_name(self.data[0], r + int(bad[0][0]), c + int(bad[0][1]))
            raise WorkbookError(
                f"{b.anchor}: reads {where}, text inside the data range; the data rows must be numbers "
                "(only number value rows can be replaced)"
            )

    def _aligned_area(self, sheet, r1, c1, r2, c2, pieces, kind, num, owner):
        """An area over the data-aligned rows: column strips of aligned sources and row-constant cells."""
        who = self.graph.blocks[owner].name if owner is not None else area_name(sheet, r1, c1, r2, c2)
        strips, covered = [], np.zeros(c2 - c1 + 1, bool)
        for i, src, dst in pieces:
            s1, _, s2, _ = self._src_rect(i)
            if i not in self.aligned or (s1, s2) != (r1, r2):
                what = (
                    "the data rows"
                    if i == DATA
                    else self.graph.blocks[i].name
                    if i >= 0
                    else "trainable cells"
                )
                raise WorkbookError(
                    f"{who}: reads rows {r1}..{r2} of {sheet}, but {what} spans rows {s1}..{s2}; a formula "
                    "over data-aligned rows must use all of them, one row per row (not row-polymorphic)"
                )
            csl = slice(None) if src is ... else src[1]
            strips.append((dst[1].start, i, csl, None))
            covered[dst[1]] = True
        free = np.flatnonzero(~covered)
        if len(free):
            block = num[:, free]
            kinds = kind[:, free]
            bad = np.argwhere((kinds != NUM) | (block != block[:1]))
            if len(bad):
                rr, cc = int(bad[0][0]), int(free[bad[0][1]])
                raise WorkbookError(
                    f"{who}: {cell_name(sheet, r1 + rr, c1 + cc)} is a constant beside the data-aligned rows "
                    "but differs from the row above or is not a number; it cannot be extended to other rows"
                )
            runs = np.split(free, np.flatnonzero(np.diff(free) != 1) + 1)
            for run in runs:
                const = torch.tensor(
                    num[:1, run[0] : run[-1] + 1], dtype=self.ctx.dtype, device=self.ctx.device
                )
                strips.append((int(run[0]), None, None, const))
        strips.sort(key=lambda s: s[0])
        if len(strips) == 1:
            _, i, csl, _ = strips[0]
            fn = (lambda env: env[i]) if csl == slice(None) else (lambda env: env[i][:, csl])
            return _Expr(fn=fn, aligned=True, info=("aligned", strips)), None, None
        first = next(s[1] for s in strips if s[1] is not None)

        def cat(env):
            m = env[first].shape[0]
            return torch.cat(
                [env[i][:, csl] if i is not None else const.expand(m, -1) for _, i, csl, const in strips], 1
            )

        return _Expr(fn=cat, aligned=True, info=("aligned", strips)), None, None


def parse_areas(wb, text: str, default_sheet: str) -> list[tuple[str, int, int, int, int]]:
    """``"nnet!AH1"``, ``"'nnet'!R4:AA5,nnet!R7"`` or a defined name -> [(sheet, r1, c1, r2, c2)]."""
    out = []
    for part in re.findall(r"(?:'(?:[^']|'')*'|[^,])+", text.strip().lstrip("=")):
        part = part.strip()
        try:
            node = P.operand_ref(part)
        except ValueError:
            raise WorkbookError(f"{part!r}: not a cell or range reference") from None
        if isinstance(node, P.Name):
            inner = wb.name(node.sheet or default_sheet, node.name)
            if inner is None:
                raise WorkbookError(f"{part!r}: no such defined name")
            out += parse_areas(wb, inner, node.sheet or default_sheet)
            continue
        if not isinstance(node, P.Ref):
            raise WorkbookError(f"{part!r}: not a cell or range reference")
        sheet = node.sheet or default_sheet
        if sheet not in wb.sheets:
            match = [s for s in wb.order if s.lower() == sheet.lower()]
            if not match:
                raise WorkbookError(f"{part}: no sheet named {sheet!r}")
            sheet = match[0]
        out.append((sheet, node.r1, node.c1, min(node.r2, 1048576), node.c2))
    if not out:
        raise WorkbookError(f"{text!r}: no cell reference")
    return out
