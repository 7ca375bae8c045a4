"""Calc's formula text (what ``XCell.getFormula`` / ``getFormulaArray`` return: English function names,
``;`` between arguments, ``$Sheet.A1`` references, inline arrays ``{1;2|3;4}``) as Excel's
(``Sheet!A1``, ``,``, ``{1,2;3,4}``), the text xlmnist's formula parser reads from an xlsx file.

One pass over the text: string literals are copied as they are; a sheet-qualified reference
(``$data.B1``, ``$'my sheet'.$A$1``, ``$data.B1:$data.B3``) becomes ``data!B1`` (the second sheet of a
range is dropped when it is the first one); ``;`` becomes ``,`` (in an inline array ``;``/``|`` become
``,``/``;``); ``TRUE()``/``FALSE()`` become ``TRUE``/``FALSE``. Anything else (function names, operators,
numbers, names) is the same in both. ``tests/calc`` checks this against LibreOffice's own
``FormulaParser`` with the OOXML convention on every formula of the lesson workbooks.
"""

from __future__ import annotations

import re

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_QUOTED = r"'(?:[^']|'')+'"
_AFTER = r"(?:\$?[A-Za-z]{1,3}\$?\d+(?![\w(.])|\$?[A-Za-z]{1,3}:|\$?\d+:)"  # a cell, a column, a row
_SHEET = re.compile(rf"\$?({_QUOTED}|{_NAME})\.(?={_AFTER})")
_BOOL = re.compile(r"(TRUE|FALSE)\(\)", re.I)
_PLAIN = re.compile(r"[A-Za-z0-9_]")


def quote_sheet(sheet: str) -> str:
    return sheet if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", sheet) else "'" + sheet.replace("'", "''") + "'"


def _sheet_name(token: str) -> str:
    return token[1:-1].replace("''", "'") if token.startswith("'") else token


def excel_formula(text: str) -> str:
    """Calc's ``=...`` (or ``{=...}`` for an array formula) -> Excel's formula text without ``=``."""
    text = text.strip()
    if text.startswith("{=") and text.endswith("}"):
        text = text[2:-1]
    elif text.startswith("="):
        text = text[1:]
    out: list[str] = []
    i, n, depth = 0, len(text), 0  # depth: inside an inline array {...}
    last_sheet = None  # the sheet of the reference just written (for "$s.A1:$s.B2")
    while i < n:
        ch = text[i]
        if ch == '"':
            j = i + 1
            while j < n:
                if text[j] == '"':
                    if j + 1 < n and text[j + 1] == '"':
                        j += 2
                        continue
                    break
                j += 1
            out.append(text[i : j + 1])
            i = j + 1
            continue
        prev_plain = i > 0 and _PLAIN.match(text[i - 1]) is not None
        m = None if prev_plain else _SHEET.match(text, i)
        if m is not None:
            sheet = _sheet_name(m.group(1))
            if out and out[-1] == ":" and sheet == last_sheet:
                pass  # "$data.B1:$data.B3": the range's second sheet is the first one
            else:
                out.append(quote_sheet(sheet) + "!")
            last_sheet = sheet
            i = m.end()
            continue
        b = None if prev_plain else _BOOL.match(text, i)
        if b is not None:
            out.append(b.group(1).upper())
            i = b.end()
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(0, depth - 1)
        elif ch == ";":
            ch = ","
        elif ch == "|" and depth:
            ch = ";"
        if ch not in ":$" and not ch.isalnum():
            last_sheet = None
        out.append(ch)
        i += 1
    return "".join(out)


def excel_reference(content: str) -> str:
    """A named range's content (``$linear.$R$4:$AA$4``, areas joined by ``;``) as Excel's text."""
    return excel_formula("=" + content)
