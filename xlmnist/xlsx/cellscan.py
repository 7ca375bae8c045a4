"""The plain number and formula cells of a piece of worksheet XML, found and converted in bulk with numpy.

A plain number cell is ``<c r="B7"[ s="3"][ t="n"]><v>0.25</v></c>`` (any attributes but ``t``, or ``t="n"``
exactly; a value of digits, sign, point and exponent only); a plain formula cell the same with
``<f>TEXT</f>`` (no attributes: not shared, not an array) and then no value, ``<v/>``, ``<v />`` or a number.
A data sheet holds hundreds of thousands of them: making a Python object per cell (a regex match, a tuple of
``bytes``) is the cost of reading it. Here the bytes are looked at as a numpy array: the positions of ``<``
classify every tag by its next bytes, a cell is plain when its tags are exactly those, its ``r`` is read off
a small byte matrix, and the values are converted by one ``astype(float)`` of a fixed-width byte matrix
(single digits directly); the formula texts are decoded and unescaped as one string. Every other cell (text,
booleans, errors, ``t`` not ``"n"``, shared and array formulas, whitespace between tags, single quotes) is
left in the returned ``rest`` bytes for the regular-expression parser (:mod:`xlmnist.xlsx.sheetxml`),
unchanged and in order.
"""

from __future__ import annotations

import html
import re
from typing import NamedTuple

import numpy as np

PAD = 64  # bytes read past a piece's end (without bounds checks)
_CELL_AFTER = np.zeros(256, bool)  # what may follow "<c" in a cell's start tag
_CELL_AFTER[[32, 9, 10, 13, 62]] = True
_LETTER = np.zeros(256, np.uint8)  # A..Z: 1..26
_LETTER[65:91] = np.arange(1, 27)
_NUMERIC = np.zeros(256, bool)
_NUMERIC[list(b"\x000123456789.+-eE")] = True
_REF = 11  # "XFD1048576" and its closing quote
_MAX_V = 40  # longer values (never written by Excel) go to the regular expressions
_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(9)], np.uint64)  # the low k bytes
_TYPE = re.compile(rb'\st="([ns])"')
_NUMBER, _SHARED = 1, 2  # what the attributes make a <v> cell (_attributes)


def _word(text: bytes, dtype: str) -> int:
    return int(np.frombuffer(text, dtype)[0])


_R_EQ = _word(b' r="', "<u4")  # the start tag's first attribute
_V_OPEN = _word(b"><v>", "<u4")  # the start tag's end and the value's
_V_END = _word(b"</v></c>", "<u8")
_F_OPEN = _word(b"><f>", "<u4")
_F_CLOSE = _word(b"</f>", "<u4")
_C_CLOSE = _word(b"</c>", "<u4")
_V_EMPTY = _word(b"<v/></c>", "<u8")
_V_EMPTY_SP = _word(b"<v /></c", "<u8")
_NONE = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
_XML_ENTITIES = {"&lt;": "<", "&gt;": ">", "&quot;": '"', "&apos;": "'", "&amp;": "&"}


class Scanned(NamedTuple):
    numbers: tuple  # (rows, cols, values) of the plain number cells: int64, int64, float64
    formulas: tuple  # (rows, cols, texts) of the plain formula cells: texts unescaped, not stripped
    cached: tuple  # (rows, cols, values) of those formula cells' cached numbers
    strings: tuple  # (rows, cols, indices) of the shared-string cells (t="s", otherwise plain)
    rest: bytes  # the piece less these cells
    cells: int  # how many cells (``<c`` start tags) the piece holds in all


