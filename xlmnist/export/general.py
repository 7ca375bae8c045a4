"""The general export form: any compiled sheet as a straight-line ``forward`` over named 2-D tensors.

Every block the objective needs (in topological order) becomes one statement ``name = <torch expression>``
computing the block's whole [rows, columns] area at once, with the sheet range and formula text as a
comment; the trainable ranges are ``nn.Parameter``s; constant cells are read from the workbook at run time
into one float64 tensor per sheet (``K[sheet]``, indexed by 1-based row and column). A reference that moves
with the block's cells is a shifted slice; a range reference is an unfolded window ``[R, C, h, w]`` that
SUM / AVERAGE / MAX / MIN / SUMPRODUCT reduce over its last two axes. What has no faithful translation (a
block reading its own cells, i.e. a recurrence; an average over empty or text cells; other functions)
raises :class:`Unsupported` naming the cell, never a silently different module.
"""

from __future__ import annotations

from xlmnist.compile.values import BOOL, EMPTY, NUM
from xlmnist.export.translate import Unsupported, escape
from xlmnist.formula import parser as P
from xlmnist.formula.graph import RefUse, topo_order
from xlmnist.xlsx.refs import area_name, col_letters, split_ref

_FN1 = {"EXP": "exp", "LN": "log", "LOG10": "log10", "SQRT": "sqrt", "ABS": "abs", "TANH": "tanh"}
_CMP = {"=": "==", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_RED = {"SUM": "sum", "AVERAGE": "mean", "SUMPRODUCT": "sum", "MAX": "amax", "MIN": "amin"}


class E:
    """Code of a tensor: ``win`` = a window [R, C, h, w] (else [R or 1, C or 1]); ``bool`` = a comparison."""

    def __init__(self, code, win=False, is_bool=False, dense=True):
        self.code, self.win, self.bool, self.dense = code, win, is_bool, dense


class General:
    """Translate the blocks the objective of ``cm`` (a CompiledModel) needs; ``render()`` -> the source."""

    def __init__(self, cm):
        self.cm, self.c = cm, cm.compiler
        self.g, self.wb = self.c.graph, self.c.wb
        osheet, orow, ocol = self._objective_cell()
        self.obj = self.g.block_at(osheet, orow, ocol)
        if self.obj is None:
            raise Unsupported(f"{cm.objective_ref}: the objective is not a formula")
        self.vars: dict[int, str] = {}
        self.lines: list[str] = []
        self.extent: dict[str, list[int]] = {}  # sheet -> [max row, max column] read
        for bid in topo_order(self.g, [self.obj.id]):
            self._emit(self.g.blocks[bid])

    def _objective_cell(self):
        s, r, c, _, _ = split_ref(self.cm.objective_ref)
        return s, r, c

    # ---- areas -----------------------------------------------------------------------------------
    def _see(self, sheet, r2, c2):
        e = self.extent.setdefault(sheet, [1, 1])
        e[0], e[1] = max(e[0], r2), max(e[1], c2)

    def area(self, sheet, r1, c1, r2, c2, where) -> E:
        """Code of the [h, w] tensor of sheet!r1c1:r2c2: parameter, block and constant pieces assembled."""
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
            pieces.append((self.vars[bid], *b.out))
        for code, a1, b1, a2, b2 in pieces:
            if (a1, b1, a2, b2) == (r1, c1, r2, c2):
                return E(code)
            if a1 <= r1 and r2 <= a2 and b1 <= c1 and c2 <= b2:
                return E(f"{code}[{r1 - a1}:{r2 - a1 + 1}, {c1 - b1}:{c2 - b1 + 1}]")
        kind = self.c.ckind[sheet][r1 : r2 + 1, c1 : c2 + 1]
        covered = kind.copy()
        for _, a1, b1, a2, b2 in pieces:
            covered[max(a1, r1) - r1 : min(a2, r2) - r1 + 1, max(b1, c1) - c1 : min(b2, c2) - c1 + 1] = NUM
        if ((covered != NUM) & (covered != BOOL) & (covered != EMPTY)).any():
            raise Unsupported(f"{where}: {area_name(sheet, r1, c1, r2, c2)} holds text or errors")
        self._see(sheet, r2, c2)
        base = f"K[{escape(sheet, literal=True)}][{r1}:{r2 + 1}, {c1}:{c2 + 1}]"
        dense = not (covered == EMPTY).any()
        if not pieces:
            return E(base, dense=dense)
        parts = ", ".join(f"({code}, {a1}, {b1})" for code, a1, b1, _, _ in pieces)
        return E(f"_patch({base}, {r1}, {c1}, [{parts}])", dense=dense)

    # ---- formulas -----------------------------------------------------------------------------------
    def tr(self, n, b) -> E:
        T = type(n)
        if T is RefUse:
            r1, c1, r2, c2 = n.footprint(b.R, b.C)
            a = self.area(n.sheet, r1, c1, r2, c2, b.anchor)
            h, w = n.r2 - n.r1 + 1, n.c2 - n.c1 + 1
            if h == 1 and w == 1:
                return a
            if (self.c.ckind[n.sheet][r1 : r2 + 1, c1 : c2 + 1] == BOOL).any():
                raise Unsupported(
                    f"{b.anchor}: a range with TRUE/FALSE cells (ranges skip them; the export would not)"
                )
            return E(f"{a.code}.unfold(0, {h}, 1).unfold(1, {w}, 1)", True, dense=a.dense)
        if T is P.Number or T is P.Bool:
            return E(repr(float(n.value)))
        if T is P.Unary:
            x = self.num(n.operand, b)
            return E(f"(-{x.code})" if n.op == "-" else x.code, x.win)
        if T is P.Percent:
            return E(f"({self.num(n.operand, b).code} / 100.0)")
        if T is P.Binary and n.op in "+-*/^":
            x, y = self.num(n.left, b), self.num(n.right, b)
            return E(f"({x.code} {'**' if n.op == '^' else n.op} {y.code})", x.win or y.win)
        if T is P.Binary and n.op in _CMP:
            x, y = self.num(n.left, b), self.num(n.right, b)
            return E(f"(_t({x.code}) {_CMP[n.op]} {y.code})", x.win or y.win, True)
        if T is P.Call:
            return self.call(n, b)
        raise Unsupported(f"{b.anchor}: cannot export {type(n).__name__} {getattr(n, 'op', '')}".strip())

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
            cond = c.code if c.bool else f"(_t({c.code}) != 0)"
            x = self.num(args[1], b)
            y = self.num(args[2], b) if len(args) == 3 and not isinstance(args[2], P.Missing) else E("0.0")
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
        raise Unsupported(f"{b.anchor}: {name}() has no translation in the general export form")

    def _emit(self, b):
        self.g.analyse(b)
        if b.array:
            raise Unsupported(f"{b.anchor}: array formulas are exported only in the layer form")
        e = self.num(b.ast, b)
        if e.win:
            raise Unsupported(f"{b.anchor}: the formula gives a range, not one value per cell")
        var = f"{col_letters(b.out[1]).lower()}{b.out[0]}" + (
            f"_s{len(self.vars)}" if b.sheet != self.obj.sheet else ""
        )
        self.vars[b.id] = var
        self.lines.append(
            f"        # {escape(area_name(b.sheet, *b.out))}  {escape(self.wb.sheets[b.sheet].formula((b.r0, b.c0)))}"
        )
        self.lines.append(f"        {var} = _full({e.code}, {b.R}, {b.C})")

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
            + "\n".join(init)
            + "\n        self.load_state_dict(_params() if weights is None else weights)\n\n"
            + "    def forward(self, K):\n"
            + '        """K: {sheet: float64 tensor of its constant cells} (read_constants) -> the objective."""\n'
            + "\n".join(self.lines)
            + f"\n        return {self.vars[self.obj.id]}[0, 0]\n"
            + GENERAL_TAIL
        )


