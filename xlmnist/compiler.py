"""Blocks -> one vectorized torch op each; ``compile_workbook`` -> :class:`CompiledModel`.

Everything that does not depend on a trainable cell is evaluated once at compile time (constant
folding, strings allowed); only the rest runs in ``objective(params)`` under autograd.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np
import torch

from xlmnist import functions as F
from xlmnist import parser as P
from xlmnist.errors import FormulaError, WorkbookError
from xlmnist.functions import BOOL, EMPTY, ERR, NUM, TEXT, ExcelError, Value
from xlmnist.graph import Graph, RefUse, topo_order
from xlmnist.reader import XLError, area_name, cell_name, read_workbook


class _Expr:
    __slots__ = ("const", "fn")

    def __init__(self, const: Value | None = None, fn=None):
        self.const, self.fn = const, fn

    def __call__(self, env):
        return self.const if self.const is not None else self.fn(env)


def _scalar(e: _Expr) -> float | None:
    v = e.const
    if v is None or v.kind is not None or v.t.numel() != 1:
        return None
    return float(v.t.reshape(()))


class _Ctx:
    def __init__(self, dtype, device):
        self.dtype, self.device = dtype, device


def _windows(a, R: int, C: int, h: int, w: int, rrel: bool, crel: bool, unfold):
    """Footprint [FH, FW] -> per-cell windows [bR, bC, h, w] (views)."""
    rrel, crel = rrel and R > 1, crel and C > 1
    if (not rrel or h == 1) and (not crel or w == 1):  # one reshape does it
        return a.reshape(R if rrel else 1, C if crel else 1, 1 if rrel else h, 1 if crel else w)
    a = unfold(a, 0, h).swapaxes(1, 2) if rrel else a[None]
    return unfold(a, 2, w).swapaxes(1, 2) if crel else a[:, None]


def _t_unfold(t, dim, size):
    return t.unfold(dim, size, 1)


def _np_unfold(a, dim, size):
    return np.lib.stride_tricks.sliding_window_view(a, size, axis=dim)


class Compiler:
    def __init__(self, wb, dtype=torch.float64, device="cpu"):
        self.wb, self.ctx = wb, _Ctx(dtype, torch.device(device))
        self.graph = Graph(wb)
        self.src = {name: g.copy() for name, g in self.graph.grid.items()}
        self.cnum, self.ckind, self.cstr = {}, {}, {}
        for name in wb.order:
            self._const_grid(name)
        self.params: list[tuple[str, int, int, int, int]] = []
        self.compiled: dict[int, bool] = {}  # block id -> dynamic?
        self.steps: list[tuple[int, _Expr]] = []  # dynamic blocks in dependency order
        self.bad_inputs: dict[int, str] = {}

    # ---- constants ----------------------------------------------------------------------------------
    def _const_grid(self, name: str) -> None:
        sh = self.wb.sheets[name]
        shape = self.src[name].shape
        num = np.zeros(shape)
        kind = np.full(shape, EMPTY, np.int8)
        strs = None
        for (r, c), v in sh.values.items():
            if isinstance(v, bool):
                num[r, c], kind[r, c] = float(v), BOOL
            elif isinstance(v, float):
                num[r, c], kind[r, c] = v, NUM
            elif isinstance(v, XLError):
                num[r, c], kind[r, c] = math.nan, ERR
            else:
                if strs is None:
                    strs = np.full(shape, None, object)
                num[r, c], kind[r, c], strs[r, c] = math.nan, TEXT, v
        self.cnum[name], self.ckind[name], self.cstr[name] = num, kind, strs

    def _grid_slice(self, arr, r1, c1, r2, c2, fill):
        H, W = arr.shape
        if r2 < H and c2 < W:
            return arr[r1 : r2 + 1, c1 : c2 + 1]
        out = np.full((r2 - r1 + 1, c2 - c1 + 1), fill, dtype=arr.dtype)
        sub = arr[r1 : min(r2 + 1, H), c1 : min(c2 + 1, W)]
        out[: sub.shape[0], : sub.shape[1]] = sub
        return out

    def add_param(self, sheet: str, r1: int, c1: int, r2: int, c2: int) -> None:
        where = area_name(sheet, r1, c1, r2, c2)
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

    def _grow(self, sheet, r2, c2):
        old = self.src[sheet]
        shape = (max(old.shape[0], r2 + 2), max(old.shape[1], c2 + 2))
        for store, fill in ((self.src, -1), (self.cnum, 0.0), (self.ckind, EMPTY), (self.cstr, None)):
            a = store[sheet]
            if a is None:
                continue
            b = np.full(shape, fill, dtype=a.dtype)
            b[: a.shape[0], : a.shape[1]] = a
            store[sheet] = b

    def initial_params(self) -> list[torch.Tensor]:
        out = []
        for sheet, r1, c1, r2, c2 in self.params:
            a = np.nan_to_num(self._grid_slice(self.cnum[sheet], r1, c1, r2, c2, 0.0), nan=0.0)
            out.append(torch.tensor(a, dtype=self.ctx.dtype, device=self.ctx.device))
        return out

    # ---- areas --------------------------------------------------------------------------------------
    def area(self, sheet: str, r1: int, c1: int, r2: int, c2: int, owner: int | None = None):
        """An _Expr for the 2-D tensor of a rectangle, plus its kind/string arrays (None if all numbers)."""
        ids = np.unique(self._grid_slice(self.src[sheet], r1, c1, r2, c2, -1))
        dyn = [int(i) for i in ids if i <= -2 or (i >= 0 and self.compiled.get(int(i)))]
        kind = self._grid_slice(self.ckind[sheet], r1, c1, r2, c2, EMPTY).copy()
        strs = self.cstr[sheet]
        strs = None if strs is None else self._grid_slice(strs, r1, c1, r2, c2, None)
        num = self._grid_slice(self.cnum[sheet], r1, c1, r2, c2, 0.0)
        pieces = []
        for i in dyn:
            s1, sc1, s2, sc2 = self.params[-i - 2][1:] if i <= -2 else self.graph.blocks[i].out
            a1, b1, a2, b2 = max(r1, s1), max(c1, sc1), min(r2, s2), min(c2, sc2)
            src = (slice(a1 - s1, a2 - s1 + 1), slice(b1 - sc1, b2 - sc1 + 1))
            if (a1, b1, a2, b2) == (s1, sc1, s2, sc2):
                src = ...  # the whole source: no slicing op
            dst = (slice(a1 - r1, a2 - r1 + 1), slice(b1 - c1, b2 - c1 + 1))
            kind[dst] = NUM
            pieces.append((i, src, dst))
        if owner is not None:
            bad = np.argwhere((kind == TEXT) | (kind == ERR))
            if len(bad) and owner not in self.bad_inputs:
                rr, cc = int(bad[0][0]), int(bad[0][1])
                what = "text" if kind[rr, cc] == TEXT else "an error value"
                self.bad_inputs[owner] = f"{cell_name(sheet, r1 + rr, c1 + cc)} holds {what}"
        kind = None if (kind == NUM).all() else kind
        if strs is not None and not (kind is not None and (kind == TEXT).any()):
            strs = None
        base = torch.tensor(num, dtype=self.ctx.dtype, device=self.ctx.device)
        if not pieces:
            return _Expr(base), kind, strs
        H, W = r2 - r1 + 1, c2 - c1 + 1
        if len(pieces) == 1 and pieces[0][2] == (slice(0, H), slice(0, W)):
            i, src, _ = pieces[0]
            if src is ...:
                return _Expr(fn=lambda env: env[i]), kind, strs
            return _Expr(fn=lambda env: env[i][src]), kind, strs

        strips = sorted(pieces, key=lambda p: p[2][1].start)
        if (
            all(p[2][0] == slice(0, H) for p in strips)
            and [p[2][1].start for p in strips] == [0] + [p[2][1].stop for p in strips[:-1]]
            and strips[-1][2][1].stop == W
        ):
            return (
                _Expr(
                    fn=lambda env: torch.cat(
                        [env[i] if src is ... else env[i][src] for i, src, _ in strips], 1
                    )
                ),
                kind,
                strs,
            )

        def assemble(env):
            out = base.clone()
            for i, src, dst in pieces:
                out[dst] = env[i] if src is ... else env[i][src]
            return out

        return _Expr(fn=assemble), kind, strs

    # ---- expressions --------------------------------------------------------------------------------
    def expr(self, node, b) -> _Expr:
        T = type(node)
        ctx = self.ctx
        if T is RefUse:
            return self._ref(node, b)
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
            entry = F.FUNCTIONS.get(node.name)
            if entry is None:
                raise FormulaError(f"{b.anchor}: unsupported function {node.name}()")
            fn, lo, hi = entry
            if not lo <= len(node.args) <= hi:
                raise FormulaError(
                    f"{b.anchor}: {node.name}() takes {lo}..{hi} arguments, got {len(node.args)}"
                )
            return self._op(b, fn, list(node.args), node.name)
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
            e = self.expr(b.ast, b)
            r1, c1, r2, c2 = b.out
            H, W = r2 - r1 + 1, c2 - c1 + 1

            def to_out(v: Value, b=b, H=H, W=W) -> torch.Tensor:
                t = v.t
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
        for bid, e in self.steps:
            if upto is None or bid in upto:
                env[bid] = e(env)
        return env


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


SENSES = {"1": "max", "2": "min", "3": "value"}


class CompiledModel:
    """A workbook's objective compiled to torch; see DESIGN.md for the interface."""

    def __init__(self, comp: Compiler, objective: tuple, sense: str, target: float | None, settings: dict):
        self._c = comp
        sheet, r, c = objective[0], objective[1], objective[2]
        self.objective_ref = (
            cell_name(sheet, r, c).replace("'", "") if "'" not in sheet else cell_name(sheet, r, c)
        )
        self.sense, self.target, self.settings = sense, target, settings
        self.param_refs = [area_name(*p) for p in comp.params]
        self.dtype, self.device = comp.ctx.dtype, comp.ctx.device
        blk = comp.graph.block_at(sheet, r, c)
        if blk is None:
            raise WorkbookError(f"{self.objective_ref}: the objective cell holds no formula")
        comp.compile_blocks([blk.id])
        if not comp.compiled[blk.id]:
            raise WorkbookError(
                f"{self.objective_ref}: the objective does not depend on any trainable cell ({', '.join(self.param_refs)})"
            )
        self._obj = (blk.id, r - blk.out[0], c - blk.out[1])
        needed = set(topo_order(comp.graph, [blk.id]))
        self._obj_steps = [(bid, e) for bid, e in comp.steps if bid in needed]
        with torch.no_grad():
            value = self.objective(self.initial_params())
        if not torch.isfinite(value):
            self._diagnose()

    def initial_params(self) -> list[torch.Tensor]:
        return self._c.initial_params()

    def objective(self, params) -> torch.Tensor:
        env = {-(k + 2): p for k, p in enumerate(params)}
        for bid, e in self._obj_steps:
            env[bid] = e(env)
        bid, i, j = self._obj
        return env[bid][i, j]

    def evaluate(self, refs, params) -> dict:
        if isinstance(refs, str):
            refs = [refs]
        c = self._c
        areas = {}
        for ref in refs:
            (sheet, r1, c1, r2, c2), *more = parse_areas(
                c.wb, ref, self.objective_ref.split("!")[0].strip("'")
            )
            if more:
                raise WorkbookError(f"{ref}: evaluate takes one rectangle per reference")
            c.compile_blocks(c.graph.blocks_in(sheet, r1, c1, r2, c2))
            areas[ref] = c.area(sheet, r1, c1, r2, c2)[0]
        env = c.run(params)
        return {ref: e(env) for ref, e in areas.items()}

    def _diagnose(self):
        c = self._c
        with torch.no_grad():
            env = c.run(self.initial_params())
        for bid, _ in self._obj_steps:
            bad = (~torch.isfinite(env[bid])).nonzero()
            if len(bad):
                b = c.graph.blocks[bid]
                where = cell_name(b.sheet, b.out[0] + int(bad[0][0]), b.out[1] + int(bad[0][1]))
                cause = c.bad_inputs.get(bid)
                why = (
                    f"{cause} where a number is needed"
                    if cause
                    else "#DIV/0! or #NUM! (division by zero or invalid math)"
                )
                raise FormulaError(f"{where}: evaluates to an error: {why}")
        raise FormulaError(f"{self.objective_ref}: the objective evaluates to an error")

    def describe(self) -> str:
        c = self._c
        lines = [f"objective {self.objective_ref} ({self.sense}), params {', '.join(self.param_refs)}"]
        for bid, dyn in c.compiled.items():
            b = c.graph.blocks[bid]
            r1, c1, r2, c2 = b.out
            kind = "trainable-dependent" if dyn else "constant (folded)"
            ops = sorted(
                set(
                    re.findall(r"name='([A-Z0-9.]+)'|op='(.+?)'", str(b.ast))
                    and [a or o for a, o in re.findall(r"name='([A-Z0-9.]+)'|op='(.+?)'", str(b.ast))]
                )
            )
            text = c.wb.sheets[b.sheet].formula((b.r0, b.c0))
            lines.append(
                f"  {b.name:<24} [{r2 - r1 + 1}x{c2 - c1 + 1}] {kind:<20} ops={','.join(ops)}  ={text}"
            )
        return "\n".join(lines)


