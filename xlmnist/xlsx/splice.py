"""The bulk path of the write-back: whole blocks of numbers spliced into a worksheet's XML at once.

:class:`xlmnist.xlsx.edits.SheetEdit` edits cell by cell (~4 µs a cell: the MNIST MLP's 200,000 weights,
as many gradients and 100,000 cached formula results took ~3 s). :func:`splice_blocks` writes a block
``(op, r1, c1, finite float array)`` (``op`` "v" a value, "f" a formula's cached result) with one regex
split over the rows the blocks cover, numpy to find each target among the matches, and one join. It
produces the same bytes as ``SheetEdit`` for the cells it handles:

* a value into a cell that holds a number or nothing (``<c r=.. s=..>``, no type or ``t="n"``, no
  formula): ``<c r=.. s=..><v>x</v></c>`` (``t="n"`` dropped);
* a cached result into a formula cell of that kind: its ``<f>`` kept, its ``<v>`` replaced or added;
* values into a row that is there but empty (``<row r="N"></row>``, ``<row r="N"/>``) or not there at all
  (a new ``<row r="N">`` before the next row): the new cells,
  ``<c r=..><v>x</v></c>`` in column order (and the ``<dimension>`` widened if they fall outside it).

Every other target cell (missing from a row that has cells, a text or boolean, a formula where a value is
written, a cell of an array formula, a sheet with a namespace prefix) is returned, to go through
``SheetEdit``, which also raises its errors for them.
"""

from __future__ import annotations

import bisect
import re

import numpy as np

from xlmnist.xlsx.edits import SheetEdit
from xlmnist.xlsx.refs import col_index, col_letters

# a cell as the bulk splice edits it, in groups (a split joins back to the same text): 1 column, 2 row,
# 3 '"' and a style, 4 t="n", 5 a style and ">", 6 the <f> (None: no formula), 7 the <v> (None: none)
_CELL = re.compile(
    r'(?<=<c r=")([A-Z]{1,3})([0-9]+)("(?: s="[0-9]+")?)( t="n")?((?: s="[0-9]+")?>)'
    r"(<f>[^<]*</f>)?(<v>[^<]*</v>|<v\s*/>)?(?=</c>)"
)
_ATTRS = re.compile(r'"(?: s="[0-9]+")?(?: t="n")?(?: s="[0-9]+")?')  # as _CELL's groups 3 to 5
_V = re.compile(r"<v>[^<]*</v>")
_G = 8  # the stride of the split: the text before the match, then the 7 groups


def splice_blocks(data: bytes, name: str, blocks: list) -> tuple[bytes, dict]:
    """``blocks``: ``[(op, r1, c1, array), ...]``, later blocks winning on the same cell. Returns the new
    XML and ``{(row, col): (op, x)}`` of the target cells left to :class:`SheetEdit`."""
    edit = SheetEdit(data, name)
    boxes = _merged([(op, r1, c1, r1 + a.shape[0] - 1, c1 + a.shape[1] - 1, a) for op, r1, c1, a in blocks])
    leftover: dict = {}
    if edit.p or edit.empty or any(_meets(b, edit.arrays) for b in boxes):  # cell by cell
        for op, r1, c1, _, _, a in boxes:
            leftover.update(_cells(op, r1, c1, a, np.ones(a.shape, bool)))
        return data, leftover
    by_row: dict[int, list[int]] = {}  # row -> the blocks that write into it
    for k, (_, r1, _, r2, _, _) in enumerate(boxes):
        for r in range(r1, r2 + 1):
            by_row.setdefault(r, []).append(k)
    done = [np.zeros(a.shape, bool) for *_, a in boxes]
    made: dict[int, list] = {}  # block -> its columns' letters
    edits = []  # (start, end, new text)
    there: list[tuple[int, int]] = []  # (row number, start) of the rows in the file
    for rownum, start, _, cstart, cend in edit.rows():
        there.append((rownum, start))
        ks = by_row.get(rownum)
        if ks is None:
            continue
        for k in ks:
            if k not in made:
                made[k] = [col_letters(c) for c in range(boxes[k][2], boxes[k][4] + 1)]
        got = _whole_row(data, rownum, start, cstart, cend, ks, boxes, made, edit.p)
        if got is not None:
            edits += [(a, b, text.encode("utf-8")) for a, b, text in got]
            for k in ks:
                done[k][rownum - boxes[k][1]] = True
        elif cend is not None and cend > cstart:  # a row with other cells, gaps, text ...: match by address
            text = _splice_span(data[cstart:cend].decode("utf-8"), boxes, done)
            edits.append((cstart, cend, text.encode("utf-8")))
    for rownum in sorted(set(by_row) - {r for r, _ in there}):  # rows not in the file: made, in their place
        i = bisect.bisect(there, (rownum, -1))
        at = there[i][1] if i < len(there) else edit.sd_end
        ks = by_row[rownum]
        for k in ks:
            made.setdefault(k, [col_letters(c) for c in range(boxes[k][2], boxes[k][4] + 1)])
        got = _whole_row(data, rownum, at, at, at, ks, boxes, made, edit.p)
        if got is not None:
            tag = f'<{edit.p.decode()}row r="{rownum}">'
            edits += [
                (at, at, (tag + text + f"</{edit.p.decode()}row>").encode("utf-8")) for _, _, text in got
            ]
            for k in ks:
                done[k][rownum - boxes[k][1]] = True
    out, pos, view = [], 0, memoryview(data)  # (views: the unchanged bytes are not copied before the join)
    for start, end, text in sorted(
        edits, key=lambda e: e[:2]
    ):  # (stable: new rows in order, then an edit there)
        out += [view[pos:start], text]
        pos = end
    out.append(view[pos:])
    for (op, r1, c1, _, _, a), seen in zip(boxes, done):
        if not seen.all():
            leftover.update(_cells(op, r1, c1, a, ~seen))
    corners = [(r, c) for _, r1, c1, r2, c2, _ in boxes for r, c in ((r1, c1), (r2, c2))]
    return edit._dimension(b"".join(out), dict.fromkeys(corners)), leftover  # widened as SheetEdit widens it


