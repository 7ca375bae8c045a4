"""A running recurrence's loop (:mod:`xlmnist.compile.scan`) in the lowered program: one generated
function ``scanN`` with a ``for`` loop over the rows, called once by the objective program.

Each member's formula is lowered once (:class:`xlmnist.compile.lower.Lowerer`, the same rewrites as a
copied block): the parts that do not read the recurrence for all rows at once, before the loop (a
per-row part becomes a list of its rows, ``unbind``); the rest as the loop's body, where a reference to
the recurrence reads a list of the rows computed so far (``V0[r - 3]``), which starts with the cells
above the recurrence (its initial values). The loop runs the members of a row in dependency order and
appends each result to its member's list; the step blocks are then items of those lists.

Supported: references to the recurrence's cells that read one row and one column per cell (across
members side by side: ``torch.cat``); members may start and end on different rows (one loop per stretch
of rows with the same members; cells read above or below a member come from the frame). Anything else raises :class:`Unsupported` and the loop runs as
its compiled closure, inside the same program.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from xlmnist.compile import cellwise, lower_ranges
from xlmnist.compile.areas import _Expr
from xlmnist.compile.functions import BOOL, EMPTY, NUM
from xlmnist.compile.ir import Op, Stmt, names, operand, render_op, render_stmt
from xlmnist.compile.scan_loop import Hole
from xlmnist.compile.sources import Area, N, Unsupported
from xlmnist.formula import parser as P
from xlmnist.formula.graph import RefUse

if TYPE_CHECKING:
    from xlmnist.compile.lower import Lowerer


def _never(env):  # the closure of a part that only the lowering uses (never run)
    raise AssertionError("a lowered recurrence's part has no closure")


_LOWERED = _Expr(fn=_never)


def _at(lst: str, base: int) -> str:
    """``lst[r - base]``: the item of row ``r`` of a list that starts at row ``base``."""
    operand(lst)
    base = int(base)
    return f"{lst}[r - {base}]" if base >= 0 else f"{lst}[r + {-base}]"


class _Loop:
    def __init__(self, L: Lowerer, sc):
        self.L, self.sc = L, sc
        self.ms = sc.members
        self.pre = [0] * len(self.ms)  # rows above each member its list starts with (the frame's cells)
        self.post = [0] * len(self.ms)  # rows below it its list ends with (read after it ends)
        self.prologue: list[str] = []
        self.reads: list[list[str]] = [[] for _ in self.ms]  # per member: the per-row lines before its body
        self.frame: str | None = None
        self.n = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    # ---- the frame around the recurrence ---------------------------------------------------------
    def frame_rows(self, a: int, b: int, x) -> None:
        """Rows a..b of member x's columns, read from the frame: numbers or empty cells, no member's."""
        sc = self.sc
        fr, fc = sc.fr, sc.fc
        kinds = sc.fkind[a - fr : b - fr + 1, x.c1 - fc : x.c2 - fc + 1]
        if kinds.shape != (b - a + 1, x.C) or not np.isin(kinds, (NUM, BOOL, EMPTY)).all():
            raise Unsupported("text or errors beside the recurrence")
        if any(sc.member_at(r, c) is not None for r in range(a, b + 1) for c in range(x.c1, x.c2 + 1)):
            raise Unsupported("two members in one column")

    def frame_items(self, a: int, b: int, x) -> list[str]:
        """Rows a..b of member x's columns as the frame's items (0-d, or [1, C])."""
        f, sc = self.frame_code(), self.sc
        items = []
        for r in range(a, b + 1):
            rr, cc = r - sc.fr, x.c1 - sc.fc
            idx = (rr, cc) if x.C == 1 else (slice(rr, rr + 1), slice(cc, cc + x.C))
            items.append(render_op(Op("index", f, idx)))
        return items

    def frame_code(self) -> str:
        if self.frame is None:
            sc = self.sc
            fh, fw = sc.fkind.shape
            n = Area(self.L, sc.base_e, fh, fw).node()
            self.frame = self.L.code(n, "2d") if n.k is None else self.L.const(n.k)
        return self.frame

    # ---- a formula: parts before the loop, the rest in it -----------------------------------------
    def node(self, node, m):
        sc = self.sc
        if not sc.reads_state(node, m):
            return Hole(self.L.comp.expr(node, m.block), ref=type(node) is RefUse, n=self.hoist(node, m))
        T = type(node)
        if T is RefUse:
            return Hole(_LOWERED, ref=True, n=self.state(node, m))
        if T is P.Call:
            if node.name in cellwise.RANDOM:
                raise Unsupported("RAND() over its own cells")
            args = tuple(self.node(a, m) for a in node.args)
            if node.name == "SUMPRODUCT" and len(args) in (1, 2):  # over fixed ranges and this row's cells
                return Hole(_LOWERED, n=lambda: self.sumproduct(args, m))
            return P.Call(node.name, args)
        if T in P.COMPOSITE:
            return P.map_operands(node, lambda a: self.node(a, m))
        raise Unsupported(f"{T.__name__} over its own cells")

    def hoist(self, node, m) -> N:
        """A part that does not read the recurrence, lowered for all of the member's rows before the loop;
        inside it, its row (or the whole part where it is the same for every row)."""
        L = self.L
        n = L.expr(node, m.block)
        if n.r == -1:
            raise Unsupported("the data rows")
        if n.win is not None:
            if n.r != 1:
                raise Unsupported("a range moving with the rows of the recurrence")
            return n
        if n.r == 1 or m.R == 1:
            if n.k is None and n.lay == "col":  # one cell as [1]: a 0-d value in the loop
                return N(L.tmp(Op("index", n.code, 0)), 1, 1, "0", b=n.b)
            if n.k is None and n.lay == "2d" and n.c == 1:
                return N(L.tmp(Op("index", n.code, (0, 0))), 1, 1, "0", b=n.b)
            return n
        if n.k is not None:
            src = L.const(n.k[:, 0] if n.c == 1 else n.k)
        else:
            src = L.code(n, "col" if n.c == 1 else "2d")
        lst = self.name("H")
        how = "unbind(0)" if n.c == 1 else "split(1, 0)"
        self.prologue.append(f"{lst} = {operand(src)}.{how}")
        var = self.name("h")
        self.reads[m.i].append(f"{var} = {_at(lst, m.r1)}")
        return N(var, 1, n.c, "0" if n.c == 1 else "2d", b=n.b)

    def state(self, u: RefUse, m) -> N:
        """A reference to the recurrence's cells, at row ``r`` of the loop: items of the members' lists
        (side by side where its columns span several members)."""
        if u.r2 != u.r1 or u.c2 != u.c1:
            raise Unsupported("a range over the recurrence's cells")
        c1, c2 = u.c1, u.c1 + (m.C - 1 if u.crel else 0)
        d = u.r1 - m.r1  # row r of m reads row r + d
        top = m.r1 + d
        runs, c = [], c1
        while c <= c2:
            xs = [x for x in self.ms if x.c1 <= c <= x.c2]
            if len(xs) != 1:
                raise Unsupported(
                    "a reference to cells beside the recurrence's columns"
                    if not xs
                    else "two members in one column"
                )
            x = xs[0]
            e = min(c2, x.c2)
            if top < x.r1:  # rows above x: the frame's cells, at the start of x's list
                self.frame_rows(top, x.r1 - 1, x)
                self.pre[x.i] = max(self.pre[x.i], x.r1 - top)
            if m.r2 + d > x.r2:  # rows below x (read after it ends): the frame's cells, after its rows
                self.frame_rows(x.r2 + 1, m.r2 + d, x)
                self.post[x.i] = max(self.post[x.i], m.r2 + d - x.r2)
            runs.append((x.i, c - x.c1, e - x.c1 + 1))
            c = e + 1
        var = self.name("s")
        self.reads[m.i].append((var, d, runs))  # rendered once every list's start (pre) is known
        if c2 > c1:
            return N(var, 1, m.C, "2d")
        return N(var, 1, 1, "0")

    def sumproduct(self, args, m) -> N:
        """``SUMPRODUCT(a[, b])`` in the loop, its arguments elementwise expressions of fixed ranges (one
        size) and the row's single values (``(B4*$X$2:$X$6+C4-$Y$2:$Y$6)*$X$2:$X$6``): 1-D tensors over
        the range's cells, then ``sum`` / ``dot``."""
        L = self.L
        vals = [self.vec(a, m) for a in args]
        sizes = {k for _, k in vals if k is not None}
        if len(sizes) != 1 or any(k is None for _, k in vals):
            raise Unsupported("SUMPRODUCT of a single value")
        if len(vals) == 1:
            return N(L.tmp(Op("reduce", vals[0][0], fn="sum")), 1, 1, "0")
        return N(L.tmp(Op("dot", vals[0][0], vals[1][0])), 1, 1, "0")

    def vec(self, node, m):
        """(code, cells): a 1-D tensor over a fixed range's cells (``cells`` its size), or a single value
        (``cells`` None)."""
        L = self.L
        T = type(node)
        if T is P.Number:
            return float(node.value), None
        if T is Hole:
            n = node.n() if callable(node.n) else node.n
            if n.win is not None:
                kind, code, k = lower_ranges.vec(L, n, m.block)
                if kind != "fixed":
                    raise Unsupported("a moving range")
                return code, k
            if n.k is not None:
                if n.k.size != 1 or not np.isfinite(n.k).all():
                    raise Unsupported("a constant range")
                return float(n.k.reshape(())), None
            if n.lay != "0" or n.b:
                raise Unsupported("not a single value")
            return n.code, None
        if T is P.Binary and node.op in "+-*/^":
            (a, ka), (b, kb) = self.vec(node.left, m), self.vec(node.right, m)
            if ka is not None and kb is not None and ka != kb:
                raise Unsupported("ranges of different sizes")
            if isinstance(a, float) and isinstance(b, float):
                raise Unsupported("a constant")
            kind = {"+": "add", "-": "sub", "*": "mul", "/": "div", "^": "pow"}[node.op]
            if kind == "pow" and b == 2.0:
                return L.tmp(Op("square", a)), ka
            return L.tmp(Op(kind, a, b)), ka if ka is not None else kb
        if T is P.Unary and node.op in "+-":
            a, k = self.vec(node.operand, m)
            return (a if node.op == "+" else L.tmp(Op("neg", a))), k
        n = L.expr(node, m.block)
        if n.win is not None or n.k is not None or n.lay != "0" or n.b:
            raise Unsupported("SUMPRODUCT argument")
        return n.code, None

    # ---- the whole loop ------------------------------------------------------------------------------
    def build(self) -> None:
        L, sc = self.L, self.sc
        outer = L.stmts
        bodies, results = [], []
        for m in self.ms:
            tree = self.node(m.block.ast, m)
            body: list[Stmt] = []
            L.stmts = body
            try:
                n = L.expr(tree, m.block)
                res = self.result(n, m)
            finally:
                L.stmts = outer
            bodies.append(body)
            results.append(res)
        fname = f"scan{sc.head}"
        lines = list(self.prologue)
        for x in self.ms:
            items = self.frame_items(x.r1 - self.pre[x.i], x.r1 - 1, x) if self.pre[x.i] else []
            lines.append(f"V{x.i} = [{', '.join(items)}]")
        edges = sorted({m.r1 for m in self.ms} | {m.r2 + 1 for m in self.ms})
        for a, b in zip(edges, edges[1:]):  # stretches of rows with the same members
            active = [m for m in self.ms if m.r1 <= a and b - 1 <= m.r2]
            if active:
                lines.append(f"for r in range({int(a)}, {int(b)}):")
            for m in active:
                for item in self.reads[m.i]:
                    lines.append("    " + (item if isinstance(item, str) else self.read_line(*item)))
                lines += ["    " + render_stmt(s) for s in bodies[m.i]]
                lines.append(f"    V{m.i}.append({operand(results[m.i])})")
            for x in self.ms:
                if x.r2 == b - 1 and self.post[x.i]:  # x has ended: the cells below it, for later rows
                    items = self.frame_items(x.r2 + 1, x.r2 + self.post[x.i], x)
                    lines.append(f"V{x.i}.extend([{', '.join(items)}])")
        lines.append(f"return ({''.join(f'V{x.i}, ' for x in self.ms)})")
        used = set()
        for body in bodies:
            for s in body:
                used |= names(s.op)
        local = {t for body in bodies for s in body for t in s.targets if isinstance(t, str)}
        local |= {f"V{x.i}" for x in self.ms} | {"r"}
        local |= {x.split(" = ")[0] for x in self.prologue}
        local |= {
            item.split(" = ")[0] if isinstance(item, str) else item[0] for rs in self.reads for item in rs
        }
        local.add("torch")
        used |= set(results) | {self.frame} - {None}
        for x in self.prologue:
            used.add(x.split(" = ")[1].split(".")[0])
        args = sorted(v for v in used - local if isinstance(v, str) and v not in L.g)
        for a in args:
            operand(a)
        src = f"def {fname}({', '.join(args)}):\n" + "".join(f"    {x}\n" for x in lines)
        L.extra.append(src)
        out = L.tmp(Op("call", fname, *args))
        for x in self.ms:
            lay = "0" if x.C == 1 else "2d"
            for j, s in enumerate(x.steps):
                L.scan_vals[s] = (Op("index", Op("index", out, x.i), j + self.pre[x.i]), lay)
        L.note(
            f"scan: {sc.where}: one loop over its {sc.plan.hi - sc.plan.lo + 1} rows in the program ({fname}), "
            "each formula lowered once"
        )

    def read_line(self, var: str, d: int, runs) -> str:
        operand(var)
        parts = []
        for i, a, b in runs:
            x = self.ms[i]
            at = _at(f"V{i}", x.r1 - self.pre[i] - d)  # row r reads item (r + d) - (x.r1 - pre)
            if len(runs) > 1:  # side by side: [1, w] each
                if x.C == 1:
                    parts.append(f"{at}.reshape(1, 1)")
                else:
                    parts.append(at if (a, b) == (0, x.C) else f"{at}[:, {int(a)}:{int(b)}]")
            elif x.C == 1:
                parts.append(at)
            elif b - a == 1:
                parts.append(f"{at}[0, {int(a)}]")
            else:
                parts.append(at if (a, b) == (0, x.C) else f"{at}[:, {int(a)}:{int(b)}]")
        if len(parts) == 1:
            return f"{var} = {parts[0]}"
        return f"{var} = torch.cat([{', '.join(parts)}], 1)"

    def result(self, n: N, m) -> str:
        """The member's value at a row, as its list holds it: 0-d for one column, else [1, C]."""
        L = self.L
        if n.win is not None or n.k is not None:
            raise Unsupported("a constant or range result")
        if m.C == 1:
            if n.c != 1:
                raise Unsupported("result shape")
            code = L.code(n, n.lay)
            if n.lay == "2d":
                code = L.tmp(Op("index", code, (0, 0)))
            elif n.lay == "col":
                code = L.tmp(Op("index", code, 0))
            return code if isinstance(code, str) else L.tmp(code)
        code = L.code(n, "2d")
        if n.c == 1:
            code = L.tmp(Op("expand", code, 1, m.C))
        elif n.c != m.C:
            raise Unsupported("result shape")
        return code if isinstance(code, str) else L.tmp(code)


def lower(L: Lowerer, sc) -> None:
    """The recurrence ``sc`` (a compiled :class:`xlmnist.compile.scan_loop._Scan`) as a loop in the program;
    its steps' values into ``L.scan_vals``. Raises :class:`Unsupported` (nothing emitted is kept)."""
    _Loop(L, sc).build()
