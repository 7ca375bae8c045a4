"""Cycles between blocks that the cells do not have.

Grouping copied formulas into blocks can join cells that depend on each other through a third block:
``C7 = SUM(C2:C6)`` and ``D7 = SUM(D2:D6)`` (one block, the same relative formula) while ``D2:D6 =
B2/C$7`` reads the first of them. Cell by cell there is no cycle; block by block there is. After the
blocks are built, :func:`split_false_cycles` finds the strongly connected groups of blocks and splits
one multi-cell block per group at a time (side-by-side cells into columns first, then rows) until
every remaining group is a real cycle of single cells, which :func:`cycle_message` reports with its
path (``S!A1 -> S!B1 -> S!A1``).

A running recurrence is the same kind of cycle: a copied block reading its own earlier cells (``C5 =
C4 - lr*D4``, a one-block group with a self-dependency), or several columns reading each other's row
above (Adam's m, v and w). Its blocks are split into one block per step (a row, vectorised across the
columns it spans; a column for a recurrence copied right), up to :data:`MAX_STEPS` steps: the steps run
in dependency order, so values are exact and autograd differentiates through the whole unrolled loop
(a hypergradient for the learning-rate cell). The steps are marked ``step``. A group that reads its own
cells only in earlier rows, or earlier in the same row (:func:`scan_plan`), has all its blocks split into
rows at once and is recorded as a :class:`ScanPlan` (``graph.scans``): the compiler compiles each of its
formulas once and runs the rows as one loop (:mod:`xlmnist.compile.scan`); other recurrences compile
step by step. A longer recurrence stays whole and is reported when compiled.
"""

from __future__ import annotations

MAX_SPLIT_CELLS = 4096  # a bigger block in a cycle is not split cell by cell: the cycle is reported
MAX_STEPS = 100_000  # a running recurrence (one column or row, or a few) is split into up to this many steps


def components(graph) -> list[list[int]]:
    """Strongly connected groups of more than one block (Tarjan, iterative); unanalysable blocks skipped."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on, stack, out = set(), [], []
    for root in range(len(graph.blocks)):
        if root in index:
            continue
        work = [(root, iter(_deps(graph, root)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(_deps(graph, w))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1 or v in _deps(graph, v):  # a block reading its own cells: a recurrence
                    out.append(group)
    return out


def _deps(graph, bid: int) -> list[int]:
    b = graph.blocks[bid]
    try:
        graph.analyse(b)
    except Exception:  # noqa: BLE001 - deferred, not swallowed: raised again when (if) the block is compiled
        b.ast, b.refs, b.deps = None, [], []
        return []
    return b.deps


def split_false_cycles(graph) -> None:
    """Split the multi-cell blocks of every block cycle until only single-cell (real) cycles remain."""
    while True:
        split = False
        for group in components(graph):
            blocks = [graph.blocks[i] for i in group]
            plan = scan_plan(blocks)
            if plan is not None:  # a recurrence down the rows: every block of the group split at once
                for b in blocks:
                    if b.R > 1:
                        graph.split_block(b, "rows")
                graph.scans.append(plan)
                split = True
                continue
            ok = [b for b in blocks if not b.array and 1 < b.R * b.C and _splittable(b)]
            if (
                len(group) == 1 and ok
            ):  # a running recurrence: one step per row (or column), vectorised across
                graph.split_block(ok[0], _direction(ok[0]))
                split = True
                continue
            wide = [b for b in ok if b.C > 1]  # a row of side-by-side cells first, the smallest one
            for across, pick in (("columns", wide), ("rows", ok)):
                if pick:
                    graph.split_block(min(pick, key=lambda b: (b.R * b.C, b.id)), across)
                    split = True
                    break
        if not split:
            return


class ScanPlan:
    """A running recurrence down the rows that runs as one loop (:mod:`xlmnist.compile.scan`): the blocks
    of one strongly connected group (``members``, their rectangles before the split into rows, in the order
    a row's cells are computed) that read the group's cells only in earlier rows or, in the same row, the
    cells of members earlier in that order."""

    __slots__ = ("sheet", "members", "lo", "hi")

    def __init__(self, sheet: str, members: list, lo: int, hi: int):
        self.sheet, self.members, self.lo, self.hi = sheet, members, lo, hi  # members: [(r1, c1, r2, c2)]


def scan_plan(blocks) -> ScanPlan | None:
    """The row-by-row loop a recurrence group can run as, or None (not a recurrence down the rows: split
    as before). Every reference of a member that reaches a member's cell must end at or above its own row
    (moving with it); one that ends on its own row must read only other members, computed first."""
    if len({b.sheet for b in blocks}) != 1 or any(b.array or b.step for b in blocks):
        return None
    lo, hi = min(b.out[0] for b in blocks), max(b.out[2] for b in blocks)
    if hi == lo or hi - lo + 1 > MAX_STEPS or not any(b.R > 1 for b in blocks):
        return None
    sheet = blocks[0].sheet
    after: dict[int, set[int]] = {b.id: set() for b in blocks}  # same-row dependencies between members
    for b in blocks:
        for u in b.refs:
            if u.sheet != sheet:
                continue
            fp = u.footprint(b.R, b.C)
            hit = [m for m in blocks if _overlaps(fp, m.out)]
            if not hit:
                continue
            if b.R > 1 and not u.rrel:
                return None  # a fixed cell of the group read by every row
            d = u.r2 - b.r0  # the window's last row, relative to the cell's own row
            if d > 0:
                return None  # a later row: not a loop down the rows
            if d == 0:
                cols = (fp[1], fp[3])
                for m in hit:
                    if m.out[1] <= cols[1] and cols[0] <= m.out[3]:
                        if m is b:
                            return None  # its own row (copied right): split into columns
                        after[b.id].add(m.id)
    order: list[int] = []
    state: dict[int, int] = {}

    def visit(i: int) -> bool:
        if state.get(i) == 2:
            return True
        if state.get(i) == 1:
            return False
        state[i] = 1
        if not all(visit(j) for j in sorted(after[i])):
            return False
        state[i] = 2
        order.append(i)
        return True

    if not all(visit(b.id) for b in sorted(blocks, key=lambda b: (b.c0, b.r0))):
        return None  # a cycle within a row: not a recurrence
    by_id = {b.id: b for b in blocks}
    return ScanPlan(sheet, [by_id[i].out for i in order], lo, hi)


def _direction(b) -> str:
    """How a recurrence's block is split: into columns when it reads earlier cells of its own row only
    (copied right, e.g. a hidden state along a row), else into rows (vectorised across its columns)."""
    if b.R == 1 or b.C == 1:
        return "columns" if b.R == 1 else "rows"
    own = [u for u in b.refs if u.sheet == b.sheet]
    own = [u for u in own if _overlaps(u.footprint(b.R, b.C), b.out)]
    return "columns" if own and all(u.rrel and u.r1 == u.r2 == b.r0 for u in own) else "rows"


def _overlaps(a, b) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _splittable(b) -> bool:
    return b.R * b.C <= MAX_SPLIT_CELLS or (min(b.R, b.C) <= 16 and max(b.R, b.C) <= MAX_STEPS)


def cycle_message(graph, path: list[int]) -> str:
    """``S!A1: circular reference (S!A1 -> S!B1 -> S!A1)`` for the blocks of ``path`` (a closed walk)."""
    names = [graph.blocks[i].name for i in path]
    return f"{graph.blocks[path[0]].anchor}: circular reference ({' -> '.join(names + names[:1])})"
