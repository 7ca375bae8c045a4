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
(a hypergradient for the learning-rate cell). The steps are marked ``step``: the lowering runs their
closures (noted at ``XLMNIST_DEBUG=3``). A longer recurrence stays whole and is reported when compiled.
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