def _whole_row(data: bytes, rownum: int, start: int, cstart: int, cend, ks: list, boxes, made, prefix):
    """``[(start, end, text)]`` writing the row's part of each of its blocks at once, or None: the row is
    empty (the cells are made) or, for each block, the cells from its first column to its last are
    exactly the block's cells, in order, all numbers (values) or all formulas (cached results)."""
    r = str(rownum)
    rows = []  # per block: its columns' letters and its numbers' texts in this row
    for k in ks:
        op, r1, c1, _, _, a = boxes[k]
        rows.append((op, c1, made[k], _texts(a[rownum - r1])))  # (per row: little memory)
    if cend is None or cend == cstart:  # an empty row: the cells are new
        if any(op != "v" for op, *_ in rows):
            return None  # cached results for formula cells that are not there
        cells = "".join(
            f'<c r="{x}{r}"><v>{t}</v></c>' for _, _, xs, ts in sorted(rows) for x, t in zip(xs, ts)
        )
        if cend is None:  # <row .../> -> <row ...>cells</row>
            tag = data[start : cstart - 2].rstrip().decode("utf-8") + ">"
            return [(start, cstart, tag + cells + f"</{prefix.decode()}row>")]
        return [(cstart, cend, cells)]
    out = []
    for op, _, letters, row_texts in rows:
        s = data.find(f'<c r="{letters[0]}{r}"'.encode(), cstart, cend)
        last = data.find(f'<c r="{letters[-1]}{r}"'.encode(), max(s, 0), cend)
        e = data.find(b"</c>", max(last, 0), cend)
        if s < 0 or last < 0 or e < 0:
            return None
        segment = data[s : e + 4].decode("utf-8")
        if op == "v" and (text := _uniform(segment, letters, r, row_texts)) is not None:
            out.append((s, e + 4, text))
            continue
        parts = _CELL.split(segment)
        m = len(parts) // _G
        if (
            m != len(letters) or parts[1::_G] != letters or parts[2::_G].count(r) != m
            or parts[6::_G].count(None) != (m if op == "v" else 0) or parts[0] != '<c r="' or parts[-1] != "</c>"
        ):  # fmt: skip
            return None
        parts[7::_G], parts[4::_G] = _wrap(row_texts, "<v>", "</v>"), [None] * m
        out.append((s, e + 4, "".join(filter(None, parts))))
    return out


def _uniform(segment: str, letters: list, r: str, texts: list) -> str | None:
    """``segment`` (cells ``letters`` of row ``r``) with ``texts`` as the cells' numbers, or None: the fast
    case of the split in :func:`_whole_row`, where every cell is ``<c r=.. ATTRS><v>..</v></c>`` with the
    same attributes (a style, ``t="n"``), checked by comparing the segment less its values with the
    cells made from the letters; ``t="n"`` dropped as there. Joins only: no per-cell Python strings."""
    attrs = segment[6 + len(letters[0]) + len(r) : segment.find(">")]
    if not _ATTRS.fullmatch(attrs) or segment.count("<v>") != len(letters):
        return None
    if _V.sub("", segment) != '<c r="' + f'{r}{attrs}></c><c r="'.join(letters) + f"{r}{attrs}></c>":
        return None
    cells = [""] * (2 * len(letters))
    cells[::2] = letters
    kept = attrs.replace(' t="n"', "")
    cells[1::2] = _wrap(texts, f"{r}{kept}><v>", '</v></c><c r="')
    return '<c r="' + "".join(cells)[: -len('<c r="')]


