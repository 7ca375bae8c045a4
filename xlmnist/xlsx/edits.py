"""Byte-level edits of a worksheet's XML (cell values, cached results, new cells and rows, the
``<dimension>``) and of ``xl/workbook.xml`` (``fullCalcOnLoad``): no DOM of the whole sheet."""

from __future__ import annotations

import re

from xlmnist.errors import WorkbookError
from xlmnist.xlsx.refs import col_index, col_letters, split_ref

_REF_RE = re.compile(rb'\sr="([A-Za-z]{1,3})(\d+)"')


def format_number(x: float) -> bytes:
    """Shortest round-trip text of a float, as an xsd:double."""
    if x == 0:
        return b"0"
    text = repr(float(x))
    if text.endswith(".0"):
        text = text[:-2]
    return text.encode("ascii")


class SheetEdit:
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
        pre = self.p
        self.v_open, self.v_close, self.c_open, self.c_close = (
            b"<" + pre + b"v>",
            b"</" + pre + b"v>",
            b"<" + pre + b"c",
            b"</" + pre + b"c>",
        )
        self.f_open = b"<" + pre + b"f"
        pattern = rb'<(?:\w+:)?f\b[^>]*\bt="array"[^>]*\bref="([^"]+)"'
        refs = re.findall(pattern, data) if b'"array"' in data else []  # (the regex over 20 MB: 0.1 s)
        self.arrays = [split_ref(f"x!{ref.decode()}")[1:] for ref in refs]

    def rows(self):
        """(row number, start, end, start of content, end of content or None) for each <row>."""
        row_re = re.compile(rb"<" + re.escape(self.p) + rb"row\b([^>]*?)(/?)>")
        end_tag = b"</" + self.p + b"row>"
        pos, implicit = self.sd_open_end, 0
        while (
            True
        ):  # (the next row usually starts right where the last one ended: matched there, not searched)
            m = row_re.match(self.data, pos, self.sd_end) or row_re.search(self.data, pos, self.sd_end)
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

    def _cell_xml(self, attrs: bytes, x: float | None, t: bytes = b"", inner: bytes = b"") -> bytes:
        # called once per written cell (200,000 for the MNIST MLP): tags built once, no regex unless t= is there
        if b"t=" in attrs:
            attrs = re.sub(rb'\s+t="[^"]*"', b"", attrs)
        attrs += t
        if x is None and not inner:
            return self.c_open + attrs + b"/>"
        v = b"" if x is None else self.v_open + format_number(x) + self.v_close
        return self.c_open + attrs + b">" + inner + v + self.c_close

    def _replace(self, rownum: int, col: int, m: re.Match, cell: tuple) -> bytes:
        op, x = cell
        inner = m.group(2)
        f = self.f_re.search(inner) if inner and self.f_open in inner else None
        where = f"{self.name}!{col_letters(col)}{rownum}" if f or op == "f" else ""
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
            col = col_index(r.group(1).decode())
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
        for (row, col), (op, _) in cells.items() if self.arrays else ():
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
