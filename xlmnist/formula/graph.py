"""Cell dependency graph over blocks.

A block is a rectangle of cells whose formulas are identical in relative (R1C1) form (a copied-down
column, a rows x cols area) or one array formula with its range. Blocks are found by grouping the
formula cells on their R1C1 text (dicts, linear time); names, structured references and OFFSET with
constant arguments are resolved to plain ``Ref`` nodes relative to the block's top-left cell (OFFSET
with cell-dependent offsets to a gather, :mod:`xlmnist.formula.offset`). A block reading its own
earlier cells (a running recurrence: ``C5 = C4 - lr*D4``, an unrolled optimiser sheet) is split into
one block per step when the graph is built (:mod:`xlmnist.formula.cycles`); a step's formula is its
origin's, moved (:meth:`Graph._plain_step`: resolved without parsing or resolving it again).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from xlmnist.errors import FormulaError
from xlmnist.formula import parser as P
from xlmnist.formula.blocks import Block, RefUse, rects
from xlmnist.formula.cycles import MAX_STEPS, cycle_message, split_false_cycles
from xlmnist.formula.offset import resolve_offset
from xlmnist.formula.r1c1 import r1c1_groups
from xlmnist.formula.shift import shift
from xlmnist.formula.steps import POSITION, is_plain, template
from xlmnist.formula.structref import table_ref
from xlmnist.xlsx.extent import dense_ok
from xlmnist.xlsx.reader import Workbook


class Graph:
    """All formula blocks of a workbook, with a per-sheet grid of block ids for fast lookups."""

    def __init__(self, wb: Workbook):
        self.wb = wb
        self.blocks: list[Block] = []
        self.grid: dict[str, np.ndarray] = {}  # sheet -> block ids from A1 over the part formulas fill
        self.far: dict[str, list[int]] = {}  # sheet -> the blocks kept apart: a stray formula far away
        self._cells: dict[str, int] = {}  # sheet -> formula cells (the density rule of the grid)
        self._parsed: dict[tuple[str, int, int], object] = {}  # anchor cell -> its formula parsed
        self._plain: dict[tuple, tuple] = {}  # (id(parse), sheet, R, C) -> (parse, template): _plain_step
        for name in wb.order:
            self._build_sheet(name)
        self.scans: list = []  # running recurrences down the rows (xlmnist.formula.cycles.ScanPlan)
        self.splitting = True  # a block reading its own other cells is split (xlmnist.formula.cycles)
        split_false_cycles(self)
        self.splitting = False
        for b in self.blocks:  # a recurrence left whole (too long) is reported when it is compiled
            if b.id in b.deps:
                b.ast, b.refs, b.deps = None, [], []

    def _build_sheet(self, name: str) -> None:
        sh = self.wb.sheets[name]
        groups = r1c1_groups(sh)  # R1C1 key -> cells; one-cell array formulas group like copies ("\0" key)
        parts = [(key[0] == "\0" and len(cells) == 1, list(rects(cells))) for key, cells in groups.items()]
        self._cells[name] = n = sum(len(c) for c in groups.values()) + sum(
            (r2 - r1 + 1) * (c2 - c1 + 1) for r1, c1, r2, c2 in sh.arrays.values()
        )
        ends = [(r[2], r[3]) for _, rs in parts for r in rs] + [(a[2], a[3]) for a in sh.arrays.values()]
        R, C = max((e[0] for e in ends), default=0) + 2, max((e[1] for e in ends), default=0) + 2
        # the grid from A1 to the farthest formula, unless a stray one far away would make it sparse: then
        # it grows block by block within the density rule and the stray ones are kept apart (_add)
        self.grid[name] = np.full((R, C) if dense_ok(R, C, n) else (2, 2), -1, dtype=np.int32)
        for lone, rs in parts:  # lone: a one-cell array formula on its own stays an array
            for r1, c1, r2, c2 in rs:
                self._add(
                    Block(len(self.blocks), name, r1, c1, r2 - r1 + 1, c2 - c1 + 1, (r1, c1, r2, c2), lone)
                )
        for (r, c), (r1, c1, r2, c2) in sh.arrays.items():
            if (r1, c1, r2, c2) != (r, c, r, c):
                self._add(Block(len(self.blocks), name, r, c, 1, 1, (r1, c1, r2, c2), array=True))

    def _add(self, b: Block) -> None:
        self.blocks.append(b)
        r1, c1, r2, c2 = b.out
        grid = self.grid[b.sheet]
        if r2 >= grid.shape[0] or c2 >= grid.shape[1]:
            shape = (max(r2 + 2, grid.shape[0]), max(c2 + 2, grid.shape[1]))
            if not dense_ok(*shape, self._cells.get(b.sheet, 0)):  # a stray formula far away: kept apart
                self.far.setdefault(b.sheet, []).append(b.id)
                return
            bigger = np.full(shape, -1, dtype=np.int32)
            bigger[: grid.shape[0], : grid.shape[1]] = grid
            grid = self.grid[b.sheet] = bigger
        grid[r1 : r2 + 1, c1 : c2 + 1] = b.id

    def split_rows(self, sheet: str, bounds: tuple[int, ...]) -> list[int]:
        """Split every copied block of ``sheet`` whose rows straddle one of ``bounds`` (a block then
        starts at that row), so a part can be row-aligned with a data range while the rest stays a
        constant. The cells and their formulas are unchanged; returns the ids of the new blocks."""
        new: list[int] = []
        for b in list(self.blocks):
            if b.sheet != sheet or b.array:
                continue
            r1, c1, r2, c2 = b.out
            cuts = sorted(k for k in set(bounds) if r1 < k <= r2)
            if not cuts:
                continue
            edges = [r1, *cuts, r2 + 1]
            b.R, b.out = edges[1] - r1, (r1, c1, edges[1] - 1, c2)
            for a, z in zip(edges[1:-1], edges[2:]):
                part = Block(len(self.blocks), sheet, a, c1, z - a, b.C, (a, c1, z - 1, c2))
                self._add(part)
                new.append(part.id)
        if new:  # analyses made before the split name the old extents: redo them when needed
            for b in self.blocks:
                b.ast, b.refs, b.deps = None, [], []
        return new

    def split_block(self, b: Block, across: str) -> None:
        """Split ``b`` into one block per column (``across="columns"``) or per row (``"rows"``): the
        steps of a running recurrence (or a false cycle's parts), marked ``step``."""
        r1, c1, r2, c2 = b.out
        if across == "columns":
            parts = [(r1, c, r2, c) for c in range(c1, c2 + 1)]
        else:
            parts = [(r, c1, r, c2) for r in range(r1, r2 + 1)]
        b.R, b.C, b.out, b.step = parts[0][2] - r1 + 1, parts[0][3] - c1 + 1, parts[0], True
        origin = b.origin or (b.r0, b.c0)
        for a1, d1, a2, d2 in parts[1:]:
            part = Block(len(self.blocks), b.sheet, a1, d1, a2 - a1 + 1, d2 - d1 + 1, (a1, d1, a2, d2))
            part.step, part.origin = True, origin
            self._add(part)
        for x in self.blocks:  # the dependencies on it name the old extents (the others are unchanged)
            if x is b or b.id in x.deps:
                x.ast, x.refs, x.deps = None, [], []

    def block_at(self, sheet: str, r: int, c: int) -> Block | None:
        bid = int(self.ids(sheet, r, c, r, c)[0, 0])
        return None if bid < 0 else self.blocks[bid]

    def blocks_in(self, sheet: str, r1: int, c1: int, r2: int, c2: int) -> list[int]:
        if r2 < r1 or c2 < c1:
            return []
        return [int(i) for i in np.unique(self.ids(sheet, r1, c1, r2, c2)) if i >= 0]

    def ids(self, sheet: str, r1: int, c1: int, r2: int, c2: int, out: np.ndarray | None = None):
        """The block id of every cell of the rectangle (-1: no formula), the far blocks included; with
        ``out`` (a grid from A1), the far blocks are painted into it where they fall."""
        if out is None:
            grid = self.grid.get(sheet)
            out = np.full((r2 - r1 + 1, c2 - c1 + 1), -1, dtype=np.int32)
            if grid is not None:
                sub = grid[r1 : r2 + 1, c1 : c2 + 1]
                out[: sub.shape[0], : sub.shape[1]] = sub
        else:
            r1, c1, r2, c2 = 0, 0, out.shape[0] - 1, out.shape[1] - 1
        for bid in self.far.get(sheet, ()):
            a1, b1, a2, b2 = self.blocks[bid].out
            if a1 <= r2 and b1 <= c2 and a2 >= r1 and b2 >= c1:
                out[max(a1, r1) - r1 : a2 - r1 + 1, max(b1, c1) - c1 : b2 - c1 + 1] = bid
        return out

    # ---- per-block analysis -------------------------------------------------------------------------
    def analyse(self, b: Block) -> None:
        """Parse and resolve the block's formula, collect its references and dependencies."""
        if b.ast is not None:
            return
        plain = self._plain_step(b)
        b.ast = plain[0](plain[1], plain[2], b.refs) if plain else self.resolve(self._parse(b), b, depth=0)
        deps: set[int] = set()
        for use in b.refs:
            fp = use.footprint(b.R, b.C)
            if fp[0] == fp[2] and fp[1] == fp[3]:  # one cell (most references of a recurrence's steps)
                one = self.block_at(use.sheet, fp[0], fp[1])
                if one is not None:
                    deps.add(one.id)
                continue
            grid = self.grid.get(use.sheet)
            if grid is not None and (fp[2] - fp[0] + 1) * (fp[3] - fp[1] + 1) <= 256:
                sub = grid[fp[0] : fp[2] + 1, fp[1] : fp[3] + 1]
                if sub.size == 0 or sub.max() < 0:  # a small range without formulas (data, constants)
                    continue
            for bid in self.blocks_in(use.sheet, *fp):
                deps.add(bid)
        if b.id in deps:
            self._self_dependency(b)
        b.deps = sorted(deps)

    def _parse(self, b: Block):
        """The block's formula parsed; a step's is its origin's parse shifted (the same relative formula),
        so a recurrence of N rows is parsed once, not N times."""
        key = (b.sheet, b.r0, b.c0)
        ast = self._parsed.get(key)
        if ast is None:
            src = None if b.origin is None else self._parsed.get((b.sheet, *b.origin))
            if src is not None:
                ast = shift(src, b.r0 - b.origin[0], b.c0 - b.origin[1])
            else:
                ast = P.parse(self.wb.sheets[b.sheet].formula((b.r0, b.c0)), b.anchor)
            self._parsed[key] = ast
        return ast

    def _plain_step(self, b: Block):
        """For a step whose formula holds only references, literals, operators and functions (no names,
        tables, OFFSET, whole rows/columns or mixed $ ranges): a function ``(rows, cols, refs) -> its
        resolved formula`` built once per origin and step shape, which moves the origin's references
        ``rows`` down and ``cols`` right (what ``resolve(shift(parse))`` gives, without either walk),
        with the offsets; None for anything else."""
        if b.origin is None:
            return None
        src = self._parsed.get((b.sheet, *b.origin))
        if src is None:
            return None
        key = (id(src), b.sheet, b.R, b.C)
        got = self._plain.get(key)
        if got is None:
            make = template(src, b, self) if is_plain(src) else None
            got = self._plain[key] = (src, make)  # src kept: its id stays unique
        if got[1] is None:
            return None
        return got[1], b.r0 - b.origin[0], b.c0 - b.origin[1]

    def _self_dependency(self, b: Block) -> None:
        """A block reading its own cells: its own cell is a circular reference; another of its cells is
        a running recurrence (``C5 = C4 - lr*D4``), which the graph splits into one block per step while
        it is built (kept as a self-dependency then), and reports here only when it was too long."""
        for use in b.refs:
            if use.sheet != b.sheet:
                continue
            r1, c1, r2, c2 = use.r1, use.c1, use.r2, use.c2
            if r1 <= b.r0 <= r2 and c1 <= b.c0 <= c2 and (use.rrel or b.R == 1) and (use.crel or b.C == 1):
                raise FormulaError(f"{b.anchor}: circular reference (the formula refers to its own cell)")
        if getattr(self, "splitting", False):
            return
        raise FormulaError(
            f"{b.anchor}: the copied formula in {b.name} refers to other cells of its own column/row "
            f"(a running recurrence) over more than {MAX_STEPS} steps; not supported"
        )

    def resolve(self, node, b: Block, depth: int):
        if depth > 50:
            raise FormulaError(f"{b.anchor}: defined names nested too deeply (circular name?)")
        T = type(node)
        if T is P.Ref:
            sheet = node.sheet or b.sheet
            if sheet not in self.wb.sheets:
                raise FormulaError(f"{b.anchor}: reference to a missing sheet {sheet!r}")
            sh = self.wb.sheets[sheet]
            r2 = node.r2
            if node.r2 == P.MAX_ROW and node.ar2:
                r2 = max(node.r1, sh.max_row)
            c2 = node.c2
            if node.c2 == P.MAX_COL and node.ac2:
                c2 = max(node.c1, sh.max_col)
            rrel = self._rel(node.ar1, node.ar2, b.R, b, "row")
            crel = self._rel(node.ac1, node.ac2, b.C, b, "column")
            use = RefUse(sheet, node.r1, node.c1, r2, c2, rrel, crel)
            b.refs.append(use)
            return use
        if T is P.Name:
            text = self.wb.name(node.sheet or b.sheet, node.name)
            if text is None:
                raise FormulaError(f"{b.anchor}: unknown name {node.name!r} (#NAME?)")
            inner = P.parse(text, f"{b.anchor} (name {node.name})")
            if isinstance(inner, P.Ref) and inner.sheet is None and node.sheet:
                inner = replace(inner, sheet=node.sheet)
            return self.resolve(inner, b, depth + 1)
        if T is P.StructRef:
            return self.resolve(self.struct_ref(node, b), b, depth + 1)
        if T is P.Call:
            if node.name == "SINGLE" and len(node.args) == 1:
                return self.resolve(self._single(node.args[0], b), b, depth + 1)
            if node.name == "OFFSET":
                return self.resolve(self._offset(node, b), b, depth + 1)
            if node.name in POSITION:  # ROW(K12) reads K12's position, not its value: no dependency
                n = len(b.refs)
                args = tuple(self.resolve(a, b, depth) for a in node.args)
                del b.refs[n:]
                return P.Call(node.name, args)
        return P.map_operands(node, lambda a: self.resolve(a, b, depth))

    @staticmethod
    def _rel(abs1: bool, abs2: bool, n: int, b: Block, what: str) -> bool:
        if n == 1:
            return False
        if abs1 != abs2:
            raise FormulaError(
                f"{b.anchor}: mixed absolute/relative {what} range (a growing range) is not supported"
            )
        return not abs1

    def _single(self, arg, b: Block):
        """``@x`` / ``_xlfn.SINGLE(x)``: implicit intersection with the formula's own row."""
        if isinstance(arg, P.StructRef):
            arg = self.struct_ref(arg, b)
        if isinstance(arg, P.Ref) and arg.r1 != arg.r2 and arg.c1 == arg.c2:
            return replace(arg, r1=b.r0, r2=b.r0, ar1=False, ar2=False)
        return arg

    def _offset(self, node: P.Call, b: Block):
        return resolve_offset(self, node, b)

    def struct_ref(self, node: P.StructRef, b: Block) -> P.Ref:
        return table_ref(self.wb, node, b)


def topo_order(graph: Graph, roots: list[int]) -> list[int]:
    """Blocks needed for ``roots``, dependencies first; FormulaError naming a cell on a cycle."""
    order, state = [], {}
    for root in roots:
        if state.get(root) == 2:
            continue
        stack = [(root, iter(()))]
        graph.analyse(graph.blocks[root])
        stack = [(root, iter(graph.blocks[root].deps))]
        state[root] = 1
        while stack:
            bid, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                state[bid] = 2
                order.append(bid)
                continue
            st = state.get(nxt)
            if st == 1:
                path = [i for i, _ in stack]
                raise FormulaError(cycle_message(graph, path[path.index(nxt) :]))
            if st == 2:
                continue
            graph.analyse(graph.blocks[nxt])
            state[nxt] = 1
            stack.append((nxt, iter(graph.blocks[nxt].deps)))
    return order
