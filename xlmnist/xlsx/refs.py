"""Cell and area references: column letters <-> numbers, ``sheet!A1`` text <-> numbers, quoting.

The one home for these conversions; rows and columns are 1-based and areas are inclusive
``(row1, col1, row2, col2)`` with ``row1 <= row2`` and ``col1 <= col2``.
"""

from __future__ import annotations

import re

from xlmnist.errors import WorkbookError


class XLError(str):
    """An Excel error value as a cell holds it (``#DIV/0!``, ``#N/A`` ...)."""


MAX_ROW, MAX_COL = 1048576, 16384
_CELL = re.compile(r"\$?([A-Za-z]{1,3})\$?(\d+)$")
_AREAS = re.compile(r"(?:'(?:[^']|'')*'|[^,])+")
_COLS: dict[str, int] = {}


def col_index(letters: str) -> int:
    """``"AA"`` -> 27."""
    n = _COLS.get(letters)
    if n is None:
        n = 0
        for ch in letters.upper():
            n = n * 26 + ord(ch) - 64
        _COLS[letters] = n
    return n


def col_letters(n: int) -> str:
    """27 -> ``"AA"``."""
    s = ""
    while n:
        n, r = divmod(n - 1, 26)
        s = chr(65 + r) + s
    return s


def parse_cell(ref: str) -> tuple[int, int]:
    """``"$B$3"`` -> (3, 2); ValueError for anything else."""
    m = _CELL.match(ref)
    if not m:
        raise ValueError(ref)
    return int(m.group(2)), col_index(m.group(1))


def parse_area(ref: str) -> tuple[int, int, int, int]:
    """``"B3:A1"`` -> (1, 1, 3, 2); a single cell is a 1x1 area."""
    a, _, b = ref.partition(":")
    r1, c1 = parse_cell(a)
    r2, c2 = parse_cell(b) if b else (r1, c1)
    return min(r1, r2), min(c1, c2), max(r1, r2), max(c1, c2)


def quote_sheet(sheet: str) -> str:
    """A sheet name as a formula writes it: ``my sheet`` -> ``'my sheet'``."""
    return sheet if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", sheet) else "'" + sheet.replace("'", "''") + "'"


def unquote_sheet(sheet: str) -> str:
    """``'it''s'`` -> ``it's``; an unquoted name is returned as it is."""
    if len(sheet) >= 2 and sheet.startswith("'") and sheet.endswith("'"):
        return sheet[1:-1].replace("''", "'")
    return sheet


def cell_name(sheet: str, r: int, c: int) -> str:
    return f"{quote_sheet(sheet)}!{col_letters(c)}{r}"


def area_name(sheet: str, r1: int, c1: int, r2: int, c2: int) -> str:
    a = f"{col_letters(c1)}{r1}"
    return (
        f"{quote_sheet(sheet)}!{a}"
        if (r1, c1) == (r2, c2)
        else f"{quote_sheet(sheet)}!{a}:{col_letters(c2)}{r2}"
    )


def split_sheet(ref: str) -> tuple[str, str]:
    """``"'my sheet'!$R$4:$AA$5"`` -> ``("my sheet", "R4:AA5")`` (quotes and ``$`` removed)."""
    sheet, _, addr = ref.rpartition("!")
    return unquote_sheet(sheet), addr.replace("$", "")


def split_ref(ref: str) -> tuple[str, int, int, int, int]:
    """``"'my sheet'!$R$4:$AA$5"`` -> (sheet, row1, col1, row2, col2); WorkbookError naming ``ref``."""
    if "!" not in ref:
        raise WorkbookError(f"{ref}: a cell reference must name its sheet, like nnet!R4:AA5")
    sheet, addr = split_sheet(ref)
    parts = addr.split(":")
    if len(parts) > 2:
        raise WorkbookError(f"{ref}: not a cell or range reference")
    try:
        r1, c1, r2, c2 = parse_area(addr)
    except ValueError:
        raise WorkbookError(f"{ref}: not a cell or range reference") from None
    if r1 < 1 or r2 > MAX_ROW or c2 > MAX_COL:
        raise WorkbookError(f"{ref}: outside the sheet")
    return sheet, r1, c1, r2, c2


def split_areas(text: str) -> list[str]:
    """``"h!$A$3:$E$202,'a,b'!$G$3"`` -> ``["h!$A$3:$E$202", "'a,b'!$G$3"]`` (a leading ``=`` dropped)."""
    return [a.strip() for a in _AREAS.findall(text.strip().lstrip("=")) if a.strip()]