GENERAL_HEAD = '''"""{sheet} of {book} as a PyTorch module, general form (exported by xlmnist).

Run as a script: ``python {out} BOOK --json`` reads BOOK's constant cells and prints the objective
({objective}), computed by ``Model.forward``: one statement per block of copied formulas, over named 2-D
tensors (rows x columns of the block), with the sheet range and formula text as comments.
Trainable cells (nn.Parameters p0, p1, ...): {params}.

Weights: by default the ones baked in at export time (PARAMS, or the .pt file beside this one), NOT the
values now in the workbook; ``--weights book`` reads them from BOOK's trainable cells instead (e.g. after
``xlmnist train BOOK``), as does ``Model(book_weights(BOOK))``.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

SOURCE = {source}
OBJECTIVE = {objective_lit}
'''

GENERAL_MODEL = '''

def _t(x):
    return torch.as_tensor(x, dtype=torch.float64)


def _full(x, rows, cols):
    """A block's value as its full [rows, cols] area (a formula that does not vary is broadcast)."""
    return torch.broadcast_to(_t(x), (rows, cols))


def _patch(base, r1, c1, pieces):
    """The constant cells ``base`` (at sheet row r1, column c1) with the computed [(tensor, row, col)] over them."""
    out = base.clone()
    h, w = out.shape
    for t, a1, b1 in pieces:
        rs, re_ = max(a1, r1), min(a1 + t.shape[0], r1 + h)
        cs, ce = max(b1, c1), min(b1 + t.shape[1], c1 + w)
        if rs < re_ and cs < ce:
            out[rs - r1 : re_ - r1, cs - c1 : ce - c1] = t[rs - a1 : re_ - a1, cs - b1 : ce - b1]
    return out


class Model(nn.Module):
    def __init__(self, weights=None):
        """weights: a state dict (default: the weights baked in at export, see _params / book_weights)."""
        super().__init__()
'''

GENERAL_TAIL = '''

def read_constants(book):
    """{sheet: float64 [rows + 1, cols + 1] tensor} of BOOK's number cells (1-based; text and empty: 0)."""
    from xlmnist.xlsx.reader import read_workbook

    wb = read_workbook(book)
    out = {}
    for sheet, (rows, cols) in EXTENT.items():
        k = torch.zeros(rows + 1, cols + 1, dtype=torch.float64)
        for (r, c), v in wb.sheet(sheet).values.items():
            if r <= rows and c <= cols and isinstance(v, (int, float)):
                k[r, c] = float(v)
        out[sheet] = k
    return out


def book_weights(book):
    """The state dict read from BOOK's trainable cells."""
    k = read_constants(book)
    return {f"p{i}": k[s][r1 : r2 + 1, c1 : c2 + 1].clone() for i, (s, r1, c1, r2, c2) in enumerate(PARAMS_AT)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("book", help="the workbook to read the constant cells from")
    parser.add_argument("--json", action="store_true", help="print {objective, weights} as JSON")
    parser.add_argument(
        "--weights",
        choices=("baked", "book"),
        default="baked",
        help="baked (default): the weights saved at export time; book: read them from BOOK's trainable cells",
    )
    args = parser.parse_args(argv)
    model = Model(book_weights(args.book) if args.weights == "book" else None)
    with torch.no_grad():
        objective = float(model(read_constants(args.book)))
    if args.json:
        print(json.dumps({"objective": objective, "weights": args.weights}))
    else:
        print(f"weights: {'from ' + args.book if args.weights == 'book' else 'baked in at export'}")
        print(f"objective ({OBJECTIVE}): {objective!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''
