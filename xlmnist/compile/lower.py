"""The objective's trainable-dependent blocks lowered to one straight-line torch program.

compiler.py compiles each block to closures over ``[bR, bC, h, w]`` Values: general, but every formula
costs reshapes a hand-written model does not do. Here the blocks the objective needs are lowered, when
their formulas use the common patterns (:mod:`xlmnist.formula.patterns`), to 2-D torch ops as one would
write them by hand: one ``mv`` / ``mm`` per SUMPRODUCT/MMULT block over data laid out once at compile
time, ``torch.sigmoid`` for ``1/(1+EXP(-x))``, ``threshold`` (a ReLU) for ``IF(x<0,0,x)``, masks of
data-only conditions precomputed, reductions without intermediate shapes. The lowering builds
:mod:`xlmnist.compile.ir` ops (formula text is never evaluated); :mod:`xlmnist.compile.program` applies
the rewrites and renders the program once. A block it cannot lower runs its compiled closure inside the
same program. Range arguments (dot products, reductions) are lowered in :mod:`xlmnist.compile.lower_ranges`,
2-D windows in :mod:`xlmnist.compile.conv`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from xlmnist.compile import conv, lower_ranges, scan_lower
from xlmnist.compile.areas import DATA
from xlmnist.compile.functions import BOOL, EMPTY, NUM, TEXT
from xlmnist.compile.ir import Op, Stmt
from xlmnist.compile.scan_loop import Hole
from xlmnist.compile.sources import Area, N, Unsupported, relu_t
from xlmnist.formula import parser as P
from xlmnist.formula import patterns
from xlmnist.formula.graph import RefUse


def _bc(a: int, b: int) -> int:
    if a == 1:
        return b
    if b == 1 or a == b:
        return a
    raise Unsupported("shapes")


_CMP = {"=": "eq", "<>": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}
_ARITH = {"+": "add", "-": "sub", "*": "mul", "/": "div", "^": "pow"}
_UNARY = {
    "EXP": "exp",
    "LN": "log",
    "LOG10": "log10",
    "ABS": "abs",
    "SQRT": "sqrt",
    "TANH": "tanh",
    "SIGN": "sign",
}
_REDUCE = {"SUM": "sum", "AVERAGE": "mean", "MAX": "amax", "MIN": "amin"}


class Lowerer:
    def __init__(self, comp):
        self.comp = comp
        self.dtype, self.device = comp.ctx.dtype, comp.ctx.device
        self.g = {"torch": torch, "DT": self.dtype, "RELU_T": relu_t(self.dtype)}
        self.stmts: list[Stmt] = []
        self.n = 0
        self.lay: dict[int, tuple[str, int, int]] = {}  # block -> (layout, rows, cols) of its variable
        self.guards: list[Op] = []  # conditions on the data rows alone (checkable once per dataset)
        self.consts: dict = {}
        self.defs: dict[str, object] = {}  # variable -> its Op (or the variable it aliases)
        self.fallback: dict[int, str] = {}  # block -> why it runs its closure
        self.notes: list[str] = []  # every rewrite applied and every fallback (XLMNIST_DEBUG=3)
        self.scan_vals: dict[int, tuple] = {}  # a lowered recurrence's steps -> (operand, layout)
        self.extra: list[str] = []  # functions the program calls (a recurrence's loop), their source

    # ---- emission -----------------------------------------------------------------------------------
    def tmp(self, op: Op) -> str:
        self.n += 1
        name = f"t{self.n}"
        self.stmts.append(Stmt((name,), op))
        self.defs[name] = op
        return name

    def note(self, text: str) -> None:
        self.notes.append(text)

    def const(self, a, dtype=None) -> str:
        a = np.ascontiguousarray(a)
        key = (a.shape, str(dtype), a.tobytes())
        if key in self.consts:  # one tensor per distinct constant (lets equal data be recognised)
            return self.consts[key]
        t = torch.tensor(a, dtype=dtype or self.dtype, device=self.device)
        self.n += 1
        name = self.consts[key] = f"k{self.n}"
        self.g[name] = t
        return name

    def relu(self, g0: float):
        """A ReLU whose gradient at 0 is ``g0`` (1 or 0) as ``threshold(x, t, 0)``: ``t = 0`` for 0 and,
        for 1, ``-s``, ``s`` the smallest subnormal of the dtype: the same values as the sheet and its
        gradient, with torch's cheap ReLU backward (``clamp_min``'s backward costs three times as much)."""
        if g0 == 0:
            return 0.0
        return "RELU_T"  # per dtype (program.retarget)

    def resolve(self, name: str) -> str:
        """The variable behind plain aliases (``b7 = t13`` -> ``t13``)."""
        while isinstance(self.defs.get(name), str):
            name = self.defs[name]
        return name

    def origin(self, name: str):
        """The Op that defined a variable, through plain aliases (None for inputs and constants)."""
        return self.defs.get(self.resolve(name))

    def source(self, i: int) -> tuple[str, str, int, int]:
        """Variable, layout and logical shape of a source id (param, the data rows, a block)."""
        comp = self.comp
        if i == DATA:
            return "D", "2d", -1, comp.data[4] - comp.data[2] + 1
        if i <= -2:
            _, r1, c1, r2, c2 = comp.params[-i - 2]
            return f"p{-i - 2}", "2d", r2 - r1 + 1, c2 - c1 + 1
        if i not in self.lay:
            raise Unsupported("source")
        lay, r, c = self.lay[i]
        return f"b{i}", lay, r, c

    # ---- values -------------------------------------------------------------------------------------
    def code(self, n: N, target: str, cond: bool = False):
        """``n`` as an operand in layout ``target`` (``"0"`` values broadcast as they are); ``cond``: as bools."""
        if n.k is not None:
            k = n.k
            if cond:
                k = k != 0
                return self.const(
                    k[:, 0] if target == "col" else k.reshape(()) if k.size == 1 else k, torch.bool
                )
            if k.size == 1:
                v = float(k.reshape(()))
                return v if math.isfinite(v) else self.const(k.reshape(()))
            if target == "col":
                return self.const(k[:, 0])
            return self.const(k)
        code = n.code
        if n.b and not cond:
            code = self.tmp(Op("to_dt", code))
        if n.lay == target or n.lay == "0":
            return code
        if n.lay == "col" and target == "2d":
            return self.tmp(Op("unsqueeze", code))
        raise Unsupported("layout")

    def ew(self, nodes: list[N]) -> tuple[int, int, str]:
        r = c = 1
        for n in nodes:
            if n.win is not None:
                raise Unsupported("range in an elementwise operation")
            r, c = _bc(r, n.r), _bc(c, n.c)
        dyn2d = any(n.k is None and n.lay == "2d" for n in nodes)
        lay = "2d" if (c > 1 or dyn2d) else ("col" if r != 1 else "0")
        return r, c, lay

    def op(self, kind: str, nodes: list[N], b: bool = False, extra=()) -> N:
        r, c, lay = self.ew(nodes)
        codes = [self.code(n, lay, cond=(k == 0 and kind == "where")) for k, n in enumerate(nodes)]
        return N(self.tmp(Op(kind, *codes, *extra)), r, c, lay, b=b)

    def mask(self, n: N) -> N:
        """A condition as a bool value: comparisons as they are, constants precomputed."""
        if n.b:
            return n
        if n.k is not None:
            if np.isnan(n.k).any():
                raise Unsupported("error in a condition")
            return N(r=n.r, c=n.c, k=(n.k != 0).astype(np.float64), b=True)
        raise Unsupported("numeric condition")

    # ---- expressions --------------------------------------------------------------------------------
    def expr(self, node, b) -> N:
        T = type(node)
        if T is Hole:  # a part lowered already (a running recurrence's loop, xlmnist.compile.scan_lower)
            return node.n() if callable(node.n) else node.n
        if T is RefUse:
            return self.ref(node, b)
        if T is P.Number or T is P.Bool:
            return N(k=np.array([[float(node.value)]]))
        ce = self.comp.expr(node, b)
        if ce.const is not None:
            return self.constant(ce.const)
        if T is P.Unary:
            x = self.expr(node.operand, b)
            return x if node.op == "+" else self.op("neg", [x])
        if T is P.Percent:
            return self.op("div", [self.expr(node.operand, b), N(k=np.array([[100.0]]))])
        if T is P.Binary:
            return self.binary(node, b)
        if T is P.Call:
            return self.call(node, b)
        raise Unsupported(T.__name__)

    def constant(self, v) -> N:
        if v.s is not None and v.kind is not None and (v.kind == TEXT).any():
            raise Unsupported("text constant")
        t = v.t
        if t.shape[2] != 1 or t.shape[3] != 1:
            raise Unsupported("range constant")
        k = t[:, :, 0, 0].detach().cpu().numpy().astype(np.float64)
        return N(r=k.shape[0], c=k.shape[1], k=k)

    def ref(self, use: RefUse, b) -> N:
        comp = self.comp
        fp = use.footprint(b.R, b.C)
        e, kind, strs = comp.area(use.sheet, *fp, owner=b.id)
        if strs is not None:
            raise Unsupported("text")
        fh, fw = fp[2] - fp[0] + 1, fp[3] - fp[1] + 1
        area = Area(self, e, fh, fw)
        h, w = use.r2 - use.r1 + 1, use.c2 - use.c1 + 1
        if h == 1 and w == 1:
            if kind is not None and not np.isin(kind, (NUM, BOOL, EMPTY)).all():
                raise Unsupported("kinds")
            return area.node(one_d=b.C == 1 and not b.array)
        if kind is not None:
            raise Unsupported("a range with empty or text cells")
        if b.array:
            return area.node()
        r = (-1 if area.fh == -1 else b.R) if use.rrel else 1
        return N(r=r, c=b.C if use.crel else 1, win=(area, h, w, use.rrel, use.crel))

    def binary(self, node: P.Binary, b) -> N:
        op = node.op
        x = patterns.sigmoid_arg(node)
        if x is not None:
            return self.op("sigmoid", [self.expr(x, b)])
        if op == "+" and _adjacent(node.left, node.right):  # A1+B1 of two columns: one sum (same bits)
            mark = len(self.stmts)
            u, v = node.left, node.right
            both = RefUse(u.sheet, u.r1, u.c1, u.r2, v.c2, u.rrel, u.crel)
            try:
                return lower_ranges.reduce(self, "sum", self.ref(both, b), b)
            except Unsupported:
                del self.stmts[mark:]
        left, right = self.expr(node.left, b), self.expr(node.right, b)
        if op in _CMP:
            return self.op(_CMP[op], [left, right], b=True)
        if op == "^" and right.k is not None and right.k.size == 1 and float(right.k.reshape(())) == 2.0:
            return self.op("square", [left])
        if op in _ARITH:
            return self.op(_ARITH[op], [left, right])
        raise Unsupported(op)

    def call(self, node: P.Call, b) -> N:
        name, args = node.name, node.args
        if name in _UNARY and len(args) == 1:
            return self.op(_UNARY[name], [self.expr(args[0], b)])
        if name == "IF" and len(args) == 3:
            return self.if_(node, b)
        if name in ("SUMPRODUCT", "SUM") and (n := conv.conv_call(self, node, b)) is not None:
            return n
        if name in ("SUMPRODUCT", "MMULT") and len(args) == 2:
            return lower_ranges.dot(self, name, [self.expr(a, b) for a in args], b)
        if name in _REDUCE and len(args) == 1 and type(args[0]) is P.Call and args[0].name == "_OFFSET":
            n = conv.strided_pool(self, _REDUCE[name], args[0], b)  # pooling with a stride, by OFFSET
            if n is not None:
                return n
        if name in _REDUCE:
            vals = [self.expr(a, b) for a in args]
            if len(vals) == 1 and vals[0].win is not None:
                return lower_ranges.reduce(self, _REDUCE[name], vals[0], b)
            if name in ("MAX", "MIN") and len(vals) == 2:  # as the closures: a tie splits the gradient
                if any(v.k is not None and not np.isfinite(v.k).all() for v in vals):
                    raise Unsupported("MAX/MIN of an error")
                vals = [
                    N(code=self.const(v.k.reshape(())), lay="0") if v.k is not None and v.k.size == 1 else v
                    for v in vals
                ]
                return self.op("maximum" if name == "MAX" else "minimum", vals)
            if name == "SUM" and all(v.win is None for v in vals):
                return self.op("add_n", vals)
        raise Unsupported(name)

    def if_(self, node: P.Call, b) -> N:
        relu = patterns.relu(node)
        if relu is not None:  # its own gradient at 0: IF(x<0,0,x) the x branch (1), IF(x<=0,0,x) 0
            x, g0 = relu
            return self.op("relu", [self.expr(x, b)], extra=(self.relu(g0),))
        cond, yes, no = node.args
        c = self.mask(self.expr(cond, b))
        y, n = self.expr(yes, b), self.expr(no, b)
        if y.k is not None and n.k is not None and y.k.size == 1 and n.k.size == 1:
            n = N(code=self.const(n.k.reshape(())), lay="0")  # torch.where of two floats is float32
        return self.op("where", [c, y, n])

    # ---- blocks -------------------------------------------------------------------------------------
    def block(self, b) -> None:
        comp = self.comp
        r1, c1, r2, c2 = b.out
        H, W = (-1 if b.id in comp.aligned else r2 - r1 + 1), c2 - c1 + 1
        mark = len(self.stmts)
        heads = comp.__dict__.get("scan_heads", {})
        if b.id in heads:  # a recurrence compiled as one loop (xlmnist.compile.scan): the loop, lowered
            try:
                scan_lower.lower(self, heads[b.id])
            except Unsupported as exc:
                del self.stmts[mark:]
                sc = heads[b.id]
                reason = f"the running recurrence {sc.where}, one loop over its rows: {exc}"
                self.fallback[b.id] = reason
                self.note(f"fallback: {b.name} runs its compiled closure ({reason})")
                self.stmts.append(Stmt((f"b{b.id}", b.id), Op("call", f"S{b.id}", "env")))
                self.lay[b.id] = ("2d", H, W)
                return
        if b.id in self.scan_vals:  # a row of a lowered loop (the loop's result) or of a closure's (env)
            val, lay = self.scan_vals[b.id]
            self.stmts.append(Stmt((f"b{b.id}",), val))
            self.defs[f"b{b.id}"] = val
            self.lay[b.id] = (lay, H, W)
            return
        if b.id in comp.__dict__.get("scan_alias", {}):
            self.stmts.append(Stmt((f"b{b.id}",), Op("env", b.id)))
            self.lay[b.id] = ("2d", H, W)
            return
        try:
            if b.step:  # one step of a running recurrence (xlmnist.formula.cycles): its closure
                raise Unsupported("a step of a running recurrence")
            n = self.expr(b.ast, b)
            if n.win is not None:
                raise Unsupported("range result")
            r, c = _bc(n.r, H), _bc(n.c, W)
            if (r, c) != (H, W):
                raise Unsupported("result shape")
            if n.k is not None or n.b or (n.r, n.c) != (H, W):
                if H == -1:
                    raise Unsupported("broadcast over the data rows")
                code = self.code(n, "2d")
                code = code if (n.r, n.c) == (H, W) else self.tmp(Op("expand", code, H, W))
                n = N(code, H, W, "2d")
            self.stmts.append(Stmt((f"b{b.id}",), n.code))
            self.defs[f"b{b.id}"] = n.code
            self.lay[b.id] = (n.lay, H, W)
            return
        except Unsupported as exc:
            del self.stmts[mark:]
            reason = str(exc)
        self.fallback[b.id] = reason
        self.note(f"fallback: {b.name} runs its compiled closure ({reason})")
        self.stmts.append(Stmt((f"b{b.id}", b.id), Op("call", f"S{b.id}", "env")))
        self.lay[b.id] = ("2d", H, W)


def _adjacent(u, v) -> bool:
    return (
        type(u) is RefUse
        and type(v) is RefUse
        and (u.sheet, u.r1, u.r2, u.rrel, u.crel) == (v.sheet, v.r1, v.r2, v.rrel, v.crel)
        and u.r1 == u.r2
        and u.c1 == u.c2
        and v.c1 == v.c2 == u.c1 + 1
    )
