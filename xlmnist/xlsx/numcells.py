"""The plain number cells of a piece of worksheet XML, found and converted in bulk with numpy.

A plain number cell is ``<c r="B7"[ s="3"][ t="n"]><v>0.25</v></c>`` (any attributes but ``t``, or ``t="n"``
exactly; a value of digits, sign, point and exponent only). A data sheet holds hundreds of thousands of them:
making a Python object per cell (a regex match, a tuple of ``bytes``) is the cost of reading it. Here the
bytes are looked at as a numpy array: the positions of ``<`` classify every tag by its next bytes, a cell is
plain when its tags are exactly ``<c ..><v>..</v></c>``, its ``r`` is read off a small byte matrix, and the
values are converted by one ``astype(float)`` of a fixed-width byte matrix (single digits directly). Every
other cell (text, formulas, booleans, errors, ``t`` not ``"n"``, whitespace between tags, single quotes)
is left in the returned ``rest`` bytes for the regular-expression parser, unchanged and in order.
"""

from __future__ import annotations

import re

import numpy as np

_PAD = b"\0" * 64  # read past a chunk's end without bounds checks
_CELL_AFTER = np.zeros(256, bool)  # what may follow "<c" in a cell's start tag
_CELL_AFTER[[32, 9, 10, 13, 62]] = True
_NUMERIC = np.zeros(256, bool)
_NUMERIC[list(b"0123456789.+-eE")] = True
_WS = np.zeros(256, bool)
_WS[[32, 9, 10, 13]] = True
_REF = 11  # "XFD1048576" and its closing quote
_MAX_V = 40  # longer values (never written by Excel) go to the regular expressions
_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(9)], np.uint64)  # the low k bytes
_T_N = re.compile(rb'\st="n"')


def _word(text: bytes, dtype: str) -> int:
    return int(np.frombuffer(text, dtype)[0])


_R_EQ = _word(b' r="', "<u4")  # the start tag's first attribute
_V_OPEN = _word(b"><v>", "<u4")  # the start tag's end and the value's
_V_END = _word(b"</v></c>", "<u8")


def scan(chunk: bytes):
    """-> (rows, cols, values, rest, cells) of ``chunk`` (a run of whole rows of sheet XML): the plain
    number cells' rows, columns (1-based, int64) and values (float64); ``chunk`` without them; and how
    many cells (``<c`` start tags) the chunk holds in all. None where the chunk holds ``<!`` (a comment,
    CDATA, a DTD): then only a real XML parser can tell cells from text."""
    buf = chunk + _PAD
    a = np.frombuffer(buf, np.uint8)
    n = len(chunk)
    u4 = np.ndarray((n + 32,), "<u4", buf, strides=(1,))  # the 4 (8) bytes from each position
    u8 = np.ndarray((n + 32,), "<u8", buf, strides=(1,))
    lt = np.flatnonzero(a[:n] == 60)
    b1 = a[lt + 1]
    if (b1 == 33).any():
        return None  # "<!": a comment, CDATA or a DTD, whose text may look like cells
    ci = np.flatnonzero(b1 == 99)  # "<c", "<col", ...
    ci = ci[_CELL_AFTER[a[lt[ci] + 2]]]
    cells = len(ci)
    ci = ci[ci + 2 < len(lt)]
    p, q, w = lt[ci], lt[ci + 1], lt[ci + 2]
    # <c r="..."[ attributes]><v>TEXT</v></c>, TEXT without "<" (w is the next "<" after q)
    ok = (u4[p + 2] == _R_EQ) & (u4[q - 1] == _V_OPEN) & (a[q - 2] != 47) & (u8[w] == _V_END)
    p, q, w = p[ok], q[ok], w[ok]
    if not len(p):
        return p, p, np.zeros(0), chunk, cells
    ref = np.lib.stride_tricks.as_strided(a, (n, _REF), (1, 1))[p + 6]
    end = p + 6 + np.argmax(ref == 34, axis=1)  # the reference's closing quote
    cols, n_letters, ok = _cols(ref[:, :4])
    rows, good = _rows(u8[end - 7], end - p - 6 - n_letters)
    ok &= good & _attributes(u8, end + 1, q - 1)
    start, length = q + 3, w - q - 3
    ok &= (length >= 1) & (length <= _MAX_V)
    values, good = _values(a, start, length, ok)
    ok &= good
    p, w = p[ok], w[ok]
    return rows[ok], cols[ok], values[ok], _without(chunk, p, w + 8), cells


