"""Read an xlsx workbook straight from its zip XML: values, formulas, tables, defined names.

openpyxl cannot load some real workbooks (pivot caches) and is slow on big sheets, so this walks the
sheet XML with ``iterparse``. Cells are keyed ``(row, col)``, both 1-based.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

from xlmnist import timing
from xlmnist.errors import WorkbookError
from xlmnist.xlsx import sheetxml
from xlmnist.xlsx.limits import LimitedZip
from xlmnist.xlsx.package import R_ID, M, defined_names, rels
from xlmnist.xlsx.refs import (
    XLError,  # noqa: F401 - the reader's error values; re-exported
    col_letters,
    parse_area,
    parse_cell,
)


@dataclass
class Table:
    name: str
    sheet: str
    ref: tuple[int, int, int, int]
    columns: list[str]
    header_rows: int = 1
    totals_rows: int = 0


@dataclass
class Sheet:
    name: str
    values: dict = field(default_factory=dict)  # (r, c) -> float | str | bool | XLError
    formulas: dict = field(default_factory=dict)  # (r, c) -> text without "=" (own text)
    shared: dict = field(default_factory=dict)  # (r, c) -> si, for cells that only point at a master
    masters: dict = field(default_factory=dict)  # si -> ((r, c), text)
    arrays: dict = field(default_factory=dict)  # anchor (r, c) -> (r1, c1, r2, c2)
    max_row: int = 0
    max_col: int = 0

    def formula(self, cell: tuple[int, int]) -> str | None:
        """The formula text of ``cell`` (shared formulas translated to the cell)."""
        text = self.formulas.get(cell)
        if text is not None or cell not in self.shared:
            return text
        (mr, mc), mtext = self.masters[self.shared[cell]]
        from openpyxl.formula.translate import Translator  # deferred: only for shared formulas

        dest = f"{col_letters(cell[1])}{cell[0]}"
        out = Translator("=" + mtext, origin=f"{col_letters(mc)}{mr}").translate_formula(dest)
        return out[1:]

    def master_text(self, cell: tuple[int, int]) -> tuple[tuple[int, int], str] | None:
        """(origin, text) of the formula whose relative form ``cell`` shares, without translating."""
        if cell in self.formulas:
            return cell, self.formulas[cell]
        si = self.shared.get(cell)
        return None if si is None else self.masters[si]

    def formula_cells(self):
        yield from self.formulas
        yield from self.shared


@dataclass
class Workbook:
    path: str
    sheets: dict[str, Sheet]
    order: list[str]
    tables: dict[str, Table]  # upper-case name -> Table
    names: dict[tuple[str | None, str], str]  # (sheet scope or None, upper name) -> text
    active: str | None = None

    def name(self, sheet: str | None, name: str) -> str | None:
        key = name.upper()
        if (sheet, key) in self.names:
            return self.names[(sheet, key)]
        return self.names.get((None, key))

    def sheet(self, name: str) -> Sheet:
        for s in self.order:
            if s.lower() == name.lower():
                return self.sheets[s]
        raise WorkbookError(f"{os.path.basename(self.path)}: no sheet named {name!r}")


def _shared_strings(z: LimitedZip, part: str | None) -> list[str]:
    if not part or part not in z.namelist():
        return []
    out = []
    with z.open(part) as fh:
        for _, el in ET.iterparse(fh):
            if el.tag == M + "si":
                out.append("".join(t.text or "" for t in el.iter(M + "t") if _not_phonetic(el, t)))
                el.clear()
    return out


def _not_phonetic(si, t) -> bool:
    return all(t not in list(rph.iter()) for rph in si.findall(M + "rPh"))


def _read_sheet(z: LimitedZip, part: str, sheet: Sheet, strings: list[str]) -> None:
    values, formulas, shared, masters, arrays = (
        sheet.values,
        sheet.formulas,
        sheet.shared,
        sheet.masters,
        sheet.arrays,
    )
    data = z.read(part)
    fast = sheetxml.parse(data, strings, XLError, sheet.name)
    if fast is not None:
        sheet.values, sheet.formulas, sheet.shared, sheet.masters, sheet.arrays, max_r, max_c = fast
        _drop_orphans(sheet)
        sheet.max_row, sheet.max_col = max_r, max_c
        return
    C, V, F, IS, T, ROW = M + "c", M + "v", M + "f", M + "is", M + "t", M + "row"
    max_r = max_c = 0
    with io.BytesIO(data) as fh:
        for _, el in ET.iterparse(fh):
            tag = el.tag
            if tag == ROW:
                el.clear()
                continue
            if tag != C:
                continue
            r, c = parse_cell(el.get("r"))
            t = el.get("t")
            v = el.find(V)
            f = el.find(F)
            if v is not None or f is not None or t == "inlineStr":  # a formatted empty cell is not content
                max_r = r if r > max_r else max_r
                max_c = c if c > max_c else max_c
            if v is not None and v.text is not None:
                values[(r, c)] = sheetxml.typed_value(t, v.text, strings, XLError)
            elif t == "inlineStr":
                is_ = el.find(IS)
                values[(r, c)] = "".join(x.text or "" for x in is_.iter(T)) if is_ is not None else ""
            if f is not None:
                sheetxml.add_formula(
                    r, c, f.get("t"), f.get("si"), f.get("ref"), f.text, formulas, shared, masters, arrays
                )
            el.clear()
    _drop_orphans(sheet)
    sheet.max_row, sheet.max_col = max_r, max_c


def _drop_orphans(sheet: Sheet) -> None:
    """Shared cells whose master is missing cannot be reconstructed; drop them (they keep their values)."""
    for cell in [k for k, si in sheet.shared.items() if si not in sheet.masters]:
        del sheet.shared[cell]


def _read_table(z: LimitedZip, part: str, sheet: str) -> Table:
    root = ET.fromstring(z.read(part))
    cols = [tc.get("name", "") for tc in root.iter(M + "tableColumn")]
    name = root.get("displayName") or root.get("name")
    return Table(
        name=name,
        sheet=sheet,
        ref=parse_area(root.get("ref")),
        columns=cols,
        header_rows=int(root.get("headerRowCount", "1")),
        totals_rows=int(root.get("totalsRowCount", "0")),
    )


def read_workbook(path: str | os.PathLike, defer=None) -> Workbook:
    """Read ``path``; raise :class:`WorkbookError` naming the file for anything that is not an xlsx.
    ``defer(name, xml, part, strings, parse, base) -> Sheet`` (:class:`xlmnist.xlsx.lazy.LazySheet`): each
    worksheet's XML is handed to it instead of being parsed now."""
    with timing.stage("read"):
        return _read_workbook(path, defer)


