"""The loop of a running recurrence (:mod:`xlmnist.compile.scan`): each member's formula compiled once, for
its whole column, into closures, and the loop that runs them row by row.

:class:`_Scan` splits each member's formula into the parts that do not read the recurrence (compiled for
all rows, evaluated once per call: :meth:`_Scan.hoist`) and its references to the recurrence's own cells
(read, at each step, from the values computed so far or the frame around them: :meth:`_Scan.state_ref`),
both standing in the formula's tree as a :class:`Hole`; :meth:`_Scan.run` is the loop.
"""

from __future__ import annotations

import numpy as np
import torch

from xlmnist.compile import cellwise
from xlmnist.compile.areas import _Expr, _np_unfold, _t_unfold, _windows
from xlmnist.compile.values import NUM, Value
from xlmnist.errors import FormulaError
from xlmnist.formula import parser as P
from xlmnist.formula.graph import Block, RefUse


class Hole:
    """A compiled sub-expression standing in a formula's tree (``Compiler.expr`` returns ``e``, the
    lowering ``n``); ``ref``: it stands for a reference (for the functions that treat a referenced TRUE
    unlike a typed one)."""

    __slots__ = ("e", "ref", "n")

    def __init__(self, e: _Expr, ref: bool = False, n=None):
        self.e, self.ref = e, ref
        self.n = n  # the same part in the lowered program (xlmnist.compile.scan_lower)


class NotScan(Exception):
    """The recurrence is compiled step by step (the reason)."""


class _State:
    """One run of the loop: the member and row being computed, the values so far."""

    __slots__ = ("m", "k", "vals", "base", "hoisted")


class _Member:
    __slots__ = ("i", "r1", "c1", "r2", "c2", "R", "C", "steps", "block", "e")

    def __init__(self, i, rect, steps):
        self.i = i
        self.r1, self.c1, self.r2, self.c2 = rect
        self.R, self.C = self.r2 - self.r1 + 1, self.c2 - self.c1 + 1
        self.steps = steps  # block id of each row


