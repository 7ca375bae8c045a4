"""The general export form: any compiled sheet as a straight-line ``forward`` over named 2-D tensors.

Every block the objective needs (in topological order) becomes one statement ``name = <torch expression>``
computing the block's whole [rows, columns] area at once, with the sheet range and formula text as a
comment; the trainable ranges are ``nn.Parameter``s; constant cells are read from the workbook at run time
into one float64 tensor per sheet (``K[sheet]``, indexed by 1-based row and column). A reference that moves
with the block's cells is a shifted slice; a range reference is an unfolded window ``[R, C, h, w]`` that
SUM / AVERAGE / MAX / MIN / SUMPRODUCT reduce over its last two axes. An unrolled recurrence is
written as one ``for`` loop over its rows
(:mod:`xlmnist.export.scans`; one statement per row where it cannot be, saying so). Lookups with cell-dependent positions
(INDEX/MATCH, VLOOKUP, HLOOKUP, XLOOKUP, OFFSET, CHOOSE) are gathers over the looked-up range's tensor
(:mod:`xlmnist.export.lookups`, helpers that mirror the compiler's). What has no faithful translation (a
block reading its own cells; an average over empty or text cells; a match over text ids; other
functions) raises :class:`Unsupported` naming the cell, never a silently different module.
"""

from __future__ import annotations

import re

import numpy as np

from xlmnist.compile.values import BOOL, EMPTY, NUM
from xlmnist.export.lookups import LOOKUPS, E, Lookups
from xlmnist.export.scans import Loops
from xlmnist.export.template import GATHER_HELPERS, GENERAL_CLASS, GENERAL_HEAD, GENERAL_MODEL, GENERAL_TAIL
from xlmnist.export.translate import Unsupported, escape
from xlmnist.formula import parser as P
from xlmnist.formula.graph import RefUse, topo_order
from xlmnist.xlsx.refs import area_name, col_letters, split_ref

