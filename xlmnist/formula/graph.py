"""Cell dependency graph over blocks.

A block is a rectangle of cells whose formulas are identical in relative (R1C1) form (a copied-down
column, a rows x cols area) or one array formula with its range. Blocks are found by grouping the
formula cells on their R1C1 text (dicts, linear time); names, structured references and OFFSET with
constant arguments are resolved to plain ``Ref`` nodes relative to the block's top-left cell (OFFSET
with cell-dependent offsets to a gather, :mod:`xlmnist.formula.offset`). A block reading its own
earlier cells (a running recurrence: ``C5 = C4 - lr*D4``, an unrolled optimiser sheet) is split into
one block per step when the graph is built (:mod:`xlmnist.formula.cycles`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from xlmnist.errors import FormulaError
from xlmnist.formula import parser as P
from xlmnist.formula.cycles import MAX_STEPS, cycle_message, split_false_cycles
from xlmnist.formula.offset import resolve_offset
from xlmnist.formula.r1c1 import r1c1_groups
from xlmnist.formula.shift import shift
from xlmnist.formula.structref import spec_items
from xlmnist.xlsx.reader import Workbook
from xlmnist.xlsx.refs import area_name, cell_name


@dataclass
class Block:
    id: int
    sheet: str
    r0: int
    c0: int
    R: int  # evaluation grid: rows x cols of cells sharing the formula (1 x 1 for an array formula)
    C: int
    out: tuple[int, int, int, int]  # the cells it writes (the array range for array formulas)
    array: bool = False
    step: bool = False  # one step (row or column) of a running recurrence (xlmnist.formula.cycles)
    origin: tuple[int, int] | None = None  # a step: the anchor of the block it was split from
    ast: object = None
    refs: list = field(default_factory=list)  # RefUse of every reference in the resolved AST
    deps: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return area_name(self.sheet, *self.out)

    @property
    def anchor(self) -> str:
        return cell_name(self.sheet, self.r0, self.c0)


@dataclass(frozen=True)
class RefUse:
    """A reference as seen from a block: the anchor cell's window and whether it moves with the cell."""

    sheet: str
    r1: int
    c1: int
    r2: int
    c2: int
    rrel: bool  # the window moves down with the block's rows
    crel: bool

    def footprint(self, R: int, C: int) -> tuple[int, int, int, int]:
        return self.r1, self.c1, self.r2 + (R - 1 if self.rrel else 0), self.c2 + (C - 1 if self.crel else 0)


def _rects(cells: list[tuple[int, int]]):
    """Split cells into rectangles: contiguous row runs per column, merged across adjacent columns."""
    bycol: dict[int, list[int]] = {}
    for r, c in cells:
        bycol.setdefault(c, []).append(r)
    runs: dict[tuple[int, int], list[int]] = {}
    for c, rows in bycol.items():
        rows.sort()
        start = prev = rows[0]
        for r in rows[1:]:
            if r != prev + 1:
                runs.setdefault((start, prev), []).append(c)
                start = r
            prev = r
        runs.setdefault((start, prev), []).append(c)
    for (ra, rb), cols in runs.items():
        cols.sort()
        start = prev = cols[0]
        for c in cols[1:]:
            if c != prev + 1:
                yield ra, start, rb, prev
                start = c
            prev = c
        yield ra, start, rb, prev


