"""How much of a sheet is kept as dense grids: one home for the rule.

A sheet's cells are kept in dense numpy grids from A1 (fast slicing for the compiler), but only over the part
the cells actually fill: a grid may have at most :data:`DENSE_FACTOR` grid cells per occupied cell (or
:data:`DENSE_MIN` cells, always fine). A stray cell far away (a value at XFD20000, a note at the bottom of a
long sheet) is kept apart, sparsely, instead of sizing the grid: memory follows the file's content, never the
distance to its farthest cell.
"""

from __future__ import annotations

import numpy as np

DENSE_MIN = 1 << 20  # a grid of up to this many cells is always dense
DENSE_FACTOR = 8  # else at most this many grid cells per occupied cell


def dense_ok(rows: int, cols: int, occupied: int) -> bool:
    """Whether a rows x cols grid holding ``occupied`` cells may be dense."""
    return rows * cols <= max(DENSE_MIN, DENSE_FACTOR * occupied)


def core(rows: np.ndarray, cols: np.ndarray) -> tuple[int, int]:
    """(R, C): the rectangle A1:RC holding the bulk of the cells at (rows[i], cols[i]) within the density
    rule; the cells beyond it are the few far ones. (0, 0) when no rectangle is dense enough."""
    n = len(rows)
    if n == 0:
        return 0, 0
    R, C = int(rows.max()), int(cols.max())
    if dense_ok(R + 1, C + 1, n):
        return R, C
    for keep in (0.999, 0.99, 0.9, 0.5):
        R = int(np.quantile(rows, keep, method="higher"))
        C = int(np.quantile(cols, keep, method="higher"))
        inside = int(np.count_nonzero((rows <= R) & (cols <= C)))
        if dense_ok(R + 1, C + 1, inside):
            return R, C
    return 0, 0
