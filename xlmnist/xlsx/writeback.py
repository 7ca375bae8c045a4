"""Surgical, atomic write-back of cell values into an xlsx file.

``write_values(path, {"nnet!R4:AA5": array, "linear!A1": 0.5}, out=None)`` writes numbers into the
given cells and changes nothing else:

* every zip member other than the edited worksheets and ``xl/workbook.xml`` is copied with the same
  name, date, attributes, compression method and identical bytes;
* in an edited worksheet only the written cells change: their ``<v>`` text (``repr(float)``, the
  shortest string that round-trips), a dropped ``t`` attribute where the cell held a string/bool, and
  newly inserted ``<c>`` (and ``<row>``) elements for cells that did not exist yet (then the
  ``<dimension>`` is widened if needed). The XML is edited as bytes: no DOM of the whole sheet;
* ``xl/workbook.xml`` gets ``fullCalcOnLoad="1"`` on its ``<calcPr>`` (inserted if absent). This is how
  the written file shows the new results: the cached ``<v>`` of formula cells is left as it was (stale)
  and Excel/LibreOffice recalculate every formula when they open the file.

A target cell that holds a formula (or lies inside an array formula's range) is refused with an error
naming it, and so is a value that is NaN or infinite. ``None`` in a value array *clears* that cell (its
``<v>`` and type go, the ``<c>`` and its style stay; used for history rows beyond a shorter run).

``write_values(path, {}, cached={"linear!B10:F209": array})`` (or :func:`write_cached_values`) writes
the *cached results* of formula cells: the ``<f>`` element stays as it is and the ``<v>`` is replaced
or inserted, so a program that shows cached values without recalculating (LibreOffice's default for
xlsx) shows the new results. Every target must hold a formula or lie inside an array formula's range;
``None`` in a cached array leaves that cell as it is. The new file is written to a temporary file in
the same folder, fsynced and moved over the target with ``os.replace``: a failure at any point leaves the
original untouched and no temporary file behind.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
import tempfile
import zipfile
import zlib
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np

from xlmnist.errors import WorkbookError
from xlmnist.xlsx.reader import col_index as col_number  # noqa: F401 - re-exported
from xlmnist.xlsx.reader import col_letters  # noqa: F401 - re-exported

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"

_CELL_RE = re.compile(r"^\$?([A-Za-z]{1,3})\$?(\d+)$")
_REF_RE = re.compile(rb'\sr="([A-Za-z]{1,3})(\d+)"')


# ----------------------------------------------------------------------------------------- refs
def split_ref(ref: str) -> tuple[str, int, int, int, int]:
    """``"'my sheet'!$R$4:$AA$5"`` -> (sheet, row1, col1, row2, col2) (1-based, inclusive)."""
    if "!" not in ref:
        raise WorkbookError(f"{ref}: a cell reference must name its sheet, like nnet!R4:AA5")
    sheet, _, cells = ref.rpartition("!")
    if sheet.startswith("'") and sheet.endswith("'") and len(sheet) >= 2:
        sheet = sheet[1:-1].replace("''", "'")
    parts = cells.split(":")
    if len(parts) > 2 or not all(_CELL_RE.match(p) for p in parts):
        raise WorkbookError(f"{ref}: not a cell or range reference")
    (c1, r1), (c2, r2) = (_CELL_RE.match(parts[0]).groups(), _CELL_RE.match(parts[-1]).groups())
    row1, row2 = sorted((int(r1), int(r2)))
    col1, col2 = sorted((col_number(c1), col_number(c2)))
    if row1 < 1 or row2 > 1048576 or col2 > 16384:
        raise WorkbookError(f"{ref}: outside the sheet")
    return sheet, row1, col1, row2, col2


def _cells_of(ref: str, value, op: str = "v") -> tuple[str, dict[tuple[int, int], tuple]]:
    """``{(row, col): (op, x)}``: op ``v`` value, ``f`` cached formula result, ``x`` clear (value None)."""
    sheet, r1, c1, r2, c2 = split_ref(ref)
    shape = (r2 - r1 + 1, c2 - c1 + 1)
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
        if arr.dtype != object:
            arr = arr.astype(np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or (arr.dtype == object and not all(v is None or _is_number(v) for v in arr.flat)):
        raise WorkbookError(f"{ref}: value is not a number or an array of numbers")  # None: clear/leave
    if arr.size != shape[0] * shape[1] or (arr.ndim == 2 and arr.shape != shape) or arr.ndim > 2:
        raise WorkbookError(f"{ref}: {arr.shape} values do not fit a range of {shape[0]}x{shape[1]} cells")
    arr = arr.reshape(shape)
    cells = {}
    for i in range(shape[0]):
        for j, v in enumerate(arr[i].tolist()):
            if v is None:
                if op == "v":
                    cells[(r1 + i, c1 + j)] = ("x", None)
                continue
            x = float(v)
            if not math.isfinite(x):
                raise WorkbookError(
                    f"{sheet}!{col_letters(c1 + j)}{r1 + i}: value {x} is not finite; not written"
                )
            cells[(r1 + i, c1 + j)] = (op, x)
    return sheet, cells


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def format_number(x: float) -> bytes:
    """Shortest round-trip text of a float, as an xsd:double."""
    if x == 0:
        return b"0"
    text = repr(float(x))
    if text.endswith(".0"):
        text = text[:-2]
    return text.encode("ascii")


# ----------------------------------------------------------------------------------------- sheets
def sheet_members(zf: zipfile.ZipFile, label: str) -> dict[str, str]:
    """Map sheet name -> zip member of its worksheet XML."""
    try:
        wb = ET.fromstring(zf.read("xl/workbook.xml"))
        rels = ET.fromstring(zf.read("xl/_rels/workbook.xml.rels"))
    except (KeyError, ET.ParseError) as exc:
        raise WorkbookError(f"{label}: not an xlsx workbook (no readable xl/workbook.xml)") from exc
    targets = {}
    for rel in rels.iter(f"{{{_PKG_REL}}}Relationship"):
        target = rel.get("Target", "")
        target = (
            target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join("xl", target))
        )
        targets[rel.get("Id")] = (target, rel.get("Type", ""))
    out = {}
    for sh in wb.iter(f"{{{_MAIN}}}sheet"):
        target, kind = targets.get(sh.get(f"{{{_REL}}}id"), (None, ""))
        if target and kind.endswith("/worksheet"):
            out[sh.get("name")] = target
    return out


class _Sheet:
    """A worksheet's XML as bytes, edited by slicing."""

    def __init__(self, data: bytes, name: str):
        self.data, self.name = data, name
        m = re.search(rb"<(\w+:)?sheetData\b[^>]*?(/?)>", data)
        if not m:
            raise WorkbookError(f"{name}: worksheet has no <sheetData>")
        self.p = m.group(1) or b""
        self.empty = m.group(2) == b"/"
        p = re.escape(self.p)
        self.cell_re = re.compile(rb"<" + p + rb"c\b([^>]*?)(?:/>|>(.*?)</" + p + rb"c>)", re.S)
        self.f_re = re.compile(rb"<" + p + rb"f\b[^>]*?(?:/>|>.*?</" + p + rb"f>)", re.S)
        self.sd_start, self.sd_open_end = m.start(), m.end()
        self.sd_end = m.end() if self.empty else data.index(b"</" + self.p + b"sheetData>", m.end())
        self.arrays = [
            split_ref(f"x!{ref.decode()}")[1:]
            for ref in re.findall(rb'<(?:\w+:)?f\b[^>]*\bt="array"[^>]*\bref="([^"]+)"', data)
        ]

    def rows(self):
        """(row number, start, end, start of content, end of content or None) for each <row>."""
        row_re = re.compile(rb"<" + re.escape(self.p) + rb"row\b([^>]*?)(/?)>")
        end_tag = b"</" + self.p + b"row>"
        pos, implicit = self.sd_open_end, 0
        while True:
            m = row_re.search(self.data, pos, self.sd_end)
            if not m:
                return
            r = re.search(rb'\br="(\d+)"', m.group(1))
            implicit = int(r.group(1)) if r else implicit + 1
            if m.group(2):
                yield implicit, m.start(), m.end(), m.end(), None
                pos = m.end()
            else:
                end = self.data.index(end_tag, m.end())
                yield implicit, m.start(), end + len(end_tag), m.end(), end
                pos = end + len(end_tag)

    def _tag(self, name: bytes) -> tuple[bytes, bytes]:
        return b"<" + self.p + name + b">", b"</" + self.p + name + b">"

    def _cell_xml(self, attrs: bytes, x: float | None, t: bytes = b"", inner: bytes = b"") -> bytes:
        attrs = re.sub(rb'\s+t="[^"]*"', b"", attrs) + t
        if x is None and not inner:
            return b"<" + self.p + b"c" + attrs + b"/>"
        v = b"" if x is None else b"%s%s%s" % (self._tag(b"v")[0], format_number(x), self._tag(b"v")[1])
        return b"<" + self.p + b"c" + attrs + b">" + inner + v + self._tag(b"c")[1]

    def _replace(self, rownum: int, col: int, m: re.Match, cell: tuple) -> bytes:
        op, x = cell
        f = self.f_re.search(m.group(2) or b"")
        where = f"{self.name}!{col_letters(col)}{rownum}"
        if op != "f":
            if f:
                raise WorkbookError(f"{where}: holds a formula; it cannot be a trainable cell")
            return self._cell_xml(m.group(1), x)
        if not f and not self._in_array(rownum, col):
            raise WorkbookError(f"{where}: holds no formula; only formula cells get cached results")
        old_t = re.search(rb'\st="([^"]*)"', m.group(1))
        t = b' t="b"' if old_t and old_t.group(1) == b"b" and x in (0.0, 1.0) else b""
        return self._cell_xml(m.group(1), x, t, f.group(0) if f else b"")

    def _in_array(self, row: int, col: int) -> bool:
        by_row = self.__dict__.get("_array_rows")
        if by_row is None:  # row -> the column spans of the array formulas covering it (built once)
            by_row = self._array_rows = {}
            for r1, c1, r2, c2 in self.arrays:
                for r in range(r1, r2 + 1):
                    by_row.setdefault(r, []).append((c1, c2))
        return any(c1 <= col <= c2 for c1, c2 in by_row.get(row, ()))

    def _find(self, body: bytes, rownum: int, col: int) -> re.Match | None:
        key = f' r="{col_letters(col)}{rownum}"'.encode()
        i = body.find(key)
        while i >= 0:
            m = self.cell_re.match(body, body.rfind(b"<", 0, i))
            if m and m.start(1) <= i < m.end(1):
                return m
            i = body.find(key, i + 1)
        return None

    def _edit_row(self, rownum: int, body: bytes, cells: dict[int, tuple]) -> bytes:
        found = [(self._find(body, rownum, c), c) for c in cells] if len(cells) <= 8 else [(None, 0)]
        if all(m for m, _ in found):  # fast path: every target cell exists, splice them in place
            out, pos = [], 0
            for m, c in sorted(found, key=lambda mc: mc[0].start()):
                out += [body[pos : m.start()], self._replace(rownum, c, m, cells[c])]
                pos = m.end()
            return b"".join(out + [body[pos:]])
        out, pos, todo = [], 0, sorted(cells)
        for m in self.cell_re.finditer(body):
            r = _REF_RE.search(m.group(1))
            if not r:
                raise WorkbookError(f"{self.name}!row {rownum}: cell without an r= address; cannot edit")
            col = col_number(r.group(1).decode())
            while todo and todo[0] < col:  # missing cells go before this one
                c = todo.pop(0)
                out += [body[pos : m.start()], self._new_cell(rownum, c, cells[c])]
                pos = m.start()
            if todo and todo[0] == col:
                todo.pop(0)
                out += [body[pos : m.start()], self._replace(rownum, col, m, cells[col])]
                pos = m.end()
            if not todo:
                break
        out.append(body[pos:])
        out += [self._new_cell(rownum, c, cells[c]) for c in todo]
        return b"".join(out)

    def _new_cell(self, row: int, col: int, cell: tuple) -> bytes:
        op, x = cell
        if op == "x":
            return b""  # clearing a cell that does not exist: nothing to do
        if op == "f" and not self._in_array(row, col):
            raise WorkbookError(
                f"{self.name}!{col_letters(col)}{row}: holds no formula; only formula cells get cached results"
            )
        return self._cell_xml(f' r="{col_letters(col)}{row}"'.encode(), x)

    def _new_row(self, row: int, cells: dict[int, tuple]) -> bytes:
        body = b"".join(self._new_cell(row, c, cells[c]) for c in sorted(cells))
        if not body:
            return b""
        return b"<" + self.p + b"row" + f' r="{row}">'.encode() + body + b"</" + self.p + b"row>"

    def write(self, cells: dict[tuple[int, int], tuple]) -> bytes:
        for (row, col), (op, _) in cells.items():
            if op != "f" and self._in_array(row, col):
                raise WorkbookError(
                    f"{self.name}!{col_letters(col)}{row}: is part of an array formula; it cannot be a trainable cell"
                )
        by_row: dict[int, dict[int, tuple]] = {}
        for (row, col), x in cells.items():
            by_row.setdefault(row, {})[col] = x
        pending = sorted(by_row)
        data, out, pos = self.data, [], 0
        grown = {k: v for k, v in cells.items() if v[0] != "x"}  # cells that may widen <dimension>
        if self.empty:
            new_rows = b"".join(self._new_row(r, by_row[r]) for r in pending)
            tag = data[self.sd_start : self.sd_open_end - 2].rstrip() + b">"
            out += [data[: self.sd_start], tag, new_rows, b"</" + self.p + b"sheetData>"]
            return self._dimension(b"".join(out + [data[self.sd_open_end :]]), grown)
        for rownum, start, end, cstart, cend in self.rows() if pending else ():
            while pending and pending[0] < rownum:
                r = pending.pop(0)
                out += [data[pos:start], self._new_row(r, by_row[r])]
                pos = start
            if pending and pending[0] == rownum:
                r = pending.pop(0)
                if cend is None:  # <row .../> -> <row ...>cells</row>
                    tag = data[start : cstart - 2].rstrip() + b">"
                    out += [data[pos:start], tag, self._edit_row(r, b"", by_row[r]), b"</" + self.p + b"row>"]
                else:
                    out += [data[pos:cstart], self._edit_row(r, data[cstart:cend], by_row[r])]
                    out.append(data[cend:end])
                pos = end
            if not pending:
                break
        out.append(data[pos : self.sd_end])
        out += [self._new_row(r, by_row[r]) for r in pending]
        out.append(data[self.sd_end :])
        return self._dimension(b"".join(out), grown)

    def _dimension(self, data: bytes, cells) -> bytes:
        m = re.search(rb'<(?:\w+:)?dimension\b[^>]*?\bref="([^"]*)"', data[: self.sd_start + 1])
        if not m or not cells:
            return data
        rows = [r for r, _ in cells]
        cols = [c for _, c in cells]
        try:
            _, r1, c1, r2, c2 = split_ref(f"x!{m.group(1).decode()}")
        except WorkbookError:
            return data
        box = (min(r1, *rows), min(c1, *cols), max(r2, *rows), max(c2, *cols))
        if box == (r1, c1, r2, c2):
            return data
        new = f"{col_letters(box[1])}{box[0]}:{col_letters(box[3])}{box[2]}".encode()
        return data[: m.start(1)] + new + data[m.end(1) :]