def _read_workbook(path: str | os.PathLike, defer=None) -> Workbook:
    path = os.fspath(path)
    base = os.path.basename(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise WorkbookError(f"{base}: cannot open workbook ({exc.strerror or exc})") from None
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise WorkbookError(f"{base}: encrypted or legacy .xls (OLE2) file, not an xlsx workbook")
    try:
        with zipfile.ZipFile(path) as z:
            return _read_zip(LimitedZip(z, base), path, defer)
    except zipfile.BadZipFile:
        raise WorkbookError(f"{base}: not an xlsx workbook (not a zip file)") from None
    except (KeyError, ET.ParseError, ValueError, IndexError) as exc:
        raise WorkbookError(f"{base}: corrupt xlsx workbook ({type(exc).__name__}: {exc})") from None


def _read_zip(z: LimitedZip, path: str, defer=None) -> Workbook:
    base = os.path.basename(path)
    names = set(z.namelist())
    wb_part = "xl/workbook.xml"
    if wb_part not in names:
        raise WorkbookError(f"{base}: not an xlsx workbook (no xl/workbook.xml)")
    root = ET.fromstring(z.read(wb_part))
    wb_rels = {rid: target for rid, (target, _) in rels(z, wb_part, names).items()}
    ss_part = next((t for t in wb_rels.values() if t.endswith("sharedStrings.xml")), None)
    strings = _shared_strings(z, ss_part)
    order, sheets, tables = [], {}, {}
    for s in root.iter(M + "sheet"):
        name, part = s.get("name"), wb_rels.get(s.get(R_ID))
        order.append(name)
        sheet = Sheet(name)
        sheets[name] = sheet
        if part is None or part not in names or "worksheet" not in part:
            continue  # chart sheets, dialog sheets
        if defer is not None:  # parsed on first use
            sheets[name] = defer(name, z.read(part), part, strings, _read_sheet, base)
        else:
            _read_sheet(z, part, sheet, strings)
        for target, _ in rels(z, part, names).values():
            if "/tables/" in target and target in names:
                table = _read_table(z, target, name)
                tables[table.name.upper()] = table
    defined = defined_names(root, order)
    active = None
    view = root.find(f"{M}bookViews/{M}workbookView")
    if view is not None and order:
        idx = int(view.get("activeTab", "0"))
        active = order[idx] if idx < len(order) else order[0]
    return Workbook(path=path, sheets=sheets, order=order, tables=tables, names=defined, active=active)
