"""The general form's loops: an unrolled recurrence as one readable ``for`` loop over its rows (#16).

The graph splits a running recurrence down the rows (an unrolled SGD / momentum / Adam sheet, ``h_t =
TANH(h_(t-1)*w + x_t)`` copied down) into one block per row and records the group as a
:class:`~xlmnist.formula.cycles.ScanPlan` (``graph.scans``: its members, the rectangles before the split).
Here each plan becomes, in ``forward``, one loop over the rows: every member's formula is translated
**once** (its range and formula text as a comment) into a statement computing row ``r`` of the member,
its cells kept by row in a dict named after its column (``B[r]``, a [1, columns] tensor, seeded with the
cells above or below it that the loop reads: its initial values). A reference to the recurrence reads
those dicts (``B[r - 1]``, a range as rows stacked and unfolded); a reference that moves with the rows
reads row ``r`` of its tensor (``K['adam'][r:r + 1, 1:2]``); a fixed one is written as in any
statement. After the loop each member is stacked into the named tensor a block would have had
(``b4 = torch.cat(...)``), which later statements read as before.

What cannot be written as such a loop (a lookup over cells of the recurrence itself, two members in one
column, ...) is written one statement per row, as before, and says so: a comment in the module and a
note the ``export`` command prints (``General.notes``), never silently.
"""

from __future__ import annotations

import re

import numpy as np

from xlmnist.compile.values import EMPTY, NUM
from xlmnist.errors import FormulaError
from xlmnist.export.lookups import LOOKUPS, E
from xlmnist.export.translate import Unsupported, escape
from xlmnist.formula import parser as P
from xlmnist.formula.graph import Block, RefUse, topo_order
from xlmnist.xlsx.refs import area_name, col_letters

_NAME = re.compile(r"(self\.)?[A-Za-z_][A-Za-z0-9_]*")


def _r(d: int) -> str:
    """``r``, ``r + 2``, ``r - 1``: the loop's row moved by ``d``."""
    return "r" if d == 0 else (f"r + {d}" if d > 0 else f"r - {-d}")


def _refs(n):
    """The references in a formula's tree."""
    T = type(n)
    if T is RefUse:
        yield n
    elif T is P.Call:
        for a in n.args:
            yield from _refs(a)
    elif T is P.Binary:
        yield from _refs(n.left)
        yield from _refs(n.right)
    elif T in (P.Unary, P.Percent):
        yield from _refs(n.operand)


class _Member:
    """One member of a plan: its rectangle, its step blocks (one per row), its names in the module, and
    ``block``: the rectangle as one block (its formula resolved as copied down: references that move
    with the rows marked so, which a single row's step block cannot say)."""

    def __init__(self, i: int, rect, steps: list[int], graph):
        self.i, self.steps = i, steps
        self.r1, self.c1, self.r2, self.c2 = rect
        self.R, self.C = self.r2 - self.r1 + 1, self.c2 - self.c1 + 1
        first = graph.blocks[steps[0]]
        if first.array:
            raise Unsupported(f"{first.anchor}: array formulas are exported only in the layer form")
        self.block = Block(first.id, first.sheet, self.r1, self.c1, self.R, self.C, rect)
        text = graph.wb.sheets[first.sheet].formula((self.r1, self.c1))
        try:
            self.block.ast = graph.resolve(P.parse(text, first.anchor), self.block, 0)
        except FormulaError as exc:
            raise Unsupported(str(exc)) from None
        self.text = text
        self.seeds: dict[int, str] = {}  # row outside the member -> code of its cells (read by the loop)
        self.dict = self.var = ""