def set_full_calc_on_load(xml: bytes) -> bytes:
    """``xl/workbook.xml`` with ``<calcPr fullCalcOnLoad="1"/>`` (attribute set or element inserted)."""
    m = re.search(rb"<(\w+:)?calcPr\b([^>]*?)(/?)>", xml)
    if m:
        attrs = m.group(2)
        if re.search(rb'\bfullCalcOnLoad="[^"]*"', attrs):
            attrs = re.sub(rb'\bfullCalcOnLoad="[^"]*"', b'fullCalcOnLoad="1"', attrs)
        else:
            attrs = attrs.rstrip() + b' fullCalcOnLoad="1"'
        return xml[: m.start(2)] + attrs + xml[m.end(2) :]
    prefix = (re.search(rb"<(\w+:)?workbook\b", xml).group(1) or b"") if b"workbook" in xml else b""
    # schema order: ... sheets, functionGroups, externalReferences, definedNames, calcPr, ...
    after = 0
    for tag in (b"sheets", b"functionGroups", b"externalReferences", b"definedNames"):
        for m in re.finditer(rb"</(?:\w+:)?" + tag + rb">|<(?:\w+:)?" + tag + rb"\b[^>]*/>", xml):
            after = max(after, m.end())
    if not after:
        raise WorkbookError("xl/workbook.xml: no <sheets> element")
    return xml[:after] + b"<" + prefix + b'calcPr fullCalcOnLoad="1"/>' + xml[after:]