def _pick_sheet(wb, sheet: str | None) -> str:
    def has(s):
        return wb.names.get((s, "XLMNIST_OBJECTIVE")) or wb.names.get((s, "SOLVER_OPT"))

    if sheet is not None:
        for s in wb.order:
            if s.lower() == sheet.lower():
                return s
        raise WorkbookError(f"{os.path.basename(wb.path)}: no sheet named {sheet!r}")
    if wb.active and has(wb.active):
        return wb.active
    for s in wb.order:
        if has(s):
            return s
    return wb.active or wb.order[0]


def read_settings(wb, sheet: str) -> dict:
    """Rows of the ``settings`` sheet (header sheet | setting | value) for ``sheet``."""
    st = next((wb.sheets[s] for s in wb.order if s.lower() == "settings"), None)
    if st is None:
        return {}
    header = None
    out = {}
    rows: dict[int, dict[int, object]] = {}
    for (r, c), v in st.values.items():
        rows.setdefault(r, {})[c] = v
    for r in sorted(rows):
        cells = rows[r]
        if header is None:
            low = {c: str(v).strip().lower() for c, v in cells.items() if isinstance(v, str)}
            if {"sheet", "setting", "value"} <= set(low.values()):
                header = {name: c for c, name in low.items()}
            continue
        if str(cells.get(header["sheet"], "")).strip().lower() != sheet.lower():
            continue
        key = cells.get(header["setting"])
        if not isinstance(key, str) or not key.strip():
            continue
        val = cells.get(header["value"])
        if isinstance(val, float) and val.is_integer():
            val = int(val)
        out[key.strip()] = "" if val is None else val
    return out