_FN1 = {"EXP": "exp", "LN": "log", "LOG10": "log10", "SQRT": "sqrt", "ABS": "abs", "TANH": "tanh"}
_CMP = {"=": "==", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_NUMBER = re.compile(r"-?[0-9.e+-]+|inf|nan")  # a literal: broadcasts as it is
_PAIRS = {"SUMXMY2": "({x} - {y}) ** 2.0", "SUMX2MY2": "{x} ** 2.0 - {y} ** 2.0"}
_RED = {"SUM": "sum", "AVERAGE": "mean", "SUMPRODUCT": "sum", "MAX": "amax", "MIN": "amin"}


def _lift(*es: E) -> list[E]:
    """Operands of one elementwise operation: where one is a window [R, C, h, w], a value per cell [R, C]
    becomes [R, C, 1, 1] (broadcast over each cell's window, not against the window's own axes)."""
    if not any(e.win for e in es) or all(e.win for e in es):
        return list(es)
    return [
        e
        if e.win or _NUMBER.fullmatch(e.code)
        else E(f"_t({e.code})[..., None, None]", True, e.bool, e.dense, e.plain)
        for e in es
    ]


class General(Lookups):
    """Translate the blocks the objective of ``cm`` (a CompiledModel) needs; ``render()`` -> the source."""

    def __init__(self, cm):
        self.cm, self.c = cm, cm.compiler
        self.g, self.wb = self.c.graph, self.c.wb
        osheet, orow, ocol = self._objective_cell()
        self.obj = self.g.block_at(osheet, orow, ocol)
        if self.obj is None:
            raise Unsupported(f"{cm.objective_ref}: the objective is not a formula")
        self.vars: dict[int, str] = {}
        self.span: dict[int, tuple] = {}  # a looped recurrence's step -> its member's rectangle (vars)
        self.lines: list[str] = []
        self.extent: dict[str, list[int]] = {}  # sheet -> [max row, max column] read
        self.loop = None  # the recurrence being written as a loop (xlmnist.export.scans): tr asks it first
        self.loops = Loops(self)
        for bid in topo_order(self.g, [self.obj.id]):
            self.need(bid)
        self.result = self.area(osheet, orow, ocol, orow, ocol, self.obj.anchor).code

    @property
    def notes(self) -> list[str]:
        """What the export command prints besides the form: each recurrence's loop, or why it is not one."""
        return self.loops.notes

    def need(self, bid: int) -> None:
        """Write block ``bid`` (once): a step of a recurrence as its loop where it can be, else a statement."""
        if bid not in self.vars and not self.loops.emit(bid):
            self._emit(self.g.blocks[bid])

    def _objective_cell(self):
        s, r, c, _, _ = split_ref(self.cm.objective_ref)
        return s, r, c

    # ---- areas -----------------------------------------------------------------------------------
    def _see(self, sheet, r2, c2):
        e = self.extent.setdefault(sheet, [1, 1])
        e[0], e[1] = max(e[0], r2), max(e[1], c2)

    def area(self, sheet, r1, c1, r2, c2, where, text_ok=False) -> E:
        """Code of the [h, w] tensor of sheet!r1c1:r2c2: parameter, block and constant pieces assembled.
        ``text_ok``: text and error cells allowed (a lookup's table: they read as NaN, as the compiler's)."""
        pieces = []
        for k, (ps, p1, q1, p2, q2) in enumerate(self.c.params):
            if ps == sheet and p1 <= r2 and r1 <= p2 and q1 <= c2 and c1 <= q2:
                pieces.append((f"self.p{k}", p1, q1, p2, q2))
        for bid in self.g.blocks_in(sheet, r1, c1, r2, c2):
            b = self.g.blocks[bid]
            if bid not in self.vars:
                raise Unsupported(
                    f"{where}: reads {area_name(b.sheet, *b.out)} of its own block (a recurrence)"
                )
            piece = (self.vars[bid], *self.span.get(bid, b.out))
            if piece not in pieces:
                pieces.append(piece)
        for code, a1, b1, a2, b2 in pieces:
            if (a1, b1, a2, b2) == (r1, c1, r2, c2):
                return E(code)
            if a1 <= r1 and r2 <= a2 and b1 <= c1 and c2 <= b2:
                return E(f"{code}[{r1 - a1}:{r2 - a1 + 1}, {c1 - b1}:{c2 - b1 + 1}]")
        covered = self.kinds(sheet, r1, c1, r2, c2, pieces)
        if not text_ok and ((covered != NUM) & (covered != BOOL) & (covered != EMPTY)).any():
            raise Unsupported(f"{where}: {area_name(sheet, r1, c1, r2, c2)} holds text or errors")
        self._see(sheet, r2, c2)
        base = f"K[{escape(sheet, literal=True)}][{r1}:{r2 + 1}, {c1}:{c2 + 1}]"
        dense, plain = not (covered == EMPTY).any(), bool((covered == NUM).all())
        if not pieces:
            return E(base, dense=dense, plain=plain)
        parts = ", ".join(f"({code}, {a1}, {b1})" for code, a1, b1, _, _ in pieces)
        return E(f"_patch({base}, {r1}, {c1}, [{parts}])", dense=dense, plain=plain)

    def kinds(self, sheet, r1, c1, r2, c2, pieces=None):
        """The compiler's kind codes of sheet!r1c1:r2c2, computed cells (parameters, blocks) as NUM."""
        if pieces is None:
            pieces = [p[1:] for p in self.c.params if p[0] == sheet]
            pieces += [self.g.blocks[i].out for i in self.g.blocks_in(sheet, r1, c1, r2, c2)]
            pieces = [(None, *p) for p in pieces]
        grid = self.c.ckind[sheet]
        covered = np.full((r2 - r1 + 1, c2 - c1 + 1), EMPTY, np.int8)
        have = grid[r1 : r2 + 1, c1 : c2 + 1]
        covered[: have.shape[0], : have.shape[1]] = have
        for _, a1, b1, a2, b2 in pieces:
            if a1 <= r2 and r1 <= a2 and b1 <= c2 and c1 <= b2:
                covered[max(a1, r1) - r1 : min(a2, r2) - r1 + 1, max(b1, c1) - c1 : min(b2, c2) - c1 + 1] = (
                    NUM
                )
        return covered

    # ---- formulas -----------------------------------------------------------------------------------
    def tr(self, n, b) -> E:
        if self.loop is not None:
            got = self.loop.part(n, b)
            if got is not None:
                return got
        T = type(n)
        if T is RefUse:
            r1, c1, r2, c2 = n.footprint(b.R, b.C)
            a = self.area(n.sheet, r1, c1, r2, c2, b.anchor)
            h, w = n.r2 - n.r1 + 1, n.c2 - n.c1 + 1
            if h == 1 and w == 1:
                return a
            self.no_bools(self.c.ckind[n.sheet][r1 : r2 + 1, c1 : c2 + 1], b.anchor)
            return E(f"{a.code}.unfold(0, {h}, 1).unfold(1, {w}, 1)", True, dense=a.dense)
        if T is P.Number or T is P.Bool:
            return E(repr(float(n.value)))
        if T is P.Unary:
            x = self.num(n.operand, b)
            return E(f"(-{x.code})" if n.op == "-" else x.code, x.win)
        if T is P.Percent:
            return E(f"({self.num(n.operand, b).code} / 100.0)")
        if T is P.Binary and n.op in "+-*/^":
            x, y = _lift(self.num(n.left, b), self.num(n.right, b))
            return E(f"({x.code} {'**' if n.op == '^' else n.op} {y.code})", x.win or y.win)
        if T is P.Binary and n.op in _CMP:
            x, y = _lift(self.num(n.left, b), self.num(n.right, b))
            return E(f"(_t({x.code}) {_CMP[n.op]} {y.code})", x.win or y.win, True)
        if T is P.Call:
            return self.call(n, b)
        raise Unsupported(f"{b.anchor}: cannot export {type(n).__name__} {getattr(n, 'op', '')}".strip())

    @staticmethod
    def no_bools(kinds, where) -> None:
        """A range's cells (their kind codes) hold no TRUE/FALSE: ranges skip them; the export would not."""
        if (kinds == BOOL).any():
            raise Unsupported(
                f"{where}: a range with TRUE/FALSE cells (ranges skip them; the export would not)"
            )

    def num(self, n, b) -> E:
        e = self.tr(n, b)
        return E(f"{e.code}.double()", e.win) if e.bool else e

    def call(self, n, b) -> E:
        name, args = n.name, n.args
        if name in _FN1 and len(args) == 1:
            x = self.num(args[0], b)
            return E(f"torch.{_FN1[name]}(_t({x.code}))", x.win)
        if name == "IF" and len(args) in (2, 3):
            c = self.tr(args[0], b)
            x = self.num(args[1], b)
            y = self.num(args[2], b) if len(args) == 3 and not isinstance(args[2], P.Missing) else E("0.0")
            c, x, y = _lift(c, x, y)
            cond = c.code if c.bool else f"(_t({c.code}) != 0)"
            return E(f"torch.where({cond}, _t({x.code}), _t({y.code}))", c.win or x.win or y.win)
        if name in _RED and args:
            xs = [self.num(a, b) for a in args]
            if name == "SUMPRODUCT":
                if not all(x.win for x in xs):
                    raise Unsupported(f"{b.anchor}: SUMPRODUCT of single cells")
                return E(f"({' * '.join(x.code for x in xs)}).sum((-2, -1))")
            if name in ("AVERAGE", "MAX", "MIN") and not all(x.dense for x in xs):
                raise Unsupported(f"{b.anchor}: {name}() over empty cells (the export keeps every value)")
            if len(xs) == 1 and xs[0].win:
                fn = _RED[name]
                return E(
                    f"torch.{fn}({xs[0].code}, dim=(-2, -1))"
                    if fn != "sum"
                    else f"{xs[0].code}.sum((-2, -1))"
                )
            if any(x.win for x in xs):
                raise Unsupported(f"{b.anchor}: {name}() over several ranges")
            if name in ("SUM", "AVERAGE"):
                s = " + ".join(x.code for x in xs)
                return E(f"({s})" if name == "SUM" else f"(({s}) / {float(len(xs))})")
            out = xs[0].code
            for x in xs[1:]:
                out = f"torch.{'maximum' if name == 'MAX' else 'minimum'}(_t({out}), _t({x.code}))"
            return E(out)
        if name in _PAIRS and len(args) == 2:
            x, y = (self.num(a, b) for a in args)
            if x.win != y.win or not (x.dense and y.dense):
                raise Unsupported(f"{b.anchor}: {name}() over empty cells or ranges of different sizes")
            term = _PAIRS[name].format(x=x.code, y=y.code)
            return E(f"({term}).sum((-2, -1))" if x.win else f"({term})")
        if name in LOOKUPS:
            return self.lookup(n, b)
        raise Unsupported(f"{b.anchor}: {name}() has no translation in the general export form")

    def _emit(self, b):
        self.g.analyse(b)
        if b.array:
            raise Unsupported(f"{b.anchor}: array formulas are exported only in the layer form")
        e = self.num(b.ast, b)
        if e.win:
            raise Unsupported(f"{b.anchor}: the formula gives a range, not one value per cell")
        var = self.var_name(b.sheet, b.out[0], b.out[1])
        self.vars[b.id] = var
        self.lines.append(
            f"        # {escape(area_name(b.sheet, *b.out))}  {escape(self.wb.sheets[b.sheet].formula((b.r0, b.c0)))}"
        )
        self.lines.append(f"        {var} = _full({e.code}, {b.R}, {b.C})")

    def var_name(self, sheet, r, c) -> str:
        return f"{col_letters(c).lower()}{r}" + (f"_s{len(self.vars)}" if sheet != self.obj.sheet else "")

    # ---- the module ---------------------------------------------------------------------------------
    def render(self, book_name: str, out_name: str, params_src: str) -> str:
        for s, _, _, r2, c2 in self.c.params:
            self._see(s, r2, c2)
        ref = escape(self.cm.objective_ref)
        init = [
            f"        self.p{k} = nn.Parameter(torch.zeros({r2 - r1 + 1}, {c2 - c1 + 1}, dtype=torch.float64))"
            f"  # {escape(area_name(s, r1, c1, r2, c2))}"
            for k, (s, r1, c1, r2, c2) in enumerate(self.c.params)
        ]
        where = ", ".join(
            f"({escape(s, literal=True)}, {r1}, {c1}, {r2}, {c2})" for s, r1, c1, r2, c2 in self.c.params
        )
        extent = ", ".join(f"{escape(s, literal=True)}: ({r}, {c})" for s, (r, c) in self.extent.items())
        return (
            GENERAL_HEAD.format(
                sheet=escape(self.obj.sheet),
                book=escape(book_name),
                out=escape(out_name),
                objective=ref,
                params=escape(", ".join(self.cm.param_refs)),
                source=escape(book_name, literal=True),
                objective_lit=escape(self.cm.objective_ref, literal=True),
            )
            + f"PARAMS_AT = [{where}]\nEXTENT = {{{extent}}}\n\n\n"
            + params_src
            + GENERAL_MODEL
            + (GATHER_HELPERS if self.gathers else "")
            + GENERAL_CLASS
            + "\n".join(init)
            + "\n        self.load_state_dict(_params() if weights is None else weights)\n\n"
            + "    def forward(self, K):\n"
            + '        """K: {sheet: float64 tensor of its constant cells} (read_constants) -> the objective."""\n'
            + "\n".join(self.lines)
            + f"\n        return {self.result}[0, 0]\n"
            + GENERAL_TAIL
        )
