"""Which sheet of a workbook is the model (the one Solver or xlmnist names point at) and its training
defaults from the ``settings`` sheet."""

from __future__ import annotations

import os

from xlmnist.errors import WorkbookError


def pick_sheet(wb, sheet: str | None) -> str:
    def has(s):
        return wb.names.get((s, "XLMNIST_OBJECTIVE")) or wb.names.get((s, "SOLVER_OPT"))

    if sheet is not None:
        for s in wb.order:
            if s.lower() == sheet.lower():
                return s
        raise WorkbookError(f"{os.path.basename(wb.path)}: no sheet named {sheet!r}")
    if wb.active and has(wb.active):
        return wb.active
    for s in wb.order:
        if has(s):
            return s
    return wb.active or wb.order[0]


def read_settings(wb, sheet: str) -> dict:
    """Rows of the ``settings`` sheet (header sheet | setting | value) for ``sheet``."""
    st = next((wb.sheets[s] for s in wb.order if s.lower() == "settings"), None)
    if st is None:
        return {}
    header = None
    out = {}
    rows: dict[int, dict[int, object]] = {}
    for (r, c), v in st.values.items():
        rows.setdefault(r, {})[c] = v
    for r in sorted(rows):
        cells = rows[r]
        if header is None:
            low = {c: str(v).strip().lower() for c, v in cells.items() if isinstance(v, str)}
            if {"sheet", "setting", "value"} <= set(low.values()):
                header = {name: c for c, name in low.items()}
            continue
        if str(cells.get(header["sheet"], "")).strip().lower() != sheet.lower():
            continue
        key = cells.get(header["setting"])
        if not isinstance(key, str) or not key.strip():
            continue
        val = cells.get(header["value"])
        if isinstance(val, float) and val.is_integer():
            val = int(val)
        out[key.strip()] = "" if val is None else val
    return out