class _Scan:
    def __init__(self, comp, plan, steps, head):
        self.comp, self.plan, self.head = comp, plan, head
        self.sheet = plan.sheet
        self.members = [_Member(i, rect, ids) for i, (rect, ids) in enumerate(zip(plan.members, steps))]
        self.key = ("scan", head)
        self.where = ""
        self.uses: list = []  # (member, reference) of every reference to the recurrence's cells
        self.hoisted: list[_Expr] = []  # dynamic parts evaluated once per call (all rows)
        self.dynamic = False

    # ---- where a cell of the recurrence lives --------------------------------------------------------
    def member_at(self, r: int, c: int):
        for m in self.members:
            if m.r1 <= r <= m.r2 and m.c1 <= c <= m.c2:
                return m
        return None

    def touches(self, fp) -> bool:
        r1, c1, r2, c2 = fp
        return any(m.r1 <= r2 and r1 <= m.r2 and m.c1 <= c2 and c1 <= m.c2 for m in self.members)

    # ---- building --------------------------------------------------------------------------------------
    def build(self):
        comp, graph = self.comp, self.comp.graph
        state_uses, ext = [], set()
        steps = {s for m in self.members for s in m.steps}
        for m in self.members:
            first = graph.blocks[m.steps[0]]
            m.block = Block(self.head, self.sheet, m.r1, m.c1, m.R, m.C, (m.r1, m.c1, m.r2, m.c2))
            m.block.ast = graph.resolve(graph._parse(first), m.block, 0)
            for u in m.block.refs:
                fp = u.footprint(m.R, m.C)
                if u.sheet == self.sheet and self.touches(fp):
                    state_uses.append((m, u))
                ext.update(i for i in graph.blocks_in(u.sheet, *fp) if i not in steps)
        if ext:  # what the recurrence reads (none of it reads the recurrence: it is not in its group)
            comp.compile_blocks(sorted(ext))
        if any(i in comp.random for i in ext):
            raise NotScan("it reads cells that use RAND()")
        self.frame(state_uses)
        for m in self.members:
            comp._row_aligned = comp._random = comp._uses_row = False
            m.e = comp.expr(self.node(m.block.ast, m), m.block)
            if comp._row_aligned or comp._random:
                raise NotScan("RAND() or the data rows in its formulas")
        self.uses = state_uses
        return self

    def frame(self, uses) -> None:
        """The rectangle every reference to the recurrence's cells falls in, read once per call: the
        cells around the recurrence (its initial values) come from it."""
        fps = [u.footprint(m.R, m.C) for m, u in uses]
        r1, c1 = min(f[0] for f in fps), min(f[1] for f in fps)
        r2, c2 = max(f[2] for f in fps), max(f[3] for f in fps)
        self.fr, self.fc = r1, c1
        e, kind, strs = self.comp.area(self.sheet, r1, c1, r2, c2, owner=self.head)
        if e.aligned:
            raise NotScan("it reads the data rows")
        kind = np.zeros((r2 - r1 + 1, c2 - c1 + 1), np.int8) if kind is None else kind.copy()
        for m in self.members:  # the recurrence's own cells: numbers computed by the loop
            a1, b1, a2, b2 = max(m.r1, r1), max(m.c1, c1), min(m.r2, r2), min(m.c2, c2)
            if a1 <= a2 and b1 <= b2:
                kind[a1 - r1 : a2 - r1 + 1, b1 - c1 : b2 - c1 + 1] = NUM
        self.fkind, self.fstrs = kind, strs
        self.base_e = e
        if e.const is not None:
            self.base = e.const.t if isinstance(e.const, Value) else e.const
        else:
            self.base, self.dynamic = None, True

    def node(self, node, m):
        """The formula with the parts that do not read the recurrence compiled for all rows and its
        references to the recurrence as per-step reads (both as :class:`Hole`)."""
        if not self.reads_state(node, m):
            return Hole(self.hoist(node, m), ref=type(node) is RefUse)
        T = type(node)
        if T is RefUse:
            return Hole(self.state_ref(node, m), ref=True)
        if T is P.Call:
            if node.name in cellwise.RANDOM:
                raise NotScan("RAND() over its own cells")
        if T in P.COMPOSITE:
            return P.map_operands(node, lambda a: self.node(a, m))
        raise NotScan(f"{T.__name__} over its own cells")

    def reads_state(self, node, m) -> bool:
        T = type(node)
        if T is RefUse:
            return node.sheet == self.sheet and self.touches(node.footprint(m.R, m.C))
        if T is P.Call:
            if node.name in cellwise.POSITION:
                return False  # ROW(B4) reads a position, not a value
            return any(self.reads_state(a, m) for a in node.args)
        if T is P.Binary:
            return self.reads_state(node.left, m) or self.reads_state(node.right, m)
        if T in (P.Unary, P.Percent):
            return self.reads_state(node.operand, m)
        return False

    def hoist(self, node, m) -> _Expr:
        """A part that does not read the recurrence: compiled for all of the member's rows; each step
        takes its row (a constant computed now, anything else once per call)."""
        comp = self.comp
        e = comp.expr(node, m.block)
        if comp._row_aligned:
            raise NotScan("it reads the data rows")
        if e.const is not None:
            v = e.const
            if v.t.shape[0] == 1 or m.R == 1:
                return e
            rows = [_row(v, k) for k in range(m.R)]
            return _Expr(fn=lambda env, rows=rows, key=self.key: rows[env[key].k])
        self.dynamic = True
        i = len(self.hoisted)
        self.hoisted.append(e)
        R, key = m.R, self.key

        def take(env):
            st = env[key]
            h = st.hoisted[i]
            if h is None:
                v = e(env)
                h = st.hoisted[i] = [v] if v.t.shape[0] == 1 or R == 1 else [_row(v, k) for k in range(R)]
            return h[0] if len(h) == 1 else h[st.k]

        return _Expr(fn=take)

    def state_ref(self, u: RefUse, m) -> _Expr:
        """A reference to the recurrence's cells: at each step, the window of that row's cell, from the
        values computed so far and the frame around them."""
        h, w = u.r2 - u.r1 + 1, u.c2 - u.c1 + 1
        C, crel = m.C, u.crel
        plans = []
        c1, c2 = u.c1, u.c2 + (C - 1 if crel else 0)
        for k in range(m.R):
            a, b = (u.r1 + k, u.r2 + k) if u.rrel else (u.r1, u.r2)
            last = plans[-1] if plans else None
            if last is not None and last[0] == "member" and u.rrel and a == b:
                x = self.members[last[2][0]]
                if a <= x.r2:  # the same member's row, one further down: the same plan
                    plans.append(last)
                    continue
            plans.append(self.plan_rect(a, b, c1, c2, m, k, h, w, crel))
        key = self.key

        def read(env):
            st = env[key]
            kind, fn, arg, kd, sd = plans[st.k]
            t = fn(st, arg)
            return Value(_windows(t, 1, C, h, w, False, crel, _t_unfold), kd, sd)

        return _Expr(fn=read)

    def plan_rect(self, a, b, c1, c2, m, k, h, w, crel):
        """How step ``k`` of member ``m`` reads rows a..b, columns c1..c2: (what, reader, its argument,
        kind windows, string windows)."""
        here = m.r1 + k
        x = self.member_at(a, c1)
        if a == b and x is not None and c2 <= x.c2:  # one member's row (the common case)
            if a > here or (a == here and x.i >= m.i):
                raise NotScan("it reads a cell the loop has not computed yet")
            cs = slice(c1 - x.c1, c2 - x.c1 + 1)
            full = cs == slice(0, x.C)
            return ("member", _member_full if full else _member_part, (x.i, a - x.r1 - k, cs), None, None)
        cells = []
        for r in range(a, b + 1):
            for c in range(c1, c2 + 1):
                x = self.member_at(r, c)
                if x is not None and (r > here or (r == here and x.i >= m.i)):
                    raise NotScan("it reads a cell the loop has not computed yet")
                cells.append(x)
        fr, fc = self.fr, self.fc
        kd = self.fkind[a - fr : b - fr + 1, c1 - fc : c2 - fc + 1]
        sd = None if self.fstrs is None else self.fstrs[a - fr : b - fr + 1, c1 - fc : c2 - fc + 1]
        kd = None if (kd == NUM).all() else _windows(kd, 1, m.C, h, w, False, crel, _np_unfold)
        sd = None if kd is None or sd is None else _windows(sd, 1, m.C, h, w, False, crel, _np_unfold)
        if all(y is None for y in cells):
            return ("frame", _frame, (slice(a - fr, b - fr + 1), slice(c1 - fc, c2 - fc + 1)), kd, sd)
        parts = []  # a mix: row by row, runs of columns from the loop's values or the frame
        for r in range(a, b + 1):
            runs, c = [], c1
            while c <= c2:
                x = self.member_at(r, c)
                if x is None:
                    e = c
                    while e + 1 <= c2 and self.member_at(r, e + 1) is None:
                        e += 1
                    runs.append((None, r - fr, slice(c - fc, e - fc + 1)))
                else:
                    e = min(c2, x.c2)
                    runs.append((x.i, r - x.r1, slice(c - x.c1, e - x.c1 + 1)))
                c = e + 1
            parts.append(runs)
        return ("mix", _mix, parts, kd, sd)

    # ---- running -------------------------------------------------------------------------------------
    def run(self, env, values: bool = False):
        """The loop: every member's value at every row (``values``: the list of Values per member and
        row, for folding); else the step blocks' values into ``env``, returning the head's."""
        st = _State()
        env[self.key] = st
        st.hoisted = [None] * len(self.hoisted)
        st.base = self.base if self.base is not None else self.base_e(env)
        if isinstance(st.base, Value):
            st.base = st.base.t
        vals = st.vals = [[None] * m.R for m in self.members]
        out = [[None] * m.R for m in self.members] if values else None
        lo, hi = self.plan.lo, self.plan.hi
        try:
            for r in range(lo, hi + 1):
                for m in self.members:
                    k = r - m.r1
                    if k < 0 or k >= m.R:
                        continue
                    st.k = k
                    v = m.e(env)
                    t = v.t
                    if t.shape[2] != 1 or t.shape[3] != 1:
                        b = self.comp.graph.blocks[m.steps[k]]
                        raise FormulaError(
                            f"{b.anchor}: the formula gives a {t.shape[2]}x{t.shape[3]} range, not one value"
                        )
                    t = t.reshape(t.shape[0], t.shape[1])
                    vals[m.i][k] = t if t.shape == (1, m.C) else t.expand(1, m.C)
                    if values:
                        out[m.i][k] = v
        finally:
            del env[self.key]
        if values:
            return out
        for m in self.members:
            for k, s in enumerate(m.steps):
                env[s] = vals[m.i][k]
        return env[self.head]


def _row(v: Value, k: int) -> Value:
    return Value(
        v.t[k : k + 1],
        None if v.kind is None else v.kind[k : k + 1],
        None if v.s is None else v.s[k : k + 1],
    )


def _member_full(st, arg):  # arg: (member, row offset from the step's, columns)
    return st.vals[arg[0]][st.k + arg[1]]


def _member_part(st, arg):
    i, d, cs = arg
    return st.vals[i][st.k + d][:, cs]


def _frame(st, arg):
    return st.base[arg]


def _mix(st, parts):
    rows = []
    for runs in parts:
        segs = [st.base[r, cs][None] if i is None else st.vals[i][r][:, cs] for i, r, cs in runs]
        rows.append(segs[0] if len(segs) == 1 else torch.cat(segs, 1))
    return rows[0] if len(rows) == 1 else torch.cat(rows, 0)
