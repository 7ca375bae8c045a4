"""Structured references (``Table1[[#This Row],[a]:[b]]``): the bracketed specifier split into items."""

from __future__ import annotations

import re

from xlmnist.errors import FormulaError
from xlmnist.formula import parser as P


def spec_items(spec: str) -> list[str]:
    """``[#This Row],[a]:[b]`` -> ['#This Row', 'a\\x00b']; ``@col`` -> ['@', 'col']; ``col`` -> ['col']."""
    s = spec.strip()
    out: list[str] = []
    if s.startswith("@"):
        out.append("@")
        s = s[1:].strip()
    if not s:
        return out
    if not s.startswith("["):
        return out + [_unescape(s)]
    parts, i, cur = [], 0, ""
    while i < len(s):
        ch = s[i]
        if ch == "[":
            j = i + 1
            buf = ""
            while j < len(s) and s[j] != "]":
                if s[j] == "'" and j + 1 < len(s):
                    j += 1
                buf += s[j]
                j += 1
            cur = cur + "\x00" + buf if cur else buf
            i = j + 1
        elif ch == ",":
            parts.append(cur)
            cur = ""
            i += 1
        else:
            i += 1  # ':' and spaces: ':' joins the two columns via \x00
    if cur:
        parts.append(cur)
    return out + [p.strip() if p.startswith("#") else p for p in parts]


def _unescape(s: str) -> str:
    return re.sub(r"'(.)", r"\1", s)


def table_ref(wb, node, b):
    """A structured reference (``Table1[[#This Row],[a]]``) as the plain reference it names, seen from
    block ``b`` (its anchor row for ``#This Row``/``@``)."""
    table = wb.tables.get(node.table.upper())
    if table is None:
        raise FormulaError(f"{b.anchor}: unknown table {node.table!r}")
    tr1, tc1, tr2, tc2 = table.ref
    data1, data2 = tr1 + table.header_rows, tr2 - table.totals_rows
    items = spec_items(node.spec)
    specials = [s.upper() for s in items if s.startswith("#") or s == "@"]
    cols = [s for s in items if not (s.startswith("#") or s == "@")]
    this_row = "#THIS ROW" in specials or "@" in specials
    if this_row:
        r1 = r2 = b.r0
    elif "#ALL" in specials:
        r1, r2 = tr1, tr2
    else:
        want = set(specials) or {"#DATA"}
        rows = []
        if "#HEADERS" in want and table.header_rows:
            rows += [tr1]
        if "#DATA" in want:
            rows += [data1, data2]
        if "#TOTALS" in want and table.totals_rows:
            rows += [tr2]
        if not rows:
            raise FormulaError(f"{b.anchor}: bad structured reference {node.table}[{node.spec}]")
        r1, r2 = min(rows), max(rows)
    if cols:
        idx = []
        upper = [c.upper() for c in table.columns]
        for c in cols:
            for part in c.split("\x00"):
                try:
                    idx.append(upper.index(part.upper()))
                except ValueError:
                    raise FormulaError(f"{b.anchor}: table {table.name} has no column {part!r}") from None
        c1, c2 = tc1 + min(idx), tc1 + max(idx)
    else:
        c1, c2 = tc1, tc2
    rel = this_row
    return P.Ref(table.sheet, r1, c1, r2, c2, not rel, True, not rel, True)
