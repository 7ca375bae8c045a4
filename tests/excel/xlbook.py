"""Test helper: xlwings remote-engine payloads built from a workbook's values (as a spreadsheet computed them)."""

from __future__ import annotations

import numpy as np
import xlwings as xw

from xlmnist.excel.cells import split_ref, write_actions_to_values
from xlmnist.xlsx.reader import read_workbook
from xlmnist.xlsx.refs import col_letters, parse_area, parse_cell


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


def file_values(path) -> dict:
    """{sheet: {"A1": value}}: the file's cached values, what Excel shows for a saved, recalculated book."""
    wb = read_workbook(path)
    return {
        s: {f"{col_letters(c)}{r}": v for (r, c), v in wb.sheets[s].values.items()} or {"A1": None}
        for s in wb.order
    }


def open_book(path, active, live=None, values=None):
    """The saved workbook ``path`` open on the remote engine, ``live`` cells typed in but not saved."""
    return xw.Book(json=make_payload(values or file_values(path), str(path), active, live))


def written(book) -> dict:
    """{range: block} of the book's setValues actions (empty cells as NaN)."""
    names = [s.name for s in book.sheets]
    out = {}
    for a in book.json()["actions"]:
        if a["func"] == "setValues":
            block = np.array(
                [[np.nan if v in (None, "") else v for v in row] for row in a["values"]], dtype=float
            )
            out.update(write_actions_to_values([{**a, "values": block}], names))
    return out
