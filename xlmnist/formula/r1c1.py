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


def r1c1_key(text: str, row: int, col: int) -> str:
    """``text`` with every A1 reference rewritten relative to (row, col)."""

    def sub(m: re.Match) -> str:
        g = m.groups()
        if g[0] or g[1] or g[2]:
            return m.group(0)
        if g[4] is not None:
            a = f"C{col_index(g[4])}" if g[3] else f"C[{col_index(g[4]) - col}]"
            b = f"C{col_index(g[6])}" if g[5] else f"C[{col_index(g[6]) - col}]"
            return a + ":" + b
        if g[8] is not None:
            a = f"R{g[8]}" if g[7] else f"R[{int(g[8]) - row}]"
            b = f"R{g[10]}" if g[9] else f"R[{int(g[10]) - row}]"
            return a + ":" + b
        c = f"C{col_index(g[12])}" if g[11] else f"C[{col_index(g[12]) - col}]"
        r = f"R{g[14]}" if g[13] else f"R[{int(g[14]) - row}]"
        return r + c

    return _R1C1.sub(sub, text)
