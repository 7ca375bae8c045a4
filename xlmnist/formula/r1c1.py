"""The relative (R1C1) form of a formula: the key on which copied formulas are grouped into blocks."""

from __future__ import annotations

import re

from xlmnist.xlsx.refs import col_index

_R1C1 = re.compile(
    r"""("(?:[^"]|"")*")"""  # strings
    r"""|('(?:[^']|'')*'!)"""  # quoted sheet names
    r"""|(\[(?:[^\[\]]|\[[^\]]*\])*\])"""  # structured reference brackets
    r"""|(?<![A-Za-z0-9_.$])(\$?)([A-Z]{1,3}):(\$?)([A-Z]{1,3})(?![A-Za-z0-9_(])"""  # A:C
    r"""|(?<![A-Za-z0-9_.$])(\$?)(\d+):(\$?)(\d+)(?![\d.])"""  # 3:5
    r"""|(?<![A-Za-z0-9_.])(\$?)([A-Z]{1,3})(\$?)(\d+)(?![A-Za-z0-9_(])"""  # A1
)


_DIGITS = re.compile(r"\d+")
_PLANS: dict[tuple[str, int], tuple] = {}  # (text with its digit runs as NUL, col) -> how to render
_MAX_PLANS = 1 << 16


def r1c1_key(text: str, row: int, col: int) -> str:
    """``text`` with every A1 reference rewritten relative to (row, col).

    Called once per formula cell (150,000 times for the lesson mnist.xlsx, whose formulas are copied down
    a column: the same text but for row numbers). The regex runs once per *shape* (the text with each run
    of digits blanked, and the column): it yields a plan saying, for each run of digits, whether it is
    copied, an absolute row (copied) or a relative row (rendered ``[n - row]``); a cell of the same shape
    then costs two C-level scans and a join. Which of these a run is depends only on the shape: the
    regex looks at digits only as "a digit" (classes, lookarounds), never at their values.
    """
    shape = _DIGITS.sub("\0", text)
    plan = _PLANS.get((shape, col))
    if plan is None:
        plan = _plan(text, col)
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        _PLANS[(shape, col)] = plan
    fixed, relative = plan
    return fixed[0] if len(fixed) == 1 else _join(fixed, _DIGITS.findall(text), relative, row)


def _join(fixed: list[str], nums: list[str], relative, row: int) -> str:
    out = [fixed[0]]
    for i, n in enumerate(nums):
        out.append(f"[{int(n) - row}]" if i in relative else n)
        out.append(fixed[i + 1])
    return "".join(out)


def _plan(text: str, col: int) -> tuple[list[str], frozenset[int]]:
    """(the rewritten text split at each run of digits of ``text``; the indices of the runs that are
    relative row numbers). The rendering puts back between the pieces each run (or ``[n - row]``)."""
    index = {m.start(): i for i, m in enumerate(_DIGITS.finditer(text))}
    relative = set()

    def row_part(m: re.Match, dollar: int, digits: int) -> str:
        if not m.group(dollar):
            relative.add(index[m.start(digits)])
        return "R\0"

    out, pos = [], 0
    for m in _R1C1.finditer(text):
        out.append(_DIGITS.sub("\0", text[pos : m.start()]))
        pos = m.end()
        g = m.groups()
        if g[0] or g[1] or g[2]:
            out.append(_DIGITS.sub("\0", m.group(0)))
        elif g[4] is not None:
            a = f"C{col_index(g[4])}" if g[3] else f"C[{col_index(g[4]) - col}]"
            b = f"C{col_index(g[6])}" if g[5] else f"C[{col_index(g[6]) - col}]"
            out.append(a + ":" + b)
        elif g[8] is not None:
            out.append(row_part(m, 8, 9) + ":" + row_part(m, 10, 11))
        else:
            c = f"C{col_index(g[12])}" if g[11] else f"C[{col_index(g[12]) - col}]"
            out.append(row_part(m, 14, 15) + c)
    out.append(_DIGITS.sub("\0", text[pos:]))
    return "".join(out).split("\0"), frozenset(relative)
