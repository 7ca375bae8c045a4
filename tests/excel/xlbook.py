"""Test helper: xlwings remote-engine payloads built from a workbook's values (as a spreadsheet computed them)."""

from __future__ import annotations

import numpy as np
import xlwings as xw

from xlmnist.excel.cells import split_ref
from xlmnist.xlsx.refs import parse_area, parse_cell


def make_payload(values: dict, name: str, active: str, live: dict | None = None) -> dict:
    """The remote engine's book payload: each sheet's values as a 2-D list anchored at A1."""
    sheets = []
    for sheet, cells in values.items():
        grid_cells = {parse_cell(a): v for a, v in cells.items()}
        for ref, arr in (live or {}).items():
            s, addr = split_ref(ref)
            if s == sheet:
                r1, c1, _, _ = parse_area(addr)
                for (i, j), v in np.ndenumerate(np.array(arr, dtype=object, ndmin=2)):
                    grid_cells[(r1 + i, c1 + j)] = v
        nr = max(r for r, _ in grid_cells)
        nc = max(c for _, c in grid_cells)
        grid = [[None] * nc for _ in range(nr)]
        for (r, c), v in grid_cells.items():
            grid[r - 1][c - 1] = v
        sheets.append({"name": sheet, "values": grid, "pictures": [], "tables": []})
    return {
        "client": "Microsoft Office Scripts",
        "version": xw.__version__,
        "book": {"name": name, "active_sheet_index": list(values).index(active), "selection": "A1"},
        "names": [],
        "sheets": sheets,
    }