def scan(buf: bytes, lo: int = 0, hi: int | None = None) -> Scanned | None:
    """The plain number and formula cells of ``buf[lo:hi]`` (a run of whole rows of sheet XML; rows and
    columns 1-based); ``buf`` holds at least :data:`PAD` bytes after ``hi`` (they are read, not parsed).
    None where the piece holds ``<!`` (a comment, CDATA, a DTD): only a real XML parser can tell cells
    from text there."""
    if hi is None:
        buf, hi = buf[lo:] + b"\0" * PAD, len(buf) - lo
        lo = 0
    a = np.frombuffer(buf, np.uint8)
    u4 = np.ndarray((len(buf) - 3,), "<u4", buf, strides=(1,))  # the 4 (8) bytes from each position
    u8 = np.ndarray((len(buf) - 7,), "<u8", buf, strides=(1,))
    lt = np.flatnonzero(a[lo:hi] == 60) + lo
    b1 = a[lt + 1]
    if (b1 == 33).any():
        return None
    ci = np.flatnonzero(b1 == 99)  # "<c", "<col", ...
    ci = ci[_CELL_AFTER[a[lt[ci] + 2]]]
    cells = len(ci)
    ci = ci[ci + 2 < len(lt)]
    p, q, w = lt[ci], lt[ci + 1], lt[ci + 2]
    # <c r="..."[ attributes]> then <v>TEXT</v></c> or <f>TEXT</f> (w: the next "<" after q)
    tag_end = u4[q - 1]
    number = (tag_end == _V_OPEN) & (u8[w] == _V_END)
    candidate = (number | ((tag_end == _F_OPEN) & (u4[w] == _F_CLOSE))) & (u4[p + 2] == _R_EQ)
    sel = np.flatnonzero(candidate & (a[q - 2] != 47))
    if not len(sel):
        return Scanned(_NONE, _NONE, _NONE, _NONE, buf[lo:hi], cells)
    ci, p, q, w, number = ci[sel], p[sel], q[sel], w[sel], number[sel]
    ref = np.lib.stride_tricks.as_strided(a, (len(a) - _REF, _REF), (1, 1))[p + 6]
    quote = p + 6 + np.argmax(ref == 34, axis=1)  # the reference's closing quote
    cols, n_letters, ok = _cols(_LETTER[ref[:, :4]])
    rows, good = _rows(u8[quote - 7], quote - p - 6 - n_letters)
    kind = _attributes(u8, quote + 1, q - 1)
    ok &= good
    end = np.zeros(len(p), np.int64)  # where each cell taken ends
    refs = np.flatnonzero(ok & number & (kind == _SHARED))
    indices, good = _indices(a, q[refs] + 3, w[refs] - q[refs] - 3)
    refs, indices = refs[good], indices[good]
    end[refs] = w[refs] + 8
    ok &= kind == _NUMBER
    nums = np.flatnonzero(ok & number)
    values, good = _values(a, q[nums] + 3, w[nums] - q[nums] - 3)
    nums, values = nums[good], values[good]
    end[nums] = w[nums] + 8
    forms = np.flatnonzero(ok & ~number)
    forms, fend, cache, cached = _formula_ends(a, u4, u8, lt, ci[forms], w[forms], forms)
    end[forms] = fend
    taken = np.flatnonzero(end)
    return Scanned(
        (rows[nums], cols[nums], values),
        (rows[forms], cols[forms], _texts(a, q[forms] + 3, w[forms])),
        (rows[cache], cols[cache], cached),
        (rows[refs], cols[refs], indices),
        _without(buf, lo, hi, p[taken], end[taken]),
        cells,
    )


def _formula_ends(a, u4, u8, lt, ci, w, forms):
    """(forms, ends, cached, values): of the formula cells ``forms`` (their ``<c`` the ``ci``-th "<", their
    ``</f>`` at ``w``) those taken, where each ends, and those with a cached number and its value. After
    ``</f>``: ``</c>``, ``<v/></c>``, ``<v /></c>`` or ``<v>NUMBER</v></c>``."""
    after = w + 4
    vend = lt[np.minimum(ci + 4, len(lt) - 1)]  # the "<" after "<v>"
    tail = u8[after]
    end = np.where(u4[after] == _C_CLOSE, after + 4, 0)
    end = np.where(tail == _V_EMPTY, after + 8, end)
    end = np.where((tail == _V_EMPTY_SP) & (a[after + 8] == 62), after + 9, end)
    valued = np.flatnonzero((u4[w + 3] == _V_OPEN) & (vend > after) & (u8[vend] == _V_END))
    values, good = _values(a, after[valued] + 3, vend[valued] - after[valued] - 3)
    valued, values = valued[good], values[good]
    end[valued] = vend[valued] + 8
    taken = end > 0
    return forms[taken], end[taken], forms[valued], values


def _texts(a: np.ndarray, start: np.ndarray, end: np.ndarray) -> list[str]:
    """The texts a[start:end] (no "<" in them), UTF-8 decoded and XML-unescaped: joined, decoded and
    unescaped as one string, split at NULs (which XML text cannot hold)."""
    if not len(start):
        return []
    length = end - start + 1  # each with its "<" (the end tag's): the separator
    offset = np.cumsum(length) - length
    index = np.arange(int(offset[-1] + length[-1]), dtype=np.int64) + np.repeat(start - offset, length)
    joined = a[index]
    joined[offset + length - 1] = 0
    text = joined.tobytes().decode("utf-8")
    if "&" in text:
        counts = {entity: text.count(entity) for entity in _XML_ENTITIES}
        if text.count("&") != sum(counts.values()):  # character references, HTML names: as sheetxml does
            return [html.unescape(t) if "&" in t else t for t in text.split("\0")[:-1]]
        for entity, char in _XML_ENTITIES.items():  # &amp; last
            if counts[entity]:
                text = text.replace(entity, char)
    return text.split("\0")[:-1]


def _runs(*keys: np.ndarray):
    """(heads, run): the index of the first element of each run of equal ``keys`` (compared together),
    and for each element the number of its run."""
    change = np.ones(len(keys[0]), bool)
    change[1:] = np.logical_or.reduce([k[1:] != k[:-1] for k in keys])
    return np.flatnonzero(change), np.cumsum(change) - 1