class Graph:
    """All formula blocks of a workbook, with a per-sheet grid of block ids for fast lookups."""

    def __init__(self, wb: Workbook):
        self.wb = wb
        self.blocks: list[Block] = []
        self.grid: dict[str, np.ndarray] = {}
        self._parsed: dict[tuple[str, int, int], object] = {}  # anchor cell -> its formula parsed
        for name in wb.order:
            self._build_sheet(name)
        self.splitting = True  # a block reading its own other cells is split (xlmnist.formula.cycles)
        split_false_cycles(self)
        self.splitting = False
        for b in self.blocks:  # a recurrence left whole (too long) is reported when it is compiled
            if b.id in b.deps:
                b.ast, b.refs, b.deps = None, [], []

    def _build_sheet(self, name: str) -> None:
        sh = self.wb.sheets[name]
        groups = r1c1_groups(sh)  # R1C1 key -> cells; one-cell array formulas group like copies ("\0" key)
        grid = np.full((sh.max_row + 2, sh.max_col + 2), -1, dtype=np.int32)
        self.grid[name] = grid
        for key, cells in groups.items():
            lone = key[0] == "\0" and len(cells) == 1  # a lone one-cell array formula stays an array
            for r1, c1, r2, c2 in _rects(cells):
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
            bigger = np.full((max(r2 + 2, grid.shape[0]), max(c2 + 2, grid.shape[1])), -1, dtype=np.int32)
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
        grid = self.grid.get(sheet)
        if grid is None or r >= grid.shape[0] or c >= grid.shape[1]:
            return None
        bid = int(grid[r, c])
        return None if bid < 0 else self.blocks[bid]

    def blocks_in(self, sheet: str, r1: int, c1: int, r2: int, c2: int) -> list[int]:
        grid = self.grid.get(sheet)
        if grid is None:
            return []
        sub = grid[r1 : r2 + 1, c1 : c2 + 1]
        if sub.size == 0:
            return []
        ids = np.unique(sub)
        return [int(i) for i in ids if i >= 0]

    # ---- per-block analysis -------------------------------------------------------------------------
    def analyse(self, b: Block) -> None:
        """Parse and resolve the block's formula, collect its references and dependencies."""
        if b.ast is not None:
            return
        b.ast = self.resolve(self._parse(b), b, depth=0)
        deps: set[int] = set()
        for use in b.refs:
            fp = use.footprint(b.R, b.C)
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
            return P.Call(node.name, tuple(self.resolve(a, b, depth) for a in node.args))
        if T is P.Binary:
            return P.Binary(node.op, self.resolve(node.left, b, depth), self.resolve(node.right, b, depth))
        if T is P.Unary:
            return P.Unary(node.op, self.resolve(node.operand, b, depth))
        if T is P.Percent:
            return P.Percent(self.resolve(node.operand, b, depth))
        return node

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
        table = self.wb.tables.get(node.table.upper())
        if table is None:
            raise FormulaError(f"{b.anchor}: unknown table {node.table!r}")
        tr1, tc1, tr2, tc2 = table.ref
        data1, data2 = tr1 + table.header_rows, tr2 - table.totals_rows
        items = spec_items(node.spec)
        specials = [s.upper() for s in items if s.startswith("#") or s == "@"]
        cols = [s for s in items if not (s.startswith("#") or s == "@")]
        this_row = "#THIS ROW" in specials or "@" in specials
        if this_row:
            r1 = r2 = b.r0
        elif "#ALL" in specials:
            r1, r2 = tr1, tr2
        else:
            want = set(specials) or {"#DATA"}
            rows = []
            if "#HEADERS" in want and table.header_rows:
                rows += [tr1]
            if "#DATA" in want:
                rows += [data1, data2]
            if "#TOTALS" in want and table.totals_rows:
                rows += [tr2]
            if not rows:
                raise FormulaError(f"{b.anchor}: bad structured reference {node.table}[{node.spec}]")
            r1, r2 = min(rows), max(rows)
        if cols:
            idx = []
            upper = [c.upper() for c in table.columns]
            for c in cols:
                for part in c.split("\x00"):
                    try:
                        idx.append(upper.index(part.upper()))
                    except ValueError:
                        raise FormulaError(f"{b.anchor}: table {table.name} has no column {part!r}") from None
            c1, c2 = tc1 + min(idx), tc1 + max(idx)
        else:
            c1, c2 = tc1, tc2
        rel = this_row
        return P.Ref(table.sheet, r1, c1, r2, c2, not rel, True, not rel, True)


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
