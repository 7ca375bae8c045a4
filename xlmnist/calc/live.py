"""The open Calc document as the reader's :class:`~xlmnist.xlsx.reader.Workbook`, and values written back.

Reading takes a handful of UNO calls per sheet, none per cell: the values of the used area
(``getDataArray``), the formula cells (``queryContentCells(FORMULA)``, then ``getFormulaArray`` per
formula range, translated to Excel's syntax by :mod:`xlmnist.calc.formula`), one cursor per array formula
(its extent), and the workbook- and sheet-scoped named ranges. Nothing is saved: what the compiler sees
is what the document holds now, edits included. Writing is one ``setDataArray`` per block (a block with
cleared cells: one ``clearContents`` and one call per run of filled cells in each column); Calc then
recalculates the formulas that depend on it.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlparse

from xlmnist.calc.formula import excel_formula, excel_reference
from xlmnist.errors import WorkbookError
from xlmnist.xlsx.reader import Sheet, Workbook, XLError
from xlmnist.xlsx.refs import col_letters, parse_area

FORMULA = 16  # com.sun.star.sheet.CellFlags.FORMULA
CLEAR = 1 | 2 | 4 | 16  # VALUE | DATETIME | STRING | FORMULA
ERRORS = {532: "#DIV/0!", 503: "#NUM!", 502: "#VALUE!", 519: "#VALUE!", 524: "#REF!", 525: "#NAME?",
          32767: "#N/A", 504: "#VALUE!"}  # fmt: skip
_FAST = (".", "'", '"', "{", "|", "()")


def document_path(doc) -> str:
    """The document's file (for messages and exports), or its title when it was never saved."""
    url = doc.URL or ""
    if url.startswith("file:"):
        return unquote(urlparse(url).path)
    return doc.Title or "Untitled"


def convert(text: str) -> str:
    """:func:`excel_formula`, with a fast path for the common text that only needs ``;`` -> ``,``."""
    if text.startswith("=") and not any(s in text for s in _FAST):
        return text[1:].replace(";", ",")
    return excel_formula(text)


def _read_sheet(sh, sheet: Sheet) -> None:
    cur = sh.createCursor()
    cur.gotoEndOfUsedArea(False)
    end = cur.RangeAddress
    sheet.max_row, sheet.max_col = end.EndRow + 1, end.EndColumn + 1
    data = sh.getCellRangeByPosition(0, 0, end.EndColumn, end.EndRow).getDataArray()
    values = sheet.values
    for i, row in enumerate(data, 1):
        for j, v in enumerate(row, 1):
            if v is None:  # an error value
                code = sh.getCellByPosition(j - 1, i - 1).getError()
                values[(i, j)] = XLError(ERRORS.get(code, "#VALUE!"))
            elif v != "":
                values[(i, j)] = v
    covered: set[tuple[int, int]] = set()
    for a in sh.queryContentCells(FORMULA).getRangeAddresses():
        texts = sh.getCellRangeByPosition(a.StartColumn, a.StartRow, a.EndColumn, a.EndRow).getFormulaArray()
        for i, row in enumerate(texts):
            r = a.StartRow + 1 + i
            for j, text in enumerate(row):
                c = a.StartColumn + 1 + j
                if not text.startswith("{="):
                    sheet.formulas[(r, c)] = convert(text)
                elif (r, c) not in covered:  # the first cell seen of an array formula is its anchor
                    cursor = sh.createCursorByRange(sh.getCellByPosition(c - 1, r - 1))
                    cursor.collapseToCurrentArray()
                    x = cursor.RangeAddress
                    area = (x.StartRow + 1, x.StartColumn + 1, x.EndRow + 1, x.EndColumn + 1)
                    sheet.formulas[area[:2]] = excel_formula(text)
                    sheet.arrays[area[:2]] = area
                    covered.update(
                        (rr, cc) for rr in range(area[0], area[2] + 1) for cc in range(area[1], area[3] + 1)
                    )


def _names(container, scope, out: dict) -> None:
    for name in container.ElementNames:
        out[(scope, name.upper())] = excel_reference(container.getByName(name).Content)


def read_document(doc) -> Workbook:
    """The document as a ``Workbook`` (no tables: Calc has already turned structured references into
    plain ones). ``active`` is the sheet the user is looking at."""
    sheets, order, names = {}, [], {}
    container = doc.Sheets
    for k in range(container.Count):
        sh = container.getByIndex(k)
        sheet = Sheet(sh.Name)
        _read_sheet(sh, sheet)
        sheets[sh.Name] = sheet
        order.append(sh.Name)
        local = getattr(sh, "NamedRanges", None)
        if local is not None:
            _names(local, sh.Name, names)
    _names(doc.NamedRanges, None, names)
    active = None
    try:
        active = doc.CurrentController.ActiveSheet.Name
    except Exception:  # noqa: BLE001 - a document without a view
        pass
    return Workbook(
        path=document_path(doc), sheets=sheets, order=order, tables={}, names=names, active=active
    )