def _cols(letters: np.ndarray):
    """(columns, number of letters, valid) of references whose first 4 bytes are ``letters`` (as
    :data:`_LETTER` codes): 1 to 3 capital letters."""
    two = letters[:, 1] > 0
    three = two & (letters[:, 2] > 0)
    cols = letters[:, 0].astype(np.int64)
    cols = np.where(two, cols * 26 + letters[:, 1], cols)
    cols = np.where(three, cols * 26 + letters[:, 2], cols)
    ok = (letters[:, 0] > 0) & (letters[:, 3] == 0) & (cols <= 16384)
    return cols, 1 + two + three.astype(np.int64), ok


def _rows(word: np.ndarray, n_digits: np.ndarray):
    """(rows, valid) of references whose digits and closing quote are the last ``n_digits`` + 1 bytes of
    ``word`` (8 bytes, little-endian): 1 to 7 digits, 1 to 1048576. Read once per run of equal digits."""
    ok = (n_digits >= 1) & (n_digits <= 7)
    key = word >> (8 * (7 - np.clip(n_digits, 1, 7))).astype(np.uint64)  # digits then the quote
    heads, run = _runs(key)
    k, nd = key[heads], n_digits[heads]
    rows = np.zeros(len(heads), np.int64)
    good = ok[heads]
    for j in range(7):
        d = ((k >> np.uint64(8 * j)) & np.uint64(255)).astype(np.int64) - 48
        inside = j < nd
        good &= ~inside | ((d >= 0) & (d <= 9))
        rows = np.where(inside, rows * 10 + d, rows)
    good &= (rows >= 1) & (rows <= 1048576)
    return rows[run], good[run] & ok


def _attributes(u8: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """What the start tags' attributes after ``r`` (bytes start..end) make a cell: :data:`_NUMBER` (no
    ``t`` anywhere, or only `` t="n"``), :data:`_SHARED` (only `` t="s"``), else 0. Up to 16 bytes; each
    distinct text is looked at once."""
    length = end - start
    ok = (length >= 0) & (length <= 16)
    keys = [u8[start] & _MASKS[np.clip(length, 0, 8)]]
    long = np.flatnonzero(length > 8)
    if len(long):
        keys.append(np.zeros(len(start), np.uint64))
        keys[1][long] = u8[start[long] + 8] & _MASKS[np.clip(length[long] - 8, 0, 8)]
    heads, run = _runs(*keys)
    distinct, inverse = np.unique(np.stack([k[heads] for k in keys], axis=1), axis=0, return_inverse=True)
    kinds = [_kind(x.astype("<u8").tobytes().rstrip(b"\0")) for x in distinct]
    return np.where(ok, np.array(kinds, np.int8)[inverse.ravel()][run], 0)


def _kind(text: bytes) -> int:
    if b"t" not in text:
        return _NUMBER
    if text.count(b"t") != 1 or (m := _TYPE.search(text)) is None:
        return 0
    return _NUMBER if m.group(1) == b"n" else _SHARED


def _indices(a: np.ndarray, start: np.ndarray, length: np.ndarray):
    """(the integers written a[start:start+length], whether each is 1 to 9 digits)."""
    text = np.lib.stride_tricks.as_strided(a, (len(a) - 9, 9), (1, 1))[start].astype(np.int64) - 48
    inside = np.arange(9) < length[:, None]
    ok = (length >= 1) & (length <= 9) & (((text >= 0) & (text <= 9)) | ~inside).all(axis=1)
    full = np.where(inside, text, 0) @ (10 ** np.arange(8, -1, -1, dtype=np.int64))
    return full // 10 ** (9 - np.clip(length, 0, 9)), ok


def _values(a: np.ndarray, start: np.ndarray, length: np.ndarray):
    """(float64 of the texts a[start:start+length], whether each is a number's text): single digits
    directly, the rest by one ``astype`` of a fixed-width byte matrix (correctly rounded, as ``float``)."""
    values = np.zeros(len(start))
    first = a[start]
    ok = (length == 1) & (first >= 48) & (first <= 57)
    values[ok] = first[ok] - 48.0
    long = np.flatnonzero(~ok & (length >= 1) & (length <= _MAX_V))
    if len(long):
        width = int(length[long].max())
        text = np.lib.stride_tricks.as_strided(a, (len(a) - width, width), (1, 1))[start[long]]
        text = np.where(np.arange(width) < length[long, None], text, np.uint8(0))
        good = _NUMERIC[text].all(axis=1)  # (NUL: the padding)
        keep = long[good]
        values[keep] = np.ascontiguousarray(text[good]).view(f"S{width}").ravel().astype(np.float64)
        ok[keep] = True
    return values, ok


def _without(buf: bytes, lo: int, hi: int, start: np.ndarray, end: np.ndarray) -> bytes:
    """``buf[lo:hi]`` less the spans [start, end) (ascending, not overlapping): adjacent spans go as one."""
    if not len(start):
        return buf[lo:hi]
    run = np.flatnonzero(start[1:] != end[:-1])
    cut_from = np.concatenate(([lo], end[run], [end[-1]])).tolist()
    cut_to = np.concatenate(([start[0]], start[run + 1], [hi])).tolist()
    return b"".join([buf[f:t] for f, t in zip(cut_from, cut_to)])
