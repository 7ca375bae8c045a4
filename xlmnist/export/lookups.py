"""The general form's lookups with cell-dependent positions (INDEX with MATCH, VLOOKUP, HLOOKUP, XLOOKUP,
OFFSET with cell-dependent offsets, CHOOSE) as gathers: a mixin of :class:`xlmnist.export.general.General`.

Each becomes a call of a helper of the generated module (:data:`xlmnist.export.template.GATHER_HELPERS`),
which mirrors the compiler's builder of the same name (:mod:`xlmnist.compile.gather`,
:mod:`xlmnist.compile.functions.lookup`) over the compiler's layout, ``[R, C, h, w]``: the looked-up
range's tensor (a trainable range's ``nn.Parameter``, so the gradient flows into exactly the cells read),
positions computed from the key tensors, no gradient through a position. MATCH (and the lookups' matching)
is translated over numbers only: a key or lookup range holding text, TRUE/FALSE or empty cells, where the
compiler compares values by type, raises :class:`Unsupported` naming the cell, as does a match mode that
is not typed into the formula.
"""

from __future__ import annotations

from xlmnist.compile.values import EMPTY, NUM
from xlmnist.export.translate import Unsupported
from xlmnist.formula import parser as P
from xlmnist.formula.graph import RefUse

LOOKUPS = {
    "INDEX": "f_index",
    "MATCH": "f_match",
    "VLOOKUP": "f_vlookup",
    "HLOOKUP": "f_hlookup",
    "XLOOKUP": "f_xlookup",
    "_OFFSET": "f_offset",
    "CHOOSE": "f_choose",
}
XMODE = {0: 0, 2: 0, -1: -2, 1: 2}  # XLOOKUP match_mode -> the match mode (gather._XMODE)


class E:
    """Code of a tensor: ``win`` = a window [R, C, h, w] (else [R or 1, C or 1]); ``bool`` = a comparison;
    ``dense``: no empty cells; ``plain``: plain numbers only (no TRUE/FALSE, text, error or empty cell);
    ``four``: the same value laid out [R, C, 1, 1] (a lookup's result, before ``_one``)."""

    def __init__(self, code, win=False, is_bool=False, dense=True, plain=True, four=None):
        self.code, self.win, self.bool, self.dense = code, win, is_bool, dense
        self.plain, self.four = plain and not is_bool, four


