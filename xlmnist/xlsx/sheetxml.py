"""Fast path for reading a worksheet's XML: numpy over the bytes, regular expressions for the rest.

MNIST-shaped sheets hold ~1.6M number cells; walking them with ``iterparse`` takes ~20 s. Here the plain
number cells (``<c r="A2"><v>0.5</v></c>``, the vast majority) and plain formula cells are found and
converted in bulk (:mod:`xlmnist.xlsx.cellscan`), the numbers into a dense grid over the part of the sheet
they fill (:class:`CellValues`, :mod:`xlmnist.xlsx.extent`); the other cells (strings, booleans, errors,
shared and array formulas) are parsed one by one with regular expressions. Returns None when the XML does
not look like what these expect (namespace prefixes, cells without ``r``, comments): the caller then falls
back to ``iterparse``.
"""

from __future__ import annotations

import gc
import html
import re
from collections.abc import Mapping

import numpy as np

from xlmnist.xlsx import cellscan
from xlmnist.xlsx.extent import core
from xlmnist.xlsx.refs import col_index, parse_area

_CELL = re.compile(rb'<c r="([A-Z]{1,3})([0-9]+)"([^>]*?)(?:/>|>(.*?)</c>)', re.S)
_ATTR = re.compile(rb"""([A-Za-z:]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")  # either quote, spaces around =
_F = re.compile(rb"""<f((?:\s+[A-Za-z:]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(?:/>|>(.*?)</f>)""", re.S)
_V = re.compile(rb"<v\s*(?:/>|>(.*?)</v>)", re.S)
_T = re.compile(rb"<t(?:\s[^>]*)?(?:/>|>(.*?)</t>)", re.S)
_CHUNK = 8 << 20


class CellValues(Mapping):
    """``(row, col) -> value`` over a dense float grid of the number cells in A1:``rows``/``cols`` (the part
    of the sheet they fill) plus a dict for everything else (text, booleans, errors, far numbers)."""

    def __init__(self, rows: int = 0, cols: int = 0):
        self.num = np.zeros((rows + 1, cols + 1))
        self.has = np.zeros((rows + 1, cols + 1), bool)
        self.other: dict = {}

    def __getitem__(self, key):
        v = self.other.get(key)
        if v is not None:
            return v
        r, c = key
        if 0 <= r < self.has.shape[0] and 0 <= c < self.has.shape[1] and self.has[r, c]:
            return float(self.num[r, c])
        raise KeyError(key)

    def __contains__(self, key):
        try:
            self[key]
        except (KeyError, TypeError, ValueError):
            return False
        return True

    def __iter__(self):
        yield from self.other
        yield from map(tuple, np.argwhere(self.has).tolist())

    def __len__(self):
        return len(self.other) + int(self.has.sum())

    def put(self, rows: np.ndarray, cols: np.ndarray, numbers: np.ndarray) -> None:
        """``self[rows[i], cols[i]] = numbers[i]`` for float64 arrays, at once."""
        inside = (rows < self.has.shape[0]) & (cols < self.has.shape[1])
        if self.other and inside.any():
            for key in zip(rows[inside].tolist(), cols[inside].tolist()):
                self.other.pop(key, None)
        self.num[rows[inside], cols[inside]] = numbers[inside]
        self.has[rows[inside], cols[inside]] = True
        if not inside.all():
            self.other.update(
                zip(zip(rows[~inside].tolist(), cols[~inside].tolist()), numbers[~inside].tolist())
            )

    def __setitem__(self, key, value):
        r, c = key
        if type(value) is float and r < self.has.shape[0] and c < self.has.shape[1]:
            self.num[r, c], self.has[r, c] = value, True
            self.other.pop(key, None)
        else:
            if r < self.has.shape[0] and c < self.has.shape[1]:
                self.has[r, c] = False
            self.other[key] = value


def _unescape(b: bytes) -> str:
    s = b.decode("utf-8")
    return html.unescape(s) if "&" in s else s


def _chunks(data: bytes):
    """(buffer, lo, hi) of runs of whole rows of ``data``, with cellscan.PAD bytes after hi in buffer."""
    start, n = 0, len(data)
    while start < n:
        end = data.find(b"</row>", start + _CHUNK)
        end = n if end < 0 else end + 6
        if n - end < cellscan.PAD:
            yield data[start:] + b"\0" * cellscan.PAD, 0, end - start
        else:
            yield data, start, end
        start = end


def typed_value(t: str | None, txt: str, strings: list[str], xlerror):
    """A cell's value from its type attribute ``t`` and its ``<v>`` text: the one place for these rules
    (the fast parser here and the reader's ElementTree fallback both use it)."""
    if t is None or t == "n":
        return float(txt)
    if t == "s":
        return strings[int(txt)]
    if t == "b":
        return txt.strip() == "1"
    if t == "e":
        return xlerror(txt)
    return txt


def add_formula(r, c, ft, si, ref, text, formulas, shared, masters, arrays) -> None:
    """Record the ``<f>`` of cell (r, c): a shared formula's master or follower, a plain or array formula
    (the one place for these rules: the fast parser and the reader's fallback both use it)."""
    text = (text or "").strip()
    if text.startswith("="):
        text = text[1:]
    if ft == "shared":
        if text:
            masters[si] = ((r, c), text)
            formulas[(r, c)] = text
        else:
            shared[(r, c)] = si
    elif text:
        formulas[(r, c)] = text
        if ft == "array":
            arrays[(r, c)] = parse_area(ref) if ref else (r, c, r, c)


def parse(data: bytes, strings: list[str], xlerror, where: str = "sheet"):
    """-> (values, formulas, shared, masters, arrays, max_row, max_col), or None to fall back."""
    enabled = gc.isenabled()
    gc.disable()  # millions of small tuples: the cyclic collector would rescan them again and again
    try:
        return _parse(data, strings, xlerror, where)
    finally:
        if enabled:
            gc.enable()


def _parse(data: bytes, strings: list[str], xlerror, where: str):
    if b"<sheetData" not in data:  # a namespace prefix (<x:sheetData>) or no sheet data: iterparse
        return None
    parts = []  # what cellscan.scan found in each chunk
    rest = []  # (col, row, attrs, inner) of the other cells
    total = cells = 0
    for buf, lo, hi in _chunks(data):
        try:
            scanned = cellscan.scan(buf, lo, hi)
        except ValueError:
            return None
        if scanned is None:
            return None
        parts.append(scanned[:4])
        cells += scanned.cells
        total += len(scanned.numbers[0]) + len(scanned.formulas[0]) + len(scanned.strings[0])
        if total < cells:
            others = _CELL.findall(scanned.rest)
            rest += others
            total += len(others)
    if total != cells:
        return None
    numbers, plain_f, cached, shared_strings = zip(*parts)
    rr, cc, vv = (np.concatenate(x) for x in zip(*numbers))
    fr, fc = (np.concatenate(x) for x in list(zip(*plain_f))[:2])
    sr, sc = (np.concatenate(x) for x in list(zip(*shared_strings))[:2])
    texts = [t for _, _, chunk_texts in plain_f for t in chunk_texts]
    del parts, numbers
    cmap = {col: col_index(col.decode()) for col in {x[0] for x in rest}}
    rest_rc = [(int(row), cmap[col]) for col, row, _, _ in rest]
    filled = [rc for rc, x in zip(rest_rc, rest) if x[3]]  # a formatted empty cell is not content
    max_r = max(*(int(x.max(initial=0)) for x in (rr, fr, sr)), max((r for r, _ in filled), default=0))
    max_c = max(*(int(x.max(initial=0)) for x in (cc, fc, sc)), max((c for _, c in filled), default=0))
    R, C = core(rr, cc)
    values = CellValues(R, C)
    values.put(rr, cc, vv)  # the few far number cells apart
    formulas, shared, masters, arrays = {}, {}, {}, {}
    for rc, text in zip(zip(fr.tolist(), fc.tolist()), texts):
        text = text.strip()
        if text:
            formulas[rc] = text[1:] if text.startswith("=") else text
    for rows, cols, cached_values in cached:  # the formulas' cached numbers
        values.put(rows, cols, cached_values)
    if len(sr):  # the shared-string cells
        texts = [
            strings[i] for _, _, x in shared_strings for i in x.tolist()
        ]  # (IndexError: corrupt, as before)
        inside = (sr < values.has.shape[0]) & (sc < values.has.shape[1])
        values.has[sr[inside], sc[inside]] = False
        values.other.update(zip(zip(sr.tolist(), sc.tolist()), texts))
    for (r, c), (_, _, attrs, inner) in zip(rest_rc, rest):
        t = None
        for k, v, v1 in _ATTR.findall(attrs):
            if k == b"t":
                t = (v or v1).decode()
        f = _F.search(inner) if b"<f" in inner else None
        vm = _V.search(inner) if b"<v" in inner else None
        txt = _unescape(vm.group(1)) if vm is not None and vm.group(1) is not None else None
        if txt is not None:
            values[(r, c)] = typed_value(t, txt, strings, xlerror)
        elif t == "inlineStr":
            i = inner.find(b"<is")
            if i >= 0:
                body = inner[i : inner.find(b"</is>", i)] if b"</is>" in inner else inner[i:]
                if b"<rPh" in body:
                    body = re.sub(rb"<rPh.*?</rPh>", b"", body, flags=re.S)
                values[(r, c)] = "".join(_unescape(m or b"") for m in _T.findall(body))
            else:
                values[(r, c)] = ""
        if f is not None:
            fattrs = {k.decode(): _unescape(v or v1) for k, v, v1 in _ATTR.findall(f.group(1))}
            text = _unescape(f.group(2) or b"")
            add_formula(r, c, fattrs.get("t"), fattrs.get("si"), fattrs.get("ref"), text,
                        formulas, shared, masters, arrays)  # fmt: skip
    return values, formulas, shared, masters, arrays, max_r, max_c