def _runs(*keys: np.ndarray):
    """(heads, run): the index of the first element of each run of equal ``keys`` (compared together),
    and for each element the number of its run."""
    change = np.ones(len(keys[0]), bool)
    change[1:] = np.logical_or.reduce([k[1:] != k[:-1] for k in keys])
    return np.flatnonzero(change), np.cumsum(change) - 1


def _cols(first4: np.ndarray):
    """(columns, number of letters, valid) of references starting with the bytes ``first4``: 1 to 3
    capital letters."""
    letter = (first4 - 65) < 26
    n_letters = letter[:, 0].astype(np.int64)
    n_letters += letter[:, 0] & letter[:, 1]
    n_letters += letter[:, 0] & letter[:, 1] & letter[:, 2]
    c = first4[:, :3].astype(np.int64) - 64
    cols = np.where(n_letters == 1, c[:, 0], c[:, 0] * 26 + c[:, 1])
    cols = np.where(n_letters == 3, cols * 26 + c[:, 2], cols)
    return cols, n_letters, letter[:, 0] & ~letter[:, 3] & (cols <= 16384)


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
    """Whether the start tags' attributes after ``r`` (bytes start..end) leave a cell a number: no ``t``
    anywhere, or only `` t="n"``. Up to 16 bytes; each distinct text is looked at once."""
    length = end - start
    ok = (length >= 0) & (length <= 16)
    k1 = u8[start] & _MASKS[np.clip(length, 0, 8)]
    k2 = u8[start + 8] & _MASKS[np.clip(length - 8, 0, 8)]
    heads, run = _runs(k1, k2)
    keys, inverse = np.unique(np.stack([k1[heads], k2[heads]], axis=1), axis=0, return_inverse=True)
    plain = np.array([_number_attributes(x.astype("<u8").tobytes().rstrip(b"\0")) for x in keys], bool)
    return ok & plain[inverse.ravel()][run]


def _number_attributes(text: bytes) -> bool:
    return b"t" not in text or (text.count(b"t") == 1 and _T_N.search(text) is not None)


def _values(a: np.ndarray, start: np.ndarray, length: np.ndarray, wanted: np.ndarray):
    """float64 of the texts a[start:start+length] and whether each is a plain number text (where
    ``wanted``); single digits directly, the rest by one ``astype`` of a fixed-width byte matrix (correctly
    rounded, as ``float``)."""
    values = np.zeros(len(start))
    first = a[start]
    digit = (length == 1) & (first >= 48) & (first <= 57)
    values[digit] = first[digit] - 48.0
    ok = digit.copy()
    long = np.flatnonzero(~digit & wanted)
    if len(long):
        width = int(length[long].max())
        text = np.lib.stride_tricks.as_strided(a, (len(a) - width, width), (1, 1))[start[long]]
        inside = np.arange(width) < length[long, None]
        good = (_NUMERIC[text] | ~inside).all(axis=1)
        text[~inside] = 0
        keep = long[good]
        values[keep] = np.ascontiguousarray(text[good]).view(f"S{width}").ravel().astype(np.float64)
        ok[keep] = True
    return values, ok


def _without(chunk: bytes, start: np.ndarray, end: np.ndarray) -> bytes:
    """``chunk`` less the spans [start, end) (ascending, not overlapping): adjacent spans go as one."""
    if not len(start):
        return chunk
    run = np.flatnonzero(start[1:] != end[:-1])
    cut_from = np.concatenate(([0], end[run], [end[-1]])).tolist()
    cut_to = np.concatenate(([start[0]], start[run + 1], [len(chunk)])).tolist()
    return b"".join([chunk[f:t] for f, t in zip(cut_from, cut_to)])
