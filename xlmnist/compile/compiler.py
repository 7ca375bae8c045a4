"""Blocks -> one vectorized torch op each; ``compile_workbook`` -> :class:`CompiledModel`.

Everything that does not depend on a trainable cell is evaluated once at compile time (constant
folding, strings allowed); only the rest runs in ``objective(params)`` under autograd.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from xlmnist.compile import cellwise, saved, scan
from xlmnist.compile import functions as F
from xlmnist.compile.areas import (
    DATA,
    Areas,
    _Expr,
    _np_unfold,
    _t_unfold,
    _windows,
    parse_areas,  # noqa: F401 - also imported from here (export.module)
)
from xlmnist.compile.functions import BOOL, EMPTY, ERR, NUM, TEXT, ExcelError, Value
from xlmnist.compile.scan_loop import Hole
from xlmnist.compile.values import typed
from xlmnist.errors import FormulaError, UnsupportedFunction, WorkbookError
from xlmnist.formula import parser as P
from xlmnist.formula.graph import Graph, RefUse, topo_order
from xlmnist.xlsx.refs import area_name, cell_name


def _scalar(e: _Expr) -> float | None:
    v = e.const
    if v is None or v.kind is not None or v.t.numel() != 1:
        return None
    return float(v.t.reshape(()))


def _is_ref(node) -> bool:
    """A reference or an array constant as an argument (not a typed value)."""
    return type(node) in (RefUse, P.Array) or (type(node) is Hole and node.ref)


def _typed(e: _Expr) -> _Expr:
    """A directly typed argument: its booleans become numbers."""
    return _Expr(typed(e.const)) if e.const is not None else _Expr(fn=lambda env: typed(e(env)))


class _Ctx:
    def __init__(self, dtype, device):
        self.dtype, self.device = dtype, device


class Compiler(Areas):
    def __init__(self, wb, dtype=torch.float64, device="cpu", graph=None):
        self.wb, self.ctx = wb, _Ctx(dtype, torch.device(device))
        self.graph = graph if graph is not None else Graph(wb)  # the graph is dtype-free: shareable
        self.src, self.cnum, self.ckind, self.cstr = {}, {}, {}, {}
        self.cerr: dict[str, dict] = {}  # sheet -> {(row, col): '#N/A'}: the error values the file holds
        self._init_grids()
        self.params: list[tuple[str, int, int, int, int]] = []
        self.compiled: dict[int, bool] = {}  # block id -> dynamic?
        self.steps: list[tuple[int, _Expr]] = []  # dynamic blocks in dependency order
        self.bad_inputs: dict[int, str] = {}
        self.data: tuple[str, int, int, int, int] | None = None
        self.data_default: torch.Tensor | None = None
        self.in_data: set[int] = set()  # blocks inside the data range: their values come from the data
        self.saved: dict[int, str] = {}  # blocks that take Excel's saved values: why (compile/saved.py)
        self.aligned: set[int] = {DATA}  # sources whose rows are the data rows (any number of them)
        self.rows_of: dict[int, tuple[int, int]] = {}
        self.reads: dict[int, set[int]] = {}  # block -> dynamic blocks it reads
        self._row_aligned = False
        self.random: set[int] = set()  # blocks that use RAND() & co., or read one: re-sampled per call
        self.gen = torch.Generator(device=self.ctx.device)  # their samples; reseed(seed) fixes them
        self.gen.seed()
        self._random = self._uses_row = False  # set while compiling one block's formula

    def reseed(self, seed: int) -> None:
        """Fix the samples of RAND() & co.: the same sequence of draws for the same seed."""
        self.gen.manual_seed(int(seed))

    def add_param(self, sheet: str, r1: int, c1: int, r2: int, c2: int) -> None:
        where = area_name(sheet, r1, c1, r2, c2)
        self._check_extent(sheet, where, "trainable range", r1, c1, r2, c2)
        self._cover(sheet, r1, c1, r2, c2, "trainable range")
        if self.graph.blocks_in(sheet, r1, c1, r2, c2):
            b = self.graph.blocks[self.graph.blocks_in(sheet, r1, c1, r2, c2)[0]]
            raise WorkbookError(f"{where}: trainable range overlaps the formula cells {b.name}")
        kind = self._grid_slice(self.ckind[sheet], r1, c1, r2, c2, EMPTY)
        bad = np.argwhere((kind == TEXT) | (kind == ERR))
        if len(bad):
            raise WorkbookError(
                f"{cell_name(sheet, r1 + bad[0][0], c1 + bad[0][1])}: trainable cell is not a number"
            )
        grid = self.src[sheet]
        if r2 >= grid.shape[0] or c2 >= grid.shape[1]:
            self._grow(sheet, r2, c2)
            grid = self.src[sheet]
        if (grid[r1 : r2 + 1, c1 : c2 + 1] <= -2).any():
            raise WorkbookError(f"{where}: trainable ranges overlap")
        grid[r1 : r2 + 1, c1 : c2 + 1] = -(len(self.params) + 2)
        self.params.append((sheet, r1, c1, r2, c2))

    def set_data(self, sheet: str, r1: int, c1: int, r2: int, c2: int) -> None:
        """Make the rectangle of data rows an input: ``env[DATA]`` of shape [M, ncols], any M."""
        where = area_name(sheet, r1, c1, r2, c2)
        self._check_extent(sheet, where, "data range", r1, c1, r2, c2)
        self._cover(sheet, r1, c1, r2, c2, "data range")
        # a copied column that runs past the data rows (e.g. one-hot labels over all rows of the data
        # sheet while the model reads only the first rows) becomes one part per side of each boundary
        for bid in self.graph.split_rows(sheet, (r1, r2 + 1)):
            o = self.graph.blocks[bid].out
            self.src[sheet][o[0] : o[2] + 1, o[1] : o[3] + 1] = bid
        ids = self.graph.blocks_in(sheet, r1, c1, r2, c2)
        for bid in ids:
            b = self.graph.blocks[bid]
            o = b.out
            if not (r1 <= o[0] and o[2] <= r2 and c1 <= o[1] and o[3] <= c2):
                raise WorkbookError(
                    f"{b.anchor}: the formula block {b.name} straddles the data range {where}"
                )
        self.compile_blocks(ids)  # fold their current values: they are the default data rows
        for bid in ids:
            if self.compiled[bid]:
                b = self.graph.blocks[bid]
                raise WorkbookError(
                    f"{b.anchor}: a cell of the data range {where} depends on trainable cells"
                )
        self.compiled.clear()
        self.steps.clear()
        self.in_data = set(ids)
        grid = self.src[sheet]
        if r2 >= grid.shape[0] or c2 >= grid.shape[1]:
            self._grow(sheet, r2, c2)
            grid = self.src[sheet]
        if (grid[r1 : r2 + 1, c1 : c2 + 1] <= -2).any():
            raise WorkbookError(f"{where}: the data range overlaps the trainable cells")
        num = self._grid_slice(self.cnum[sheet], r1, c1, r2, c2, 0.0)
        self.data_default = torch.tensor(num, dtype=self.ctx.dtype, device=self.ctx.device)
        grid[r1 : r2 + 1, c1 : c2 + 1] = DATA
        self.data = (sheet, r1, c1, r2, c2)
        self.rows_of[DATA] = (r1, r2)

    def initial_params(self) -> list[torch.Tensor]:
        out = []
        for sheet, r1, c1, r2, c2 in self.params:
            a = np.nan_to_num(self._grid_slice(self.cnum[sheet], r1, c1, r2, c2, 0.0), nan=0.0)
            out.append(torch.tensor(a, dtype=self.ctx.dtype, device=self.ctx.device))
        return out

    # ---- expressions --------------------------------------------------------------------------------
    def expr(self, node, b) -> _Expr:
        T = type(node)
        ctx = self.ctx
        if T is RefUse:
            return self._ref(node, b)
        if T is Hole:  # a part compiled already (a running recurrence, xlmnist.compile.scan_loop)
            return node.e
        if T is P.Number:
            return _Expr(F._num_of(ctx, node.value))
        if T is P.Bool:
            return _Expr(F._bool(F._num_of(ctx, float(node.value)).t))
        if T is P.String:
            return _Expr(self._text(node.value))
        if T is P.Error:
            return _Expr(Value(F._num_of(ctx, math.nan).t, np.full((1, 1, 1, 1), ERR, np.int8)))
        if T is P.Missing:
            return _Expr(Value(F._num_of(ctx, 0.0).t, np.full((1, 1, 1, 1), EMPTY, np.int8)))
        if T is P.Array:
            return _Expr(self._array(node))
        if T is P.Unary:
            return self._op(b, lambda c, a: Value(-a[0].t if node.op == "-" else a[0].t), [node.operand])
        if T is P.Percent:
            return self._op(b, lambda c, a: Value(a[0].t / 100.0), [node.operand])
        if T is P.Binary:
            op = node.op
            if op in F.ARITH:
                fn = F.ARITH[op]
                left, right = self.expr(node.left, b), self.expr(node.right, b)
                k = _scalar(right)
                if k is not None and left.const is None:
                    if op == "^" and k == 2.0:
                        return _Expr(fn=lambda env: Value(torch.square(left(env).t)))
                    return _Expr(fn=lambda env: Value(fn(left(env).t, k)))
                k = _scalar(left)
                if k is not None and right.const is None and op in "+*":
                    return _Expr(fn=lambda env: Value(fn(right(env).t, k)))
                return self._op(b, lambda c, a: Value(fn(a[0].t, a[1].t)), [left, right])
            if op in F._CMP:
                return self._op(b, lambda c, a: F.compare(c, op, a[0], a[1]), [node.left, node.right])
            if op == "&":
                return self._op(b, lambda c, a: F.concat(c, a[0], a[1]), [node.left, node.right])
            raise FormulaError(f"{b.anchor}: the {op!r} reference operator is not supported")
        if T is P.Call:
            if node.name in cellwise.POSITION:
                return cellwise.position(self, node, b)
            if node.name in cellwise.RANDOM:
                return cellwise.random(self, node, b)
            entry = F.FUNCTIONS.get(node.name)
            if entry is None:
                raise UnsupportedFunction(f"{b.anchor}: unsupported function {node.name}()")
            fn, lo, hi = entry
            if not lo <= len(node.args) <= hi:
                raise FormulaError(
                    f"{b.anchor}: {node.name}() takes {lo}..{hi} arguments, got {len(node.args)}"
                )
            args = list(node.args)
            if node.name in F.DIRECT_BOOLS:  # TRUE typed as an argument counts, in a cell it does not
                args = [a if _is_ref(a) else _typed(self.expr(a, b)) for a in args]
            return self._op(b, fn, args, node.name)
        raise FormulaError(f"{b.anchor}: cannot compile {type(node).__name__}")

    def _text(self, s: str) -> Value:
        return Value(
            F._num_of(self.ctx, math.nan).t,
            np.full((1, 1, 1, 1), TEXT, np.int8),
            np.full((1, 1, 1, 1), s, object),
        )

    def _array(self, node: P.Array) -> Value:
        rows = node.rows
        h, w = len(rows), len(rows[0])
        num = np.zeros((1, 1, h, w))
        kind = np.zeros((1, 1, h, w), np.int8)
        strs = np.full((1, 1, h, w), None, object)
        for i, row in enumerate(rows):
            for j, lit in enumerate(row):
                if isinstance(lit, P.Number):
                    num[0, 0, i, j] = lit.value
                elif isinstance(lit, P.Bool):
                    num[0, 0, i, j], kind[0, 0, i, j] = float(lit.value), BOOL
                elif isinstance(lit, P.String):
                    num[0, 0, i, j], kind[0, 0, i, j], strs[0, 0, i, j] = math.nan, TEXT, lit.value
                else:
                    num[0, 0, i, j], kind[0, 0, i, j] = math.nan, ERR
        t = torch.tensor(num, dtype=self.ctx.dtype, device=self.ctx.device)
        return Value(t, None if (kind == NUM).all() else kind, strs if (kind == TEXT).any() else None)

    def _op(self, b, fn, nodes, name=None) -> _Expr:
        args = [n if isinstance(n, _Expr) else self.expr(n, b) for n in nodes]
        ctx = self.ctx

        def call(vals):
            try:
                return fn(ctx, vals)
            except ExcelError as exc:
                raise FormulaError(f"{b.anchor}: {name or 'operator'}: {exc}") from None
            except RuntimeError as exc:
                msg = str(exc).splitlines()[0]
                raise FormulaError(f"{b.anchor}: {name or 'operator'}: incompatible shapes ({msg})") from None

        if all(a.const is not None for a in args):
            with torch.no_grad():
                return _Expr(call([a.const for a in args]))
        return _Expr(fn=lambda env: call([a(env) for a in args]))

    def _ref(self, use: RefUse, b) -> _Expr:
        R, C = b.R, b.C
        h, w = use.r2 - use.r1 + 1, use.c2 - use.c1 + 1
        fp = use.footprint(R, C)
        e, kind, strs = self.area(use.sheet, *fp, owner=b.id)
        rrel, crel = use.rrel, use.crel
        if e.aligned:
            if rrel and h != 1:
                raise WorkbookError(
                    f"{b.anchor}: a moving window of several data rows is not row-polymorphic"
                )
            if rrel:
                R, self._row_aligned = -1, True
            else:
                if b.array and (b.out[0], b.out[2]) == (fp[0], fp[2]):
                    self._row_aligned = True  # an array formula over the data rows, e.g. MMULT(X, W)
                h = -1

        def shape_np(a):
            return None if a is None else _windows(a, R, C, h, w, rrel, crel, _np_unfold)

        k, s = shape_np(kind), shape_np(strs)
        if e.const is not None:
            return _Expr(Value(_windows(e.const, R, C, h, w, rrel, crel, _t_unfold).contiguous(), k, s))
        f = e.fn
        return _Expr(fn=lambda env: Value(_windows(f(env), R, C, h, w, rrel, crel, _t_unfold), k, s))

    # ---- blocks -------------------------------------------------------------------------------------
    def compile_blocks(self, roots: list[int]) -> None:
        for bid in topo_order(self.graph, roots):
            if bid in self.compiled:
                continue
            b = self.graph.blocks[bid]
            if bid in self.in_data:
                self.compiled[bid] = False
                continue
            if b.step and scan.compile_scan(self, bid):  # a running recurrence: all its steps at once
                continue
            self._row_aligned = self._random = self._uses_row = False
            try:
                e = self.expr(b.ast, b)
            except UnsupportedFunction as exc:
                if saved.stand_in(self, b, str(exc)):  # a constant: Excel's saved values (compile/saved.py)
                    continue
                raise
            r1, c1, r2, c2 = b.out
            self._cover(b.sheet, r1, c1, r2, c2, "formula block")
            H, W = r2 - r1 + 1, c2 - c1 + 1
            aligned = self._row_aligned
            if aligned and self._uses_row:
                raise FormulaError(
                    f"{b.anchor}: ROW() in {b.name}, a formula over the data rows, is the sheet row, which "
                    "other data rows do not have (not row-polymorphic)"
                )
            if self._random or self.random.intersection(self.reads.get(bid, ())):
                self.random.add(bid)
            if aligned:
                self.aligned.add(bid)
                self.rows_of[bid] = (r1, r2)

            def to_out(v: Value, b=b, H=H, W=W, aligned=aligned) -> torch.Tensor:
                t = v.t
                if aligned:
                    if t.shape[2] != 1 or t.shape[3] != 1:
                        if not b.array:
                            raise FormulaError(f"{b.anchor}: the formula gives a range, not one value")
                        t = t[0, 0]
                        return t if t.shape[1] == W else t.expand(-1, W)
                    t = t[:, :, 0, 0]
                    return t if t.shape[1] == W else t.expand(-1, W)
                if not b.array:
                    if t.shape[2] != 1 or t.shape[3] != 1:
                        raise FormulaError(
                            f"{b.anchor}: the formula gives a {t.shape[2]}x{t.shape[3]} range, not one value "
                            "(enter it as an array formula)"
                        )
                    if t.shape[0] == H and t.shape[1] == W:
                        return t.view(H, W)
                    return t[:, :, 0, 0].expand(H, W)
                t = t[0, 0]
                if t.shape[0] not in (1, H) or t.shape[1] not in (1, W):
                    raise FormulaError(f"{b.anchor}: array result {tuple(t.shape)} does not fit {b.name}")
                return t.expand(H, W)

            if e.const is not None:
                v = e.const
                out = to_out(v).detach().cpu().numpy()
                sl = (slice(r1, r2 + 1), slice(c1, c2 + 1))
                self.cnum[b.sheet][sl] = out
                kind = np.where(np.isfinite(out), NUM, ERR).astype(np.int8)
                if v.kind is not None and not b.array:
                    kind = np.where(np.isfinite(out), np.broadcast_to(v.kind[:, :, 0, 0], (H, W)), kind)
                    kind[kind == EMPTY] = NUM  # =A5 of an empty A5 is 0, not an empty cell
                if v.s is not None and not b.array:
                    if self.cstr[b.sheet] is None:
                        self.cstr[b.sheet] = np.full(self.cnum[b.sheet].shape, None, object)
                    self.cstr[b.sheet][sl] = np.broadcast_to(v.s[:, :, 0, 0], (H, W))
                    kind = np.where(np.broadcast_to(v.s[:, :, 0, 0], (H, W)) != None, TEXT, kind)  # noqa: E711
                self.ckind[b.sheet][sl] = kind
                self.compiled[bid] = False
            else:
                self.compiled[bid] = True
                self.steps.append((bid, _Expr(fn=lambda env, e=e, to_out=to_out: to_out(e(env)))))

    def run(self, params, upto: set[int] | None = None) -> dict:
        if len(params) != len(self.params):
            raise WorkbookError(f"expected {len(self.params)} parameter tensors, got {len(params)}")
        env = {-(k + 2): p for k, p in enumerate(params)}
        env[DATA] = self.data_default
        for bid, e in self.steps:
            if upto is None or bid in upto:
                env[bid] = e(env)
        return env