class Lookups:
    """``call`` dispatches the names in :data:`LOOKUPS` here; needs ``area``, ``kinds``, ``num`` (General)."""

    gathers = False  # a lookup was translated: the module needs template.GATHER_HELPERS

    def lookup(self, n, b) -> E:
        return getattr(self, LOOKUPS[n.name])(n, b)

    def table(self, n, b) -> tuple[E, int, int]:
        """A lookup's table (or lookup range) as [R, C, h, w], the compiler's layout, and its h, w;
        text and error cells read as NaN there (what the compiler's table holds)."""
        self.gathers = True
        if type(n) is not RefUse:
            e = self.num(n, b)
            if not e.win:
                return E(f"_w({e.four or e.code})", plain=e.plain, dense=e.dense), 1, 1
            raise Unsupported(f"{b.anchor}: a lookup's table must be a range of cells")
        r1, c1, r2, c2 = n.footprint(b.R, b.C)
        a = self.area(n.sheet, r1, c1, r2, c2, b.anchor, text_ok=True)
        h, w = n.r2 - n.r1 + 1, n.c2 - n.c1 + 1
        if (r1, c1, r2, c2) == (n.r1, n.c1, n.r2, n.c2):  # one table for every cell, e.g. $A$2:$D$9
            return E(f"{a.code}[None, None]", True, dense=a.dense, plain=a.plain), h, w
        code = f"{a.code}.unfold(0, {h}, 1).unfold(1, {w}, 1)"  # a window per cell
        return E(code, True, dense=a.dense, plain=a.plain), h, w

    def key_plain(self, n, b, part=None) -> bool:
        """Whether ``n`` (a key or a lookup range; ``part`` = (rows, cols) slice of a table) holds plain
        numbers only: the compiler matches numbers as numbers (text, TRUE/FALSE, empty cells differ)."""
        if type(n) is not RefUse:
            return self.num(n, b).plain if not isinstance(n, P.Bool) else False
        r1, c1, r2, c2 = n.footprint(b.R, b.C)
        covered = self.kinds(n.sheet, r1, c1, r2, c2)
        moving = (r1, c1, r2, c2) != (n.r1, n.c1, n.r2, n.c2)
        if part is not None and not moving:
            covered = covered[part]
        return bool((covered == NUM).all())

    def pos(self, n, b) -> E:
        """A position or key argument (an omitted one is 0, as the compiler reads an empty argument)."""
        if isinstance(n, P.Missing):
            return E("0.0")
        e = self.num(n, b)
        if e.win:
            raise Unsupported(f"{b.anchor}: a lookup position or key must be one value per cell")
        return e

    @staticmethod
    def literal(n, default):
        """A number typed into the formula (a match mode, VLOOKUP's range_lookup), else None."""
        if n is None or isinstance(n, P.Missing):
            return default
        if isinstance(n, (P.Number, P.Bool)):
            return float(n.value)
        if isinstance(n, P.Unary) and n.op == "-" and isinstance(n.operand, P.Number):
            return -float(n.operand.value)
        return None

    def zero(self, n) -> bool:
        """A position known to be 0 when the module is written (the whole row or column): typed or omitted.
        A position read from a cell is taken as not 0 (``_one`` refuses a range where it was)."""
        return isinstance(n, P.Missing) or self.literal(n, None) == 0.0

    def result(self, code, hh, ww, table: E) -> E:
        """A lookup's [R, C, hh, ww] result: a window, or one value per cell (``_one``)."""
        if hh * ww > 1:
            return E(code, True, dense=table.dense, plain=table.plain)
        return E(f"_one({code})", dense=table.dense, plain=table.plain, four=code)

    def _match_args(self, n, b, look, rng, what):
        if not (self.key_plain(look, b) and self.key_plain(rng, b)):
            raise Unsupported(
                f"{b.anchor}: {what} over text, TRUE/FALSE or empty cells has no general-form translation "
                "(the export matches numbers only)"
            )

    def f_match(self, n, b) -> E:
        args = n.args
        if len(args) not in (2, 3):
            raise Unsupported(f"{b.anchor}: MATCH() takes 2 or 3 arguments")
        mode = self.literal(args[2] if len(args) > 2 else None, 1.0)
        if len(args) > 2 and isinstance(args[2], P.Missing):
            mode = 0.0  # an omitted match_type reads as an empty cell: 0 (lookup.f_match's const_int)
        if mode is None:
            raise Unsupported(f"{b.anchor}: MATCH's match_type must be a number typed into the formula")
        mode = int(mode)
        mode = mode if mode in (0, 1) else -1  # lookup._match_numbers: anything else is 'last >= key'
        self._match_args(n, b, args[0], args[1], "MATCH")
        key = self.pos(args[0], b)
        rng, _, _ = self.table(args[1], b)
        code = f"_match({key.four or key.code}, {rng.code}, {mode})"
        return E(f"_one({code})", four=code)

    def f_index(self, n, b) -> E:
        args = n.args
        if len(args) not in (2, 3):
            raise Unsupported(f"{b.anchor}: INDEX() takes 2 or 3 arguments")
        table, h, w = self.table(args[0], b)
        r = self.pos(args[1], b)
        c = self.pos(args[2], b) if len(args) > 2 else None

        rz = self.zero(args[1])
        if c is None:  # INDEX(row, n): the n-th column; INDEX(table, r): row r, every column
            hh, ww = (1, w if rz else 1) if h == 1 else (h if rz else 1, w)
        else:
            hh, ww = (h if rz else 1), (w if self.zero(args[2]) else 1)
        rc = r.four or r.code
        code = (
            f"_index({table.code}, {rc})" if c is None else f"_index({table.code}, {rc}, {c.four or c.code})"
        )
        return self.result(code, hh, ww, table)

    def _flag(self, args, k, b, default):
        """Argument ``k`` as gather._const reads it: omitted or empty cells -> ``default``; a number typed
        into the formula; else None (a cell's value is not known when the module is written)."""
        if len(args) <= k or self._empty(args[k], b):
            return default
        return self.literal(args[k], None)

    def _lookup_exact(self, n, b, k):
        exact = self._flag(n.args, k, b, 1.0)
        if exact is None:
            raise Unsupported(
                f"{b.anchor}: {n.name}'s range_lookup must be TRUE/FALSE typed into the formula"
            )
        return exact == 0.0

    def _empty(self, node, b) -> bool:
        """An argument that is a reference to empty cells only (the compiler reads it as not given)."""
        if type(node) is not RefUse:
            return isinstance(node, P.Missing)
        return bool((self.kinds(node.sheet, *node.footprint(b.R, b.C)) == EMPTY).all())

    def f_vlookup(self, n, b) -> E:
        return self._vh(n, b, "VLOOKUP")

    def f_hlookup(self, n, b) -> E:
        return self._vh(n, b, "HLOOKUP")

    def _vh(self, n, b, name) -> E:
        args = n.args
        if len(args) not in (3, 4):
            raise Unsupported(f"{b.anchor}: {name}() takes 3 or 4 arguments")
        exact = self._lookup_exact(n, b, 3)
        first = (slice(None), slice(0, 1)) if name == "VLOOKUP" else (slice(0, 1), slice(None))
        if not (self.key_plain(args[0], b) and self.key_plain(args[1], b, first)):
            raise Unsupported(
                f"{b.anchor}: {name} over text, TRUE/FALSE or empty keys has no general-form translation "
                "(the export matches numbers only)"
            )
        key = self.pos(args[0], b)
        table, h, w = self.table(args[1], b)
        at = self.pos(args[2], b)
        whole = self.zero(args[2])
        hh, ww = (1, w if whole else 1) if name == "VLOOKUP" else (h if whole else 1, 1)
        fn = "_vlookup" if name == "VLOOKUP" else "_hlookup"
        return self.result(
            f"{fn}({key.four or key.code}, {table.code}, {at.four or at.code}, {exact})", hh, ww, table
        )

    def f_xlookup(self, n, b) -> E:
        args = n.args
        if not 3 <= len(args) <= 6:
            raise Unsupported(f"{b.anchor}: XLOOKUP() takes 3 to 6 arguments")
        mode, search = (self._flag(args, k, b, default) for k, default in ((4, 0.0), (5, 1.0)))
        if mode is None or search is None:
            raise Unsupported(
                f"{b.anchor}: XLOOKUP's match_mode and search_mode must be numbers typed into the formula"
            )
        if int(mode) not in XMODE or int(search) not in (1, -1, 2, -2):
            raise Unsupported(
                f"{b.anchor}: XLOOKUP match_mode must be -1, 0, 1 or 2 and search_mode 1, -1, 2 or -2"
            )
        self._match_args(n, b, args[0], args[1], "XLOOKUP")
        key = self.pos(args[0], b)
        look, lh, lw = self.table(args[1], b)
        ret, h, w = self.table(args[2], b)
        missing = "None"
        if len(args) > 3 and not self._empty(args[3], b):
            m = self.num(args[3], b)
            missing = m.four or m.code
        hh, ww = (1, w) if lw == 1 else (h, 1)
        code = (
            f"_xlookup({key.four or key.code}, {look.code}, {ret.code}, {missing}, "
            f"{XMODE[int(mode)]}, {int(search) == -1})"
        )
        return self.result(code, hh, ww, ret)

    def f_offset(self, n, b) -> E:
        """``_OFFSET(reach, rows, cols, top, left, h, w)``: OFFSET with cell-dependent offsets, as the
        graph resolves it (xlmnist.formula.offset)."""
        reach, _, _ = self.table(n.args[0], b)
        rows, cols = self.pos(n.args[1], b), self.pos(n.args[2], b)
        top, left, h, w = (int(self.literal(a, None)) for a in n.args[3:7])
        code = f"_offset({reach.code}, {rows.four or rows.code}, {cols.four or cols.code}, {top}, {left}, {h}, {w})"
        return self.result(code, h, w, reach)

    def f_choose(self, n, b) -> E:
        self.gathers = True
        k = self.pos(n.args[0], b)
        vals = [self.num(a, b) for a in n.args[1:]]
        code = f"_choose({k.code}, {', '.join(v.code for v in vals)})"
        return E(
            code, any(v.win for v in vals), dense=all(v.dense for v in vals), plain=all(v.plain for v in vals)
        )
