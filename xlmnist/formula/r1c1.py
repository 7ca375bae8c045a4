"""The relative (R1C1) form of a formula: the key on which copied formulas are grouped into blocks."""

from __future__ import annotations

import re

import numpy as np

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
_RUNS = re.compile(r"(\d+)")  # split: the fixed parts and the runs of digits, alternating
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


def r1c1_groups(sh) -> dict[str, list[tuple[int, int]]]:
    """The formula cells of the reader's sheet ``sh`` grouped by their R1C1 key (a one-cell array formula's
    key prefixed with NUL; larger array formulas left out), each group's cells in ``sh.formula_cells()``
    order: the same dict as calling :func:`r1c1_key` per cell, in bulk.

    A column of plain formulas whose texts all have one *shape* (a formula copied down: the same text
    but for its runs of digits) costs a few C-level calls over the column's joined text and one numpy
    operation (its relative row numbers minus the rows); each distinct key string is rendered once. The
    other cells (shared and array formulas, columns of mixed shapes) go through :func:`r1c1_key`.
    """
    formulas, arrays, shared = sh.formulas, sh.arrays, sh.shared
    cells, texts = list(formulas), list(formulas.values())
    keys: list = [None] * len(cells)
    bycol: dict[int, list[int]] = {}
    for i, (_, c) in enumerate(cells):
        bycol.setdefault(c, []).append(i)
    for col, idx in bycol.items():
        if arrays:  # array formulas keep their own key (one-cell) or are left out (larger)
            idx = [i for i in idx if cells[i] not in arrays]
        got = _column_keys([texts[i] for i in idx], [cells[i][0] for i in idx], col) if idx else None
        if got is not None:
            for i, k in zip(idx, got):
                keys[i] = k
    groups: dict[str, list[tuple[int, int]]] = {}
    if not arrays and not shared and None not in keys:  # the common case: every column had one shape
        for cell, key in zip(cells, keys):
            groups.setdefault(key, []).append(cell)
        return groups
    key_cache: dict[tuple, str] = {}
    for i, cell in enumerate(cells):
        a = arrays.get(cell)
        single = a is not None and a == (*cell, *cell)
        if a is not None and not single:
            continue
        key = keys[i] if keys[i] is not None else r1c1_key(texts[i], *cell)
        groups.setdefault("\0" + key if single else key, []).append(cell)
    for cell, si in shared.items():  # a shared formula's follower has its master's key
        a = arrays.get(cell)
        single = a is not None and a == (*cell, *cell)
        if a is not None and not single:
            continue
        origin, text = sh.masters[si]
        key = key_cache.get((origin, text))
        if key is None:
            key = key_cache[(origin, text)] = r1c1_key(text, *origin)
        groups.setdefault("\0" + key if single else key, []).append(cell)
    return groups


def _column_keys(texts: list[str], rows: list[int], col: int) -> list[str] | None:
    """The R1C1 keys of one column's formulas when their texts all have one shape, else None."""
    n = len(texts)
    joined = "\x01".join(texts)
    if joined.count("\x01") != n - 1:  # (a text holding the separator itself)
        return None
    parts = _RUNS.split(joined)  # one regex pass: fixed parts and runs of digits, alternating
    shape = _DIGITS.sub("\0", texts[0])
    if "\0".join(parts[0::2]) != "\x01".join([shape] * n):
        return None
    plan = _PLANS.get((shape, col))
    if plan is None:
        plan = _PLANS[(shape, col)] = _plan(texts[0], col)
    fixed, relative = plan
    k = len(fixed) - 1
    if k == 0:
        return [fixed[0]] * n
    runs = parts[1::2]
    cols: list = [runs[i::k] for i in range(k)]  # one list per run of digits, a value per cell
    same = True
    for i in range(k):
        if i in relative:
            off = np.fromiter(map(int, cols[i]), np.int64, n) - np.fromiter(rows, np.int64, n)
            cols[i] = off
            same = same and bool((off == off[0]).all())
        else:
            same = same and len(set(cols[i])) == 1
    if same:  # the usual copied column: one key
        return [_render(fixed, [f"[{c[0]}]" if i in relative else c[0] for i, c in enumerate(cols)])] * n
    for i in relative:
        cols[i] = [f"[{x}]" for x in cols[i].tolist()]
    rendered: dict[tuple, str] = {}
    out = []
    for nums in zip(*cols):
        key = rendered.get(nums)
        if key is None:
            key = rendered[nums] = _render(fixed, nums)
        out.append(key)
    return out


def _render(fixed: list[str], nums) -> str:
    pieces = [fixed[0]]
    for x, f in zip(nums, fixed[1:]):
        pieces += (str(x), f)
    return "".join(pieces)
