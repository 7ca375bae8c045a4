"""The objective's trainable-dependent blocks lowered to one straight-line torch function.

compiler.py compiles each block to closures over ``[bR, bC, h, w]`` Values: general, but every formula
costs reshapes a hand-written model does not do. Here the blocks the objective needs are lowered, when
their formulas use the common patterns, to 2-D torch code as one would write it by hand: one ``mv`` /
``mm`` per SUMPRODUCT/MMULT block over data laid out once at compile time, ``torch.sigmoid`` for
``1/(1+EXP(-x))``, ``threshold`` (a ReLU) for ``IF(x<0,0,x)`` / ``MAX(0,x)``, masks of data-only conditions
precomputed, reductions without intermediate shapes. The result is the Python source of one function,
generated from this module's own op table (formula text is never evaluated) and compiled once. A block
it cannot lower runs its compiled closure inside the same function.

Values (:class:`N`) stand for a logical 2-D ``[r, c]`` broadcastable to the block (``r == -1``: the
data rows, any number of them) in one of three layouts: ``"0"`` (a 0-d tensor or a Python float),
``"col"`` (``[r]``, for ``c == 1``) or ``"2d"``.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from xlmnist.compile.areas import DATA, TRUSTED
from xlmnist.compile.functions import BOOL, EMPTY, NUM, TEXT
from xlmnist.compile.fuse import fuse_softmax
from xlmnist.formula import parser as P
from xlmnist.formula import patterns
from xlmnist.formula.graph import RefUse


class Unsupported(Exception):
    """The block uses something this lowering does not handle: it runs its compiled closure instead."""


class N:
    __slots__ = ("code", "r", "c", "lay", "k", "b", "win")

    def __init__(self, code=None, r=1, c=1, lay="2d", k=None, b=False, win=None):
        self.code, self.r, self.c, self.lay = code, r, c, lay
        self.k = k  # constant: 2-D float64 numpy array [r, c]
        self.b = b  # a bool tensor (a comparison)
        self.win = win  # a range: (area, h, w, rrel, crel)


def _bc(a: int, b: int) -> int:
    if a == 1:
        return b
    if b == 1 or a == b:
        return a
    raise Unsupported("shapes")


_CMP = {
    "=": "torch.eq",
    "<>": "torch.ne",
    "<": "torch.lt",
    "<=": "torch.le",
    ">": "torch.gt",
    ">=": "torch.ge",
}
_UNARY = {
    "EXP": "torch.exp",
    "LN": "torch.log",
    "LOG10": "torch.log10",
    "ABS": "torch.abs",
    "SQRT": "torch.sqrt",
    "TANH": "torch.tanh",
    "SIGN": "torch.sign",
}
_REDUCE = {"SUM": "sum", "AVERAGE": "mean", "MAX": "amax", "MIN": "amin"}


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
        """Code and layout of one source strip; 1-D (a row or a column) where asked and possible."""
        _, name, lay, sr, sc, (ra, rb), (ca, cb) = part
        full_r, full_c = (ra, rb) == (0, sr), (ca, cb) == (0, sc)
        if lay == "0":
            return name, "0"
        if lay == "col":
            code = name if full_r else self.L.tmp(f"{name}[{ra}:{rb}]")
            return (code, "col") if one_d else (self.L.tmp(f"{code}.unsqueeze(1)"), "2d")
        if full_r and full_c:
            if one_d and sc == 1:
                return self.L.tmp(f"{name}[:, 0]"), "col"
            if one_d and sr == 1:
                return self.L.tmp(f"{name}[0]"), "col"
            return name, "2d"
        rows = ":" if full_r else f"{ra}:{rb}"
        if one_d and cb - ca == 1:
            return self.L.tmp(f"{name}[{rows}, {ca}]"), "col"
        if one_d and rb - ra == 1 and sr != -1:
            return self.L.tmp(f"{name}[{ra}]" if full_c else f"{name}[{ra}, {ca}:{cb}]"), "col"
        return self.L.tmp(f"{name}[{rows}, {ca}:{cb}]"), "2d"

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
            cols = [self._var(p[2], True)[0] for p in self.parts]
            code = L.stacked_mv(cols) or L.tmp(f"torch.stack([{', '.join(cols)}], 1)")
            return N(code, self.fh, self.fw, "2d")
        cols = []
        for _, _, part in self.parts:
            if part[0] == "const":
                k = part[1]
                if self.fh == -1:
                    cols.append(f"{L.const(k)}.expand(M, -1)")
                else:
                    cols.append(L.const(np.broadcast_to(k, (self.fh, k.shape[1]))))
            else:
                cols.append(self._var(part, False)[0])
        return N(L.tmp(f"torch.cat([{', '.join(cols)}], 1)"), self.fh, self.fw, "2d")


class Lowerer:
    def __init__(self, comp):
        self.comp = comp
        self.dtype, self.device = comp.ctx.dtype, comp.ctx.device
        self.g = {"torch": torch, "DT": self.dtype, "RELU_T": _relu_t(self.dtype)}
        self.lines: list[str] = []
        self.n = 0
        self.lay: dict[int, tuple[str, int, int]] = {}  # block -> (layout, rows, cols) of its variable
        self.uses_m = False
        self.guards: list[str] = []  # conditions on the data rows alone (checkable once per dataset)
        self.consts: dict = {}
        self.defs: dict[str, str] = {}
        self.notes: list[str] = []  # every rewrite applied and every fallback (XLMNIST_DEBUG=3)

    # ---- emission -----------------------------------------------------------------------------------
    def tmp(self, expr: str) -> str:
        self.n += 1
        name = f"t{self.n}"
        self.lines.append(f"{name} = {expr}")
        self.defs[name] = expr
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

    def relu(self, g0: float) -> str:
        """A ReLU whose gradient at 0 is ``g0`` (1 or 0) as ``threshold(x, t, 0)``: ``t = 0`` for 0 and,
        for 1, ``-s``, ``s`` the smallest subnormal of the dtype: the same values as the sheet and its
        gradient, with torch's cheap ReLU backward (``clamp_min``'s backward costs three times as much)."""
        if g0 == 0:
            return "torch.nn.functional.threshold({}, 0.0, 0.0)"
        return "torch.nn.functional.threshold({}, RELU_T, 0.0)"  # RELU_T: per dtype (retarget)

    def resolve(self, name: str) -> str:
        """The variable behind plain aliases (``b7 = t13`` -> ``t13``)."""
        while re.fullmatch(r"[tb]\d+", self.defs.get(name, "")):
            name = self.defs[name]
        return name

    def origin(self, name: str) -> str:
        """The expression that defined a variable, through plain aliases."""
        return self.defs.get(self.resolve(name), "")

    def stacked_mv(self, cols: list[str]) -> str | None:
        """stack([mv(K, p[0]), mv(K, p[1]), ...], 1) over all rows of p -> mm(K, p.T) (nnet's hidden layer)."""
        ks, ps = set(), []
        for c in cols:
            m = re.fullmatch(r"torch\.mv\((k\d+), (t\d+)\)", self.origin(c))
            w = m and re.fullmatch(r"(p\d+)\[(\d+)\]", self.defs.get(m.group(2), ""))
            if not w:
                return None
            ks.add(m.group(1))
            ps.append((w.group(1), int(w.group(2))))
        p = ps[0][0]
        rows = self.comp.params[int(p[1:])]
        if len(ks) != 1 or ps != [(p, i) for i in range(len(cols))] or rows[3] - rows[1] + 1 != len(cols):
            return None
        self.note(f"stacked mv: {len(cols)} torch.mv of the rows of {p} -> one torch.mm")
        return self.tmp(f"torch.mm({ks.pop()}, {p}.T)")

    def source(self, i: int) -> tuple[str, str, int, int]:
        """Variable, layout and logical shape of a source id (param, the data rows, a block)."""
        comp = self.comp
        if i == DATA:
            self.uses_m = True
            return "D", "2d", -1, comp.data[4] - comp.data[2] + 1
        if i <= -2:
            _, r1, c1, r2, c2 = comp.params[-i - 2]
            return f"p{-i - 2}", "2d", r2 - r1 + 1, c2 - c1 + 1
        if i not in self.lay:
            raise Unsupported("source")
        lay, r, c = self.lay[i]
        return f"b{i}", lay, r, c

    # ---- values -------------------------------------------------------------------------------------
    def code(self, n: N, target: str, cond: bool = False) -> str:
        """``n`` as code in layout ``target`` (``"0"`` values broadcast as they are); ``cond``: as bools."""
        if n.k is not None:
            k = n.k
            if cond:
                k = k != 0
                return self.const(
                    k[:, 0] if target == "col" else k.reshape(()) if k.size == 1 else k, torch.bool
                )
            if k.size == 1:
                v = float(k.reshape(()))
                return repr(v) if math.isfinite(v) else self.const(k.reshape(()))
            if target == "col":
                return self.const(k[:, 0])
            return self.const(k)
        code = n.code
        if n.b and not cond:
            code = self.tmp(f"{code}.to(DT)")
        if n.lay == target or n.lay == "0":
            return code
        if n.lay == "col" and target == "2d":
            return self.tmp(f"{code}.unsqueeze(1)")
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

    def op(self, fmt: str, nodes: list[N], b: bool = False) -> N:
        r, c, lay = self.ew(nodes)
        codes = [
            self.code(n, lay, cond=(k == 0 and fmt.startswith("torch.where"))) for k, n in enumerate(nodes)
        ]
        return N(self.tmp(fmt.format(*codes)), r, c, lay, b=b)

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
        if T is RefUse:
            return self.ref(node, b)
        if T is P.Number or T is P.Bool:
            return N(k=np.array([[float(node.value)]]))
        ce = self.comp.expr(node, b)
        if ce.const is not None:
            return self.constant(ce.const)
        if T is P.Unary:
            x = self.expr(node.operand, b)
            return x if node.op == "+" else self.op("(-{})", [x])
        if T is P.Percent:
            return self.op("({} / 100.0)", [self.expr(node.operand, b)])
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
            return self.op("torch.sigmoid({})", [self.expr(x, b)])
        if op == "+" and _adjacent(node.left, node.right):  # A1+B1 of two columns: one sum (same bits)
            mark = len(self.lines)
            u, v = node.left, node.right
            both = RefUse(u.sheet, u.r1, u.c1, u.r2, v.c2, u.rrel, u.crel)
            try:
                return self.reduce("sum", self.ref(both, b), b)
            except Unsupported:
                del self.lines[mark:]
        left, right = self.expr(node.left, b), self.expr(node.right, b)
        if op in _CMP:
            return self.op(_CMP[op] + "({}, {})", [left, right], b=True)
        if op == "^" and right.k is not None and right.k.size == 1 and float(right.k.reshape(())) == 2.0:
            return self.op("torch.square({})", [left])
        if op in "+-*/^":
            sym = "**" if op == "^" else op
            return self.op("({} " + sym + " {})", [left, right])
        raise Unsupported(op)

    def call(self, node: P.Call, b) -> N:
        name, args = node.name, node.args
        if name in _UNARY and len(args) == 1:
            return self.op(_UNARY[name] + "({})", [self.expr(args[0], b)])
        if name == "IF" and len(args) == 3:
            return self.if_(node, b)
        if name in ("SUMPRODUCT", "MMULT") and len(args) == 2:
            return self.dot(name, [self.expr(a, b) for a in args], b)
        if name in _REDUCE:
            vals = [self.expr(a, b) for a in args]
            if len(vals) == 1 and vals[0].win is not None:
                return self.reduce(_REDUCE[name], vals[0], b)
            if name in ("MAX", "MIN") and len(vals) == 2:  # as the closures: a tie splits the gradient
                if any(v.k is not None and not np.isfinite(v.k).all() for v in vals):
                    raise Unsupported("MAX/MIN of an error")
                vals = [
                    N(code=self.const(v.k.reshape(())), lay="0") if v.k is not None and v.k.size == 1 else v
                    for v in vals
                ]
                return self.op("torch.maximum({}, {})" if name == "MAX" else "torch.minimum({}, {})", vals)
            if name == "SUM" and all(v.win is None for v in vals):
                return self.op("(" + " + ".join(["{}"] * len(vals)) + ")", vals)
        raise Unsupported(name)

    def if_(self, node: P.Call, b) -> N:
        relu = patterns.relu(node)
        if relu is not None:  # its own gradient at 0: IF(x<0,0,x) the x branch (1), IF(x<=0,0,x) 0
            x, g0 = relu
            return self.op(self.relu(g0), [self.expr(x, b)])
        cond, yes, no = node.args
        c = self.mask(self.expr(cond, b))
        y, n = self.expr(yes, b), self.expr(no, b)
        if y.k is not None and n.k is not None and y.k.size == 1 and n.k.size == 1:
            n = N(code=self.const(n.k.reshape(())), lay="0")  # torch.where of two floats is float32
        return self.op("torch.where({}, {}, {})", [c, y, n])

    # ---- ranges -------------------------------------------------------------------------------------
    def vec(self, n: N, b):
        """A range argument as ("rows", [R, k]), ("cols", [k, C]) or ("fixed", [k]) code, and k."""
        area, h, w, rrel, crel = n.win
        if rrel and not crel:
            if h != 1:
                raise Unsupported("moving window of several rows")
            return "rows", self.code(area.node(), "2d"), w
        if crel and not rrel:
            if w != 1:
                raise Unsupported("moving window of several columns")
            return "cols", self.code(area.node(), "2d"), h
        if rrel or crel:
            raise Unsupported("window moving both ways")
        if area.k is not None:
            return "fixed", self.const(area.k.reshape(-1)), h * w
        x = area.node(one_d=True)
        if x.lay == "2d":
            return "fixed", self.tmp(f"{x.code}.reshape(-1)"), h * w
        return "fixed", x.code, h * w

    def dot(self, name: str, vals: list[N], b) -> N:
        if b.array:
            a, m = vals
            if name != "MMULT" or a.win is not None or m.win is not None or a.c != m.r:
                raise Unsupported("array form")
            return N(self.tmp(f"torch.mm({self.code(a, '2d')}, {self.code(m, '2d')})"), a.r, m.c, "2d")
        if any(v.win is None for v in vals):
            raise Unsupported("scalar argument")
        if name == "MMULT" and (vals[0].win[1] != 1 or vals[1].win[2] != 1):
            raise Unsupported("MMULT of a range per cell")
        if name == "SUMPRODUCT" and vals[0].win[1:3] != vals[1].win[1:3]:
            raise Unsupported("different sizes")
        (ka, a, na), (kb, m, nb) = self.vec(vals[0], b), self.vec(vals[1], b)
        if na != nb:
            raise Unsupported("different sizes")
        R, C = vals[0].r if ka == "rows" else vals[1].r, vals[0].c if ka == "cols" else vals[1].c
        if (ka, kb) == ("rows", "fixed"):
            return N(self.tmp(f"torch.mv({a}, {m})"), R, 1, "col")
        if (ka, kb) == ("fixed", "rows"):
            return N(self.tmp(f"torch.mv({m}, {a})"), R, 1, "col")
        if (ka, kb) == ("rows", "cols"):
            return N(self.tmp(f"torch.mm({a}, {m})"), R, C, "2d")
        if (ka, kb) == ("rows", "rows") and name == "SUMPRODUCT":
            return N(self.tmp(f"({a} * {m}).sum(1)"), R, 1, "col")
        if (ka, kb) == ("fixed", "fixed"):
            return N(self.tmp(f"torch.dot({a}, {m})"), 1, 1, "0")
        raise Unsupported(f"{ka} x {kb}")

    def reduce(self, fn: str, n: N, b) -> N:
        area, h, w, rrel, crel = n.win
        if not rrel and not crel:
            return N(self.tmp(f"{area.node(one_d=True).code}.{fn}()"), 1, 1, "0")
        if rrel and not crel and h == 1:
            x = self.code(area.node(), "2d")
            if b.C == 1:
                return N(self.tmp(f"{x}.{fn}(1)"), n.r, 1, "col")
            return N(self.tmp(f"{x}.{fn}(1, keepdim=True)"), n.r, 1, "2d")
        raise Unsupported("reduction window")

    # ---- blocks -------------------------------------------------------------------------------------
    def block(self, b) -> None:
        comp = self.comp
        r1, c1, r2, c2 = b.out
        H, W = (-1 if b.id in comp.aligned else r2 - r1 + 1), c2 - c1 + 1
        mark = len(self.lines)
        try:
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
                code = code if (n.r, n.c) == (H, W) else self.tmp(f"{code}.expand({H}, {W})")
                n = N(code, H, W, "2d")
            self.lines.append(f"b{b.id} = {n.code}")
            self.defs[f"b{b.id}"] = n.code
            self.lay[b.id] = (n.lay, H, W)
            return
        except Unsupported as exc:
            del self.lines[mark:]
            reason = str(exc)
        self.fallback[b.id] = reason
        self.note(f"fallback: {b.name} runs its compiled closure ({reason})")
        self.lines.append(f"b{b.id} = env[{b.id}] = S{b.id}(env)")
        self.lay[b.id] = ("2d", H, W)

    def program(self, steps, obj):
        """``steps``: [(block id, closure)] in dependency order; ``obj``: (block id, row, col), or a list of
        block ids: then the function returns ``{block id: its 2-D tensor}`` (what ``env`` holds)."""
        comp = self.comp
        self.fallback: dict[int, str] = {}  # block -> why it runs its closure
        for bid, e in steps:
            self.g[f"S{bid}"] = e
            self.block(comp.graph.blocks[bid])
        fuse_softmax(self)
        need = set()  # blocks a compiled closure reads from env
        for bid in self.fallback:
            need |= comp.reads.get(bid, set())
        body = []
        for line in self.lines:
            body.append(line)
            head = line.split(" = ")[0]
            if head.startswith("b") and int(head[1:]) in need and int(head[1:]) not in self.fallback:
                bid = int(head[1:])
                lay = self.lay[bid][0]
                v = {"2d": head, "col": f"{head}.unsqueeze(1)", "0": f"{head}.reshape(1, 1)"}[lay]
                body.append(f"env[{bid}] = {v}")
        if isinstance(obj, list):
            two_d = {"2d": "b{0}", "col": "b{0}.unsqueeze(1)", "0": "b{0}.reshape(1, 1)"}
            items = [
                f"{bid}: env[{bid}]"
                if bid in self.fallback
                else f"{bid}: " + two_d[self.lay[bid][0]].format(bid)
                for bid in obj
            ]
            ret = "{" + ", ".join(items) + "}"
        else:
            bid, i, j = obj
            lay = self.lay[bid][0]
            ret = {"2d": f"b{bid}[{i}, {j}]", "col": f"b{bid}[{i}]", "0": f"b{bid}"}[lay]
        body = _dead_code(body, ret)
        head = [f"p{k} = env[{-(k + 2)}]" for k in range(len(comp.params))]
        if comp.data is not None:
            head.append(f"D = env[{DATA}]")
            head.append("M = D.shape[0]")
        if any("TR or" in line for line in body):
            head.append(f"TR = env.get({TRUSTED!r}, False)")
        src = "def program(env):\n" + "".join(f"    {x}\n" for x in head + body + [f"return {ret}"])
        if self.guards:  # the same conditions over a whole dataset, checked once by the training loop
            src += "\n\ndef check(D):\n    return " + " and ".join(sorted(set(self.guards))) + "\n"
        return _make(src, self.g, sorted(self.fallback), list(self.notes))


def _make(src: str, g: dict, fallback: list[int], notes: list[str]):
    ns = dict(g)
    exec(compile(src, "<xlmnist objective>", "exec"), ns)  # our own generated code, not formula text
    fn = ns["program"]
    fn.source, fn.namespace, fn.fallback, fn.notes = src, g, fallback, notes
    fn.check = ns.get("check")
    return fn


def retarget(prog, dtype, device, steps):
    """The same program (the same source) for another dtype/device: its constants converted, ``steps``
    ([(block id, closure)] of the target model) for the blocks that run their closures."""
    g = {}
    for k, v in prog.namespace.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
        g[k] = v
    g["DT"], g["RELU_T"] = dtype, _relu_t(dtype)
    for bid, e in steps:
        if f"S{bid}" in g:
            g[f"S{bid}"] = e
    return _make(prog.source, g, prog.fallback, prog.notes)


def _relu_t(dtype) -> float:
    """``-s``, ``s`` the smallest subnormal of ``dtype``: ``threshold(x, -s, 0)`` keeps x = 0 (gradient 1)."""
    return -float(torch.nextafter(torch.zeros((), dtype=dtype), torch.ones((), dtype=dtype)))


def _adjacent(u, v) -> bool:
    return (
        type(u) is RefUse
        and type(v) is RefUse
        and (u.sheet, u.r1, u.r2, u.rrel, u.crel) == (v.sheet, v.r1, v.r2, v.rrel, v.crel)
        and u.r1 == u.r2
        and u.c1 == u.c2
        and v.c1 == v.c2 == u.c1 + 1
    )


def _dead_code(lines: list[str], ret: str) -> list[str]:
    """Drop assignments to temporaries and block variables that nothing later reads."""
    used = set(re.findall(r"\b[tb]\d+\b", ret))
    keep = []
    for line in reversed(lines):
        head, _, rhs = line.partition(" = ")
        if re.fullmatch(r"[tb]\d+", head) and head not in used and "env" not in rhs:
            continue
        used.update(re.findall(r"\b[tb]\d+\b", rhs))
        keep.append(line)
    return keep[::-1]