def compile_workbook(
    path, sheet=None, objective=None, params=None, dtype=torch.float64, device="cpu"
) -> CompiledModel:
    """Compile the objective of ``sheet`` (or of the flags) into a :class:`CompiledModel`."""
    wb = read_workbook(path)
    if objective is not None and sheet is None:
        sheet = parse_areas(wb, objective, wb.active or wb.order[0])[0][0]
    sheet = _pick_sheet(wb, sheet)
    name = os.path.basename(wb.path)
    obj_text = objective or wb.names.get((sheet, "XLMNIST_OBJECTIVE")) or wb.names.get((sheet, "SOLVER_OPT"))
    par_text = params or wb.names.get((sheet, "XLMNIST_PARAMS")) or wb.names.get((sheet, "SOLVER_ADJ"))
    if not obj_text or not par_text:
        raise WorkbookError(
            f"{name}: sheet {sheet!r} has no objective/trainable cells "
            "(no Solver settings or xlmnist_objective/xlmnist_params names; pass --objective and --params)"
        )
    obj = parse_areas(wb, obj_text, sheet)
    if len(obj) != 1 or obj[0][1:3] != obj[0][3:5]:
        raise WorkbookError(f"{obj_text}: the objective must be a single cell")
    typ = str(wb.names.get((sheet, "SOLVER_TYP"), "2")).strip()
    sense = SENSES.get(typ.split(".")[0], "min")
    target = None
    if sense == "value":
        try:
            target = float(wb.names.get((sheet, "SOLVER_VAL"), "0"))
        except ValueError:
            raise WorkbookError(f"{name}: sheet {sheet!r}: solver_val is not a number") from None
    comp = Compiler(wb, dtype=dtype, device=device)
    for area in parse_areas(wb, par_text, sheet):
        comp.add_param(*area)
    model = CompiledModel(comp, obj[0][:3], sense, target, read_settings(wb, sheet))
    if os.environ.get("XLMNIST_DEBUG") == "1":
        print(model.describe())
    return model