def _merged(boxes: list) -> list:
    """Side-by-side blocks of one kind over the same rows joined into one (the cached results come one
    block per formula column); only when no two blocks overlap (then their order does not matter)."""
    if len(boxes) < 2:
        return boxes
    b = np.array([x[1:5] for x in boxes])
    r1, c1, r2, c2 = (b[:, i : i + 1] for i in range(4))
    meet = (r1 <= r2.T) & (r1.T <= r2) & (c1 <= c2.T) & (c1.T <= c2)
    if meet.sum() > len(boxes):  # some block overlaps another: keep them as given
        return boxes
    out = []
    for box in sorted(boxes, key=lambda x: (x[0], x[1], x[3], x[2])):
        p = out[-1] if out else None
        if p and p[0] == box[0] and p[1] == box[1] and p[3] == box[3] and p[4] + 1 == box[2]:
            out[-1] = (p[0], p[1], p[2], p[3], box[4], np.hstack([p[5], box[5]]))
        else:
            out.append(box)
    return out


def _splice_span(text: str, boxes: list, done: list) -> str:
    """One run of rows: the target cells found by one split, their ``<v>`` replaced."""
    parts = _CELL.split(text)
    letters = parts[1::_G]
    m = len(letters)
    if not m:
        return text
    cmap = {x: col_index(x) for x in set(letters)}
    cols = np.fromiter(map(cmap.__getitem__, letters), np.int64, m)
    rows = np.fromiter(map(int, parts[2::_G]), np.int64, m)
    formula = np.fromiter((f is not None for f in parts[6::_G]), bool, m)
    for (op, r1, c1, r2, c2, a), seen in zip(boxes, done):
        hit = (rows >= r1) & (rows <= r2) & (cols >= c1) & (cols <= c2) & (formula == (op == "f"))
        idx = np.flatnonzero(hit)
        if not len(idx):
            continue
        rr, cc = rows[idx] - r1, cols[idx] - c1
        seen[rr, cc] = True
        texts = _v_texts(a[rr, cc])  # (the few rows off the fast path)
        if len(idx) == m:  # every matched cell is written: slices
            parts[7::_G], parts[4::_G] = texts, [None] * m
        else:
            for i, t in zip((_G * idx).tolist(), texts):
                parts[i + 7], parts[i + 4] = t, None
    return "".join([x for x in parts if x])  # None: a group that did not take part, or a t="n" written over


def _meets(box, arrays) -> bool:
    _, r1, c1, r2, c2, _ = box
    return any(r1 <= b2 and b1 <= r2 and c1 <= d2 and d1 <= c2 for b1, d1, b2, d2 in arrays)


def _cells(op: str, r1: int, c1: int, a, mask) -> dict:
    return {(r1 + i, c1 + j): (op, float(a[i, j])) for i, j in zip(*(x.tolist() for x in np.nonzero(mask)))}


def _number_texts(values) -> np.ndarray:
    """``format_number`` of each value, as text (an object array of str, the shape of ``values``)."""
    values = np.asarray(values, dtype=np.float64)
    return np.array(_texts(values.ravel()), dtype=object).reshape(values.shape)


def _v_texts(values: np.ndarray) -> list[str]:
    """``<v>format_number(x)</v>`` of each of the values (1-D)."""
    return _wrap(_texts(values), "<v>", "</v>")


def _wrap(texts: list[str], before: str, after: str) -> list[str]:
    """``before + t + after`` of each text: by one join and one split (no NUL in the texts)."""
    return (before + (after + "\0" + before).join(texts) + after).split("\0") if texts else []


def _texts(values: np.ndarray) -> list[str]:
    """``format_number`` of each of the values (1-D), as str: ``repr`` less a trailing ``.0`` (-0.0 + 0.0
    is 0.0)."""
    values = values + 0.0
    texts = list(map(repr, values.tolist()))
    for i in np.flatnonzero((values == np.floor(values)) & (np.abs(values) < 1e16)).tolist():
        texts[i] = texts[i][:-2]  # an integral value: "3.0" -> "3" (from 1e16 on, repr has an exponent)
    return texts