# ----------------------------------------------------------------------------------------- write
def _copy_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    new = zipfile.ZipInfo(info.filename, info.date_time)
    new.compress_type = info.compress_type
    new.comment = info.comment
    new.create_system = info.create_system
    new.external_attr = info.external_attr
    new.internal_attr = info.internal_attr
    return new


def write_values(
    path: str | os.PathLike,
    values: dict,
    out: str | os.PathLike | None = None,
    *,
    cached: dict | None = None,
    transform=None,
) -> Path:
    """Write ``{"sheet!A1": float, "sheet!R4:AA5": 2-D array}`` into the workbook; return the path written.

    ``None`` in an array clears that cell. ``cached``: ``{ref: array}`` of cached formula results (the
    formulas stay; ``None`` leaves a cell as it is). Writes into ``path`` itself, or into the copy
    ``out`` (``path`` is then left untouched). ``transform(member, data) -> data`` may rewrite the other
    members (e.g. the history charts' ranges). All in one atomic write.
    """
    src = Path(path)
    dest = Path(out) if out is not None else src
    if not src.is_file():
        raise WorkbookError(f"{src}: no such workbook")
    per_sheet: dict[str, dict[tuple[int, int], tuple]] = {}
    for op, group in (("f", cached or {}), ("v", values)):  # values win over cached on the same cell
        for ref, value in group.items():
            sheet, cells = _cells_of(ref, value, op)
            per_sheet.setdefault(sheet, {}).update(cells)
    try:
        zin = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as exc:
        raise WorkbookError(f"{src}: not an xlsx file (not a readable zip archive)") from exc
    with zin:
        members = sheet_members(zin, str(src))
        edits = {}
        for sheet in per_sheet:
            if sheet not in members:
                raise WorkbookError(f"{src}: no worksheet named {sheet!r} (sheets: {', '.join(members)})")
            edits[members[sheet]] = sheet
        names = set(zin.namelist())
        for member in edits:
            if member not in names:
                raise WorkbookError(f"{src}: worksheet member {member} is missing")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix="." + dest.name + ".", suffix=".tmp", dir=dest.parent)
        except OSError as exc:
            raise WorkbookError(f"{dest}: cannot write in {dest.parent} ({exc.strerror})") from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                with zipfile.ZipFile(fh, "w", allowZip64=True) as zout:
                    zout.comment = zin.comment
                    for info in zin.infolist():
                        try:
                            data = zin.read(info)
                        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                            raise WorkbookError(f"{src}: member {info.filename} is corrupt ({exc})") from exc
                        if info.filename in edits:
                            sheet = edits[info.filename]
                            data = _Sheet(data, sheet).write(per_sheet[sheet])
                        elif info.filename == "xl/workbook.xml":
                            data = set_full_calc_on_load(data)
                        elif transform is not None:
                            data = transform(info.filename, data)
                        zout.writestr(_copy_info(info), data)
                fh.flush()
                os.fsync(fh.fileno())
            if dest.exists():
                os.chmod(tmp, dest.stat().st_mode & 0o7777)
            else:
                os.chmod(tmp, 0o666 & ~_umask())
            try:
                os.replace(tmp, dest)
            except OSError as exc:
                raise WorkbookError(
                    f"{dest}: cannot replace the file ({exc.strerror}); is it open in Excel?"
                ) from exc
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
    return dest


def write_cached_values(path: str | os.PathLike, cached: dict, out: str | os.PathLike | None = None) -> Path:
    """Only cached formula results: ``write_values(path, {}, out, cached=cached)``."""
    return write_values(path, {}, out, cached=cached)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