def _split(ref: str) -> tuple[str, tuple[int, int, int, int]]:
    sheet, _, addr = ref.rpartition("!")
    if sheet.startswith("'") and sheet.endswith("'"):
        sheet = sheet[1:-1].replace("''", "'")
    return sheet, parse_area(addr.replace("$", ""))


def _rows(block) -> list[list]:
    rows = block.tolist() if hasattr(block, "tolist") else [list(r) for r in block]
    return [r if isinstance(r, list) else [r] for r in rows]


def write_values(doc, values: dict) -> int:
    """Write ``{"sheet!A1:B2": 2-D values}`` (floats; ``None`` clears a cell); returns the UNO calls made."""
    calls = 0
    for ref, block in values.items():
        sheet, (r1, c1, r2, c2) = _split(ref)
        try:
            sh = doc.Sheets.getByName(sheet)
        except Exception:  # noqa: BLE001 - NoSuchElementException
            raise WorkbookError(
                f"{sheet}!{col_letters(c1)}{r1}: no such sheet in the open document"
            ) from None
        rows = _rows(block)
        if len(rows) != r2 - r1 + 1 or any(len(r) != c2 - c1 + 1 for r in rows):
            raise WorkbookError(f"{ref}: {len(rows)} rows of values do not fit the range")
        rng = sh.getCellRangeByPosition(c1 - 1, r1 - 1, c2 - 1, r2 - 1)
        if all(v is not None for r in rows for v in r):
            rng.setDataArray(tuple(tuple(float(v) for v in r) for r in rows))
            calls += 1
            continue
        rng.clearContents(CLEAR)
        calls += 1
        for j in range(c2 - c1 + 1):  # one call per run of filled cells in each column
            i = 0
            while i < len(rows):
                if rows[i][j] is None:
                    i += 1
                    continue
                k = i
                while k < len(rows) and rows[k][j] is not None:
                    k += 1
                part = sh.getCellRangeByPosition(c1 - 1 + j, r1 - 1 + i, c1 - 1 + j, r1 - 2 + k)
                part.setDataArray(tuple((float(rows[x][j]),) for x in range(i, k)))
                calls += 1
                i = k
    return calls


def check_protection(doc, sheet: str) -> None:
    if doc.Sheets.getByName(sheet).isProtected():
        raise WorkbookError(
            f"{sheet}!A1: the sheet is protected; unprotect it (Tools > Protect Sheet) and run again"
        )


_END_ROW = re.compile(r"^(.*:\$?[A-Z]{1,3}\$?)(\d+)$")


def _fitted(provider, seq, first: int, last: int, filled: int):
    """A copy of data sequence ``seq`` ending at row ``filled``, or None when it is not a history range."""
    m = _END_ROW.match(seq.SourceRangeRepresentation if seq is not None else "")
    if not m or not (first <= int(m.group(2)) <= last) or int(m.group(2)) == filled:
        return None
    new = provider.createDataSequenceByRangeRepresentation(f"{m.group(1)}{filled}")
    new.Role = seq.Role
    return new


def fit_charts(doc, sheet: str, first: int, last: int, filled: int) -> int:
    """Let the charts on ``sheet`` that plot rows ``first..last`` (a history block) end at row ``filled``:
    their x axis then covers exactly the epochs written. Returns the data sequences changed."""
    changed = 0
    charts = doc.Sheets.getByName(sheet).Charts
    for name in charts.ElementNames:
        chart = charts.getByName(name).EmbeddedObject
        provider = chart.getDataProvider()
        for system in chart.getFirstDiagram().getCoordinateSystems():
            for kind in system.getChartTypes():
                for series in kind.getDataSeries():
                    for labelled in series.getDataSequences():
                        new = _fitted(provider, labelled.getValues(), first, last, filled)
                        if new is not None:
                            labelled.setValues(new)
                            changed += 1
            axis = system.getAxisByDimension(0, 0)
            scale = axis.getScaleData()
            if scale.Categories is not None:
                new = _fitted(provider, scale.Categories.getValues(), first, last, filled)
                if new is not None:
                    scale.Categories.setValues(new)
                    axis.setScaleData(scale)
                    changed += 1
    return changed