class Loops:
    """The plans of ``gen`` (a :class:`xlmnist.export.general.General`): which step blocks they are,
    and writing each as a loop the first time one of its steps is needed."""

    def __init__(self, gen):
        self.gen, self.g = gen, gen.g
        self.plan_of: dict[int, int] = {}  # step block id -> plan number
        self.steps: dict[int, list[list[int]]] = {}  # plan number -> each member's step ids
        self.state: dict[int, str] = {}  # plan number -> "loop", or why its rows are statements
        self.notes: list[str] = []
        self.names: set[str] = {"K"}
        for n, plan in enumerate(getattr(self.g, "scans", ())):
            steps, whole = [], True
            for r1, c1, r2, c2 in plan.members:
                ids = []
                for r in range(r1, r2 + 1):
                    b = self.g.block_at(plan.sheet, r, c1)
                    if b is None or b.out != (r, c1, r, c2):
                        whole = False
                        break
                    ids.append(b.id)
                steps.append(ids)
                for bid in self.g.blocks_in(plan.sheet, r1, c1, r2, c2):
                    self.plan_of[bid] = n
            if whole:
                self.steps[n] = steps

    def where(self, n: int) -> str:
        plan = self.g.scans[n]
        return ", ".join(area_name(plan.sheet, *m) for m in plan.members)

    def emit(self, bid: int) -> bool:
        """Write the loop of the plan step ``bid`` belongs to; False where it is in none, or its plan
        is written one statement per row (the first time: a comment and a note saying why)."""
        n = self.plan_of.get(bid)
        if n is None:
            return False
        if n not in self.state:
            try:
                if n not in self.steps:
                    raise Unsupported("its rows were split further")
                lines = _Loop(self, n).build()
            except Unsupported as exc:
                self.state[n] = str(exc)
            else:
                self.state[n] = "loop"
                self.gen.lines += lines
                plan = self.g.scans[n]
                self.notes.append(
                    f"{self.where(n)}: an unrolled recurrence, one for loop over rows {plan.lo}..{plan.hi}"
                )
                return True
            why = self.state[n]
            self.notes.append(f"{self.where(n)}: one statement per row (not written as a loop: {why})")
            self.gen.lines.append(
                f"        # {escape(self.where(n))}: one statement per row below (not written as a loop: "
                f"{escape(why)})"
            )
        return self.state[n] == "loop"

    def name(self, base: str, row: int) -> str:
        got = base if base not in self.names else f"{base}_{row}"
        k = 0
        while got in self.names:
            k += 1
            got = f"{base}_{row}_{k}"
        self.names.add(got)
        return got


