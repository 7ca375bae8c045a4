"""Blocks and references: the cells sharing one relative formula (a :class:`Block`), a reference as seen
from a block (:class:`RefUse`), and formula cells split into rectangles (:func:`rects`)."""

from __future__ import annotations

from dataclasses import dataclass, field

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


def rects(cells: list[tuple[int, int]]):
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
