"""Read only the sheets a model reaches: sheets parsed on first use, and the part of a workbook a compile needs.

``read_workbook(path, lazy=True)`` inflates every worksheet while the file is open (the zip limits apply
as usual) but parses a sheet's XML (:mod:`xlmnist.xlsx.sheetxml`, the bulk of reading: ~1 s for a
1,000-row MNIST data sheet) only when its cells are first used (:class:`LazySheet`).

:func:`reachable_view` is what ``compile_workbook`` compiles: the model sheet plus every sheet connected to
it, read off the formula texts: the sheets that read the model or parameter sheets (views of the weights:
the write-back refreshes their cached values; transitively), and every sheet those and the model sheet
read (the data; transitively), through defined names and tables too. A sheet that only reads the same
data as the model (another model sheet) is left out. A formula with ``INDIRECT`` or a 3-D reference (``Sheet1:Sheet3!A1``)
in a kept sheet makes it keep every sheet. The test is textual and conservative: a sheet name or a defined name that
only *appears* in a formula (in a string, say) still connects. Unconnected sheets are never parsed.
"""

from __future__ import annotations

import re
from xml.etree import ElementTree as ET

from xlmnist import timing
from xlmnist.errors import WorkbookError
from xlmnist.xlsx.reader import Sheet, Workbook

_LAZY = ("values", "formulas", "shared", "masters", "arrays")
_DIGITS = re.compile(r"[0-9]+")
_TOKEN = r"(?<![\w.\\]){}(?![\w.(])"  # a defined name or table name as a whole word (a table: Table1[...])
_F_TEXT = re.compile(rb"<f(?:\s[^>]*)?>([^<]*)</f>")
_DYNAMIC = re.compile(
    r"indirect\s*\(|:(?:'[^']+'|[^:!,;()\s*+/^&=<>\-\"'{}\[\]]+)!"
)  # INDIRECT(, Sheet1:Sheet3!


class _Member:
    """What the reader's sheet parser asks of the zip: the member's bytes (read while the file was open)."""

    def __init__(self, data: bytes):
        self.data = data

    def read(self, part: str) -> bytes:
        return self.data


class LazySheet(Sheet):
    """A :class:`Sheet` whose cells are parsed the first time anything but its name is used."""

    def __init__(self, name: str, data: bytes, part: str, strings: list, parse, base: str):
        self.name = name
        self._raw = (data, part, strings, parse, base)

    def _load(self) -> None:
        raw = self.__dict__.pop("_raw", None)
        if raw is None:
            return
        data, part, strings, parse, base = raw
        self.values, self.formulas, self.shared, self.masters, self.arrays = {}, {}, {}, {}, {}
        self.__dict__["_max"] = [0, 0]
        with timing.stage("read"):
            try:
                parse(_Member(data), part, self, strings)
            except (KeyError, ET.ParseError, ValueError, IndexError) as exc:
                self.__dict__["_raw"] = raw  # (the next use raises again, not an empty sheet)
                raise WorkbookError(f"{base}: corrupt xlsx workbook ({type(exc).__name__}: {exc})") from None
            except BaseException:
                self.__dict__["_raw"] = raw
                raise

    def __getattr__(self, attr):  # only for attributes not set yet: the cells before the parse
        if attr in _LAZY and "_raw" in self.__dict__:
            self._load()
            return getattr(self, attr)
        raise AttributeError(attr)

    @property
    def max_row(self) -> int:
        self._load()
        return self.__dict__["_max"][0]

    @max_row.setter
    def max_row(self, v: int) -> None:
        self.__dict__.setdefault("_max", [0, 0])[0] = v

    @property
    def max_col(self) -> int:
        self._load()
        return self.__dict__["_max"][1]

    @max_col.setter
    def max_col(self, v: int) -> None:
        self.__dict__.setdefault("_max", [0, 0])[1] = v

    def formula_text(self) -> tuple[str, str] | None:
        """The sheet's formula texts for :func:`reachable_view` (:func:`_text`): from the parsed cells, else off
        the XML without parsing it (XML-escaped, ``&lt;`` for ``<``: the needles come in both forms)."""
        if "_raw" not in self.__dict__:
            return _text(_texts(self))
        xml = self._raw[0]
        if b"<f" not in xml and b":f" in xml:
            return None  # formulas with a namespace prefix (<x:f>): unknown, so it is kept
        return _digitless(b"\n".join(_F_TEXT.findall(xml)).decode("utf-8", "replace").lower())


def _texts(sh: Sheet) -> list[str]:
    return [*sh.formulas.values(), *(t for _, t in sh.masters.values())]