class _Loop:
    """One plan written as a loop: ``build()`` -> the lines (nothing is kept if it raises)."""

    def __init__(self, loops: Loops, n: int):
        self.loops, self.gen, self.g = loops, loops.gen, loops.g
        self.plan = self.g.scans[n]
        self.sheet = self.plan.sheet
        pairs = zip(self.plan.members, loops.steps[n])
        self.ms = [_Member(i, rect, ids, self.g) for i, (rect, ids) in enumerate(pairs)]
        self.hoisted: list[str] = []  # lines before the loop: parts over all rows
        self.m: _Member | None = None  # the member being translated

    # ---- the recurrence's cells --------------------------------------------------------------------
    def touches(self, fp) -> bool:
        r1, c1, r2, c2 = fp
        return any(m.r1 <= r2 and r1 <= m.r2 and m.c1 <= c2 and c1 <= m.c2 for m in self.ms)

    def by_column(self, c: int) -> _Member:
        xs = [x for x in self.ms if x.c1 <= c <= x.c2]
        if len(xs) != 1:
            raise Unsupported(
                "two members in one column"
                if xs
                else "a reference to cells beside the columns of the recurrence"
            )
        return xs[0]

    def reads(self, n, m) -> bool:
        """Whether ``n`` (in member m's formula) reads the recurrence's cells."""
        return any(u.sheet == self.sheet and self.touches(u.footprint(m.R, m.C)) for u in _refs(n))

    # ---- the translator's hook (General.tr asks here first while a loop is written) ------------------
    def part(self, n, b) -> E | None:
        """Row ``r``'s code of ``n`` where it differs from a translation for the member's whole rectangle
        (a reference to the recurrence or moving with the rows), else None (translated as in any block)."""
        m = self.m
        T = type(n)
        if T is RefUse:
            fp = n.footprint(m.R, m.C)
            if n.sheet == self.sheet and self.touches(fp):
                return self.state(n, m, b)
            if n.rrel and m.R > 1:
                return self.moving(n, m, b, fp)
            return None
        if T is P.Call and n.name in LOOKUPS:
            if self.reads(n, m):
                raise Unsupported(f"{b.anchor}: a lookup over cells of the recurrence itself")
            if m.R > 1 and any(u.rrel for u in _refs(n)):
                return self.hoist(n, m)
        return None

    def state(self, u: RefUse, m: _Member, b) -> E:
        """A reference to the recurrence's cells at row ``r``: the members' dicts (rows stacked, columns
        side by side), the cells outside the members seeded before the loop."""
        if not u.rrel and m.R > 1:
            raise Unsupported(f"{b.anchor}: a fixed cell of the recurrence read by every row")
        h, w = u.r2 - u.r1 + 1, u.c2 - u.c1 + 1
        c1, c2 = u.c1, u.c2 + (m.C - 1 if u.crel else 0)
        runs, c = [], c1
        while c <= c2:
            x = self.by_column(c)
            e = min(c2, x.c2)
            runs.append((x, c - x.c1, e - x.c1 + 1))
            c = e + 1
        dense = plain = True
        rows = []
        for d in range(u.r1 - m.r1, u.r2 - m.r1 + 1):  # row r reads row r + d
            lo, hi = m.r1 + d, m.r2 + d
            parts = []
            for x, a, e in runs:
                if max(lo, x.r1) <= min(hi, x.r2) and (d > 0 or (d == 0 and x.i >= m.i)):
                    raise Unsupported(f"{b.anchor}: reads a cell the loop has not computed yet")
                for row in [*range(lo, min(hi, x.r1 - 1) + 1), *range(max(lo, x.r2 + 1), hi + 1)]:
                    kinds = self.seed(x, row, b)[a:e]
                    if h > 1 or w > 1:
                        self.gen.no_bools(kinds, b.anchor)
                    dense, plain = dense and not (kinds == EMPTY).any(), plain and bool((kinds == NUM).all())
                item = f"{x.dict}[{_r(d)}]"
                parts.append(item if (a, e) == (0, x.C) else f"{item}[:, {a}:{e}]")
            rows.append(parts[0] if len(parts) == 1 else f"torch.cat([{', '.join(parts)}], 1)")
        code = rows[0] if len(rows) == 1 else f"torch.cat([{', '.join(rows)}], 0)"
        if h == 1 and w == 1:
            return E(code, dense=dense, plain=plain)
        return E(f"{code}.unfold(0, {h}, 1).unfold(1, {w}, 1)", True, dense=dense)

    def seed(self, x: _Member, row: int, b) -> np.ndarray:
        """Row ``row`` of member x's columns, outside it, read by the loop: its code into x's seeds; the
        cells' kinds."""
        if row not in x.seeds:
            x.seeds[row] = self.gen.area(self.sheet, row, x.c1, row, x.c2, b.anchor).code
        return self.gen.kinds(self.sheet, row, x.c1, row, x.c2)[0]

    def moving(self, u: RefUse, m: _Member, b, fp) -> E:
        """A reference that moves with the rows, not to the recurrence: row ``r``'s part of its tensor."""
        h, w = u.r2 - u.r1 + 1, u.c2 - u.c1 + 1
        a = self.gen.area(u.sheet, *fp, b.anchor)
        if h > 1 or w > 1:
            self.gen.no_bools(self.gen.c.ckind[u.sheet][fp[0] : fp[2] + 1, fp[1] : fp[3] + 1], b.anchor)
        sheet = escape(u.sheet, literal=True)
        if a.code == f"K[{sheet}][{fp[0]}:{fp[2] + 1}, {fp[1]}:{fp[3] + 1}]":
            off = fp[0] - m.r1
            code = f"K[{sheet}][{_r(off)}:{_r(off + h)}, {fp[1]}:{fp[3] + 1}]"
        else:
            src = a.code if _NAME.fullmatch(a.code) else self.name_part(a.code, m, area_name(u.sheet, *fp))
            code = f"{src}[{_r(-m.r1)}:{_r(h - m.r1)}]"
        if h == 1 and w == 1:
            return E(code, dense=a.dense, plain=a.plain)
        return E(f"{code}.unfold(0, {h}, 1).unfold(1, {w}, 1)", True, dense=a.dense)

    def hoist(self, n, m: _Member) -> E:
        """A part that moves with the rows but does not read the recurrence (a lookup keyed by a column):
        translated for all of the member's rows before the loop; row ``r`` of it in the loop."""
        gen = self.gen
        saved, gen.loop = gen.loop, None
        try:
            e = gen.num(n, m.block)
        finally:
            gen.loop = saved
        if e.win:
            raise Unsupported(f"{m.block.anchor}: a lookup giving a range in the recurrence")
        name = self.name_part(f"_full({e.code}, {m.R}, {m.C})", m, f"{n.name}() for every row")
        return E(f"{name}[{_r(-m.r1)}:{_r(1 - m.r1)}]", dense=e.dense, plain=e.plain)

    def name_part(self, code: str, m: _Member, what: str) -> str:
        name = self.loops.name(f"{m.var}_in", len(self.hoisted) + 1)
        self.hoisted.append(f"        {name} = {code}  # {escape(what)}")
        return name

    # ---- the loop ------------------------------------------------------------------------------------
    def build(self) -> list[str]:
        gen, g, ms = self.gen, self.g, self.ms
        steps = {s for x in ms for s in x.steps}
        ext = set()
        for x in ms:
            for s in x.steps:
                g.analyse(g.blocks[s])
                ext.update(d for d in g.blocks[s].deps if d not in steps)
        order = topo_order(g, sorted(ext))
        if steps & set(order):
            raise Unsupported("a block between its rows reads the recurrence")
        for d in order:  # what the loop reads, written first
            gen.need(d)
        for x in ms:
            if any(y is not x and y.c1 <= x.c2 and x.c1 <= y.c2 for y in ms):
                raise Unsupported("two members in one column")
            x.var = gen.var_name(self.sheet, x.r1, x.c1)
            x.dict = self.loops.name(col_letters(x.c1), x.r1)
        lo, hi = self.plan.lo, self.plan.hi
        body = []
        for x in ms:
            self.m = x
            gen.loop = self
            try:
                e = gen.num(x.block.ast, x.block)
            finally:
                gen.loop = self.m = None
            if e.win:
                raise Unsupported(f"{x.block.anchor}: the formula gives a range, not one value per cell")
            ind = "            "
            if (x.r1, x.r2) != (lo, hi):
                cond = (
                    f"r >= {x.r1}"
                    if x.r2 == hi
                    else (f"r <= {x.r2}" if x.r1 == lo else f"{x.r1} <= r <= {x.r2}")
                )
                body.append(f"{ind}if {cond}:")
                ind += "    "
            body.append(f"{ind}# {escape(area_name(self.sheet, x.r1, x.c1, x.r2, x.c2))}  {escape(x.text)}")
            body.append(f"{ind}{x.dict}[r] = _full({e.code}, 1, {x.C})")
        where = ", ".join(area_name(self.sheet, x.r1, x.c1, x.r2, x.c2) for x in ms)
        lines = [
            f"        # an unrolled recurrence, one loop over rows {lo}..{hi}: {escape(where)}",
            "        # each row from the rows above it; a column's cells by row (B[r]: row r of column B),",
            "        # starting with the cells around it that the loop reads (its initial values)",
            *self.hoisted,
        ]
        for x in ms:
            seeds = ", ".join(f"{row}: {code}" for row, code in sorted(x.seeds.items()))
            lines.append(f"        {x.dict} = {{{seeds}}}")
        lines.append(f"        for r in range({lo}, {hi + 1}):")
        lines += body
        for x in ms:
            lines.append(f"        {x.var} = torch.cat([{x.dict}[k] for k in range({x.r1}, {x.r2 + 1})])")
            for s in x.steps:
                gen.vars[s] = x.var
                gen.span[s] = (x.r1, x.c1, x.r2, x.c2)
        return lines