def _text(texts) -> tuple[str, str]:
    """(the distinct formula texts without digits, all of them): lower case. A name is looked for in the
    first (short: a column of copies is one line there, ``data!$a:$ade`` for ``data!$A2:$ADE2``), and
    only where it is found there, in the second."""
    return _digitless("\n".join(texts).lower())


def _digitless(full: str) -> tuple[str, str]:
    no_digits = full.encode().translate(None, b"0123456789").decode()  # (UTF-8: no digit byte in others)
    return "\n".join(set(no_digits.split("\n"))), full


def reachable_view(wb: Workbook, sheet: str, params: str | None, texts: list) -> Workbook:
    """The part of ``wb`` a compile of ``sheet`` needs (module docstring): ``params`` the trainable ranges'
    text, ``texts`` the objective's and data's (they may name other sheets)."""
    names = [s for s in wb.order if s in wb.sheets]
    needles = {s: _needles(s) for s in names}
    links: dict[str, set] = {}  # defined name or table (lower case) -> the sheets its text names
    for (_, key), text in wb.names.items():
        links.setdefault(key.lower(), set()).update(
            s for s in names if _found(_text([str(text or "")]), needles[s])
        )
    for key, table in wb.tables.items():
        links.setdefault(key.lower(), set()).add(table.sheet)
    texts_of_names = {key.lower(): str(text or "").lower() for (_, key), text in wb.names.items()}
    grown = True
    while grown:  # a name defined by another name reaches what that one reaches
        grown = False
        for key, text in texts_of_names.items():
            for other, to in list(links.items()):
                if other != key and not to <= links[key] and re.search(_TOKEN.format(re.escape(other)), text):
                    links[key] |= to
                    grown = True
    stripped = {key: _DIGITS.sub("", key) for key in links}
    text_of: dict[str, tuple | None] = {}

    def formulas(s: str) -> str | None:
        if s not in text_of:
            sh = wb.sheets[s]
            if s in keep and isinstance(sh, LazySheet):
                sh._load()  # needed anyway: its parsed formulas, not a second scan of its XML
            text_of[s] = sh.formula_text() if isinstance(sh, LazySheet) else _text(_texts(sh))
        return text_of[s]

    def reads(text: tuple | None, target: str) -> bool:
        if text is None:  # (a sheet whose XML we cannot scan: it may read anything)
            return True
        if _found(text, needles[target]):
            return True
        return any(
            target in to and stripped[key] in text[0] and re.search(_TOKEN.format(re.escape(key)), text[1])
            for key, to in links.items()
        )

    def named_in(text: str | None) -> set:
        return {s for s in names if reads(_text([str(text or "")]), s)}

    # D: the model sheet, the parameters' sheets and every sheet that reads one of them (transitively):
    # the formulas whose cached values the write-back refreshes; kept: D and all that D reads (transitively)
    dependents = {sheet} | named_in(params)
    keep = (
        dependents
        | {s for s in names if s.lower() == "settings"}
        | named_in(" ".join(t or "" for t in texts))
    )
    todo = list(keep)
    while todo:
        while todo:  # what the kept sheets read
            text = formulas(todo.pop())
            if text is None or _DYNAMIC.search(text[0]):
                return wb  # INDIRECT, a 3-D reference, XML we cannot scan: every sheet may be read
            for other in names:
                if other not in keep and reads(text, other):
                    keep.add(other)
                    todo.append(other)
        for other in names:  # the sheets (not kept yet) that read D
            if other not in keep and any(reads(formulas(other), d) for d in dependents):
                dependents.add(other)
                keep.add(other)
                todo.append(other)
    if len(keep) == len(names):
        return wb
    order = [s for s in wb.order if s in keep]
    return Workbook(
        path=wb.path, sheets={s: wb.sheets[s] for s in order}, order=order,
        tables={k: t for k, t in wb.tables.items() if t.sheet in keep}, names=wb.names, active=wb.active,
    )  # fmt: skip


def _found(text: tuple, needles: dict) -> bool:
    """A needle in the text: its digit-free form in the short text, then itself in the full one."""
    return any(short in text[0] and any(n in text[1] for n in full) for short, full in needles.items())


def _needles(sheet: str) -> dict[str, tuple[str, ...]]:
    """How a formula names ``sheet`` (lower case): ``name!``, ``'name'!`` (quotes doubled), also XML-escaped
    (a formula read off the XML without parsing it); by the form without digits (:func:`_text`)."""
    low = sheet.lower()
    plain = (f"{low}!", "'" + low.replace("'", "''") + "'!")
    escaped = tuple(n.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") for n in plain)
    out: dict[str, tuple] = {}
    for n in dict.fromkeys(plain + escaped + tuple(n.replace("'", "&apos;") for n in escaped)):
        out[_DIGITS.sub("", n)] = out.get(_DIGITS.sub("", n), ()) + (n,)
    return out
