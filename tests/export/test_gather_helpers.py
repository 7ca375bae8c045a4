"""The general form's lookup helpers (xlmnist.export.template.GATHER_HELPERS) mirror the compiler's
builders (xlmnist.compile.gather, xlmnist.compile.functions.lookup): same values, NaN where the compiler
gives an error value, and the same gradients into the table, on the same inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xlmnist.compile import gather
from xlmnist.compile.functions import lookup
from xlmnist.compile.values import EMPTY, Value
from xlmnist.export.template import GATHER_HELPERS

H = {"torch": torch}
exec(  # noqa: S102 - the helpers' own source, as the generated module holds it
    "def _t(x):\n    return torch.as_tensor(x, dtype=torch.float64)\n" + GATHER_HELPERS, H
)


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def v(x):
    return Value(t(x))


def same(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


TABLE = t(np.arange(1.0, 25.0).reshape(1, 1, 6, 4) / 10.0)
IDS = t([[[[5.0], [3.0], [9.0], [3.0], [7.0], [1.0]]]])  # a column, unsorted, with a repeat
SORTED = t([[[[1.0], [3.0], [3.0], [5.0], [8.0], [9.0]]]])
KEYS = t([[[[3.0]], [[4.0]], [[9.0]], [[0.0]], [[10.0]], [[math.nan]], [[math.inf]], [[-math.inf]]]])


@pytest.mark.parametrize("values", [IDS, SORTED, SORTED.flip(2)], ids=["unsorted", "ascending", "descending"])
@pytest.mark.parametrize("mode", [0, 1, -1])
def test_match_equals_the_compilers_number_match(values, mode):
    same(H["_match"](KEYS, values, mode), lookup._match_numbers(Value(KEYS), Value(values), mode).t)


@pytest.mark.parametrize("values", [IDS, SORTED, SORTED.flip(2), IDS.transpose(2, 3)])
@pytest.mark.parametrize(
    "mode, last", [(0, False), (0, True), (1, False), (-1, False), (2, False), (-2, False)]
)
def test_strict_match_equals_gather_match(values, mode, last):
    """VLOOKUP/HLOOKUP/XLOOKUP's match (gather.match): every mode, a last-to-first search, keys not found,
    NaN and infinite keys (which find nothing)."""
    got = H["_match"](KEYS, values, mode, last, strict=True)
    same(got, gather.match(Value(KEYS), Value(values), mode, last=last).t)


def test_match_of_a_window_per_cell():
    """A lookup range that moves with the rows (one range per cell)."""
    rows = t(np.array([[3.0, 1.0, 2.0], [2.0, 2.0, 5.0]]).reshape(2, 1, 1, 3))
    keys = t([[[[2.0]]], [[[2.0]]]])
    for mode in (0, 1, -1):
        same(H["_match"](keys, rows, mode), lookup._match_numbers(Value(keys), Value(rows), mode).t)


@pytest.mark.parametrize(
    "r, c",
    [
        ([[[[2.0]], [[6.0]], [[1.0]]]], None),  # rows, every column
        ([[[[2.0]], [[7.0]], [[0.0]]]], [[[[3.0]]]]),  # out of range and a per-cell 0: NaN (#REF!)
        ([[[[2.9]], [[1.0]]]], [[[[0.0]]]]),  # truncated positions; a constant 0 column: the whole row
        ([[[[0.0]]]], [[[[2.0]], [[4.0]]]]),  # a constant 0 row: the whole column
        ([[[[3.0]]]], [[[[2.0]]]]),  # both fixed: INDEX slices (lookup.f_index)
        ([[[[3.0]]]], None),
    ],
)
def test_index_equals_the_compilers(r, c):
    table = TABLE.clone().requires_grad_(True)
    args = [Value(table), v(r)] + ([] if c is None else [v(c)])
    want = lookup.f_index(None, args).t
    mine_table = TABLE.clone().requires_grad_(True)
    got = H["_index"](mine_table, t(r), None if c is None else t(c))
    same(got, want)
    ok = ~torch.isnan(want)
    (want[ok] * torch.arange(1.0, ok.sum() + 1, dtype=torch.float64)).sum().backward()
    (got[ok] * torch.arange(1.0, ok.sum() + 1, dtype=torch.float64)).sum().backward()
    same(mine_table.grad, table.grad)


def test_index_of_a_row_vector():
    row = TABLE[:, :, 0:1, :]
    n = t([[[[2.0]], [[4.0]], [[5.0]]]])
    same(H["_index"](row, n), lookup.f_index(None, [Value(row), Value(n)]).t)


def test_a_table_per_cell():
    """A table that moves with the rows (a window per cell) is gathered per cell."""
    tables = t(np.arange(24.0).reshape(2, 1, 3, 4))
    r, c = t([[[[3.0]]], [[[1.0]]]]), t([[[[2.0]]], [[[4.0]]]])
    same(H["_take"](tables, r - 1, c - 1), gather.take(Value(tables), r - 1, c - 1).t)


@pytest.mark.parametrize("exact", [True, False])
def test_vlookup_hlookup_equal_the_compilers(exact):
    table = torch.cat([SORTED.expand(1, 1, 6, 1), TABLE], 3)
    col = [[[[3.0]]]]
    flag = Value(t([[[[0.0 if exact else 1.0]]]]))
    same(
        H["_vlookup"](KEYS, table, t(col), exact),
        gather.f_vlookup(None, [Value(KEYS), Value(table), v(col), flag]).t,
    )
    tt = table.transpose(2, 3)
    same(
        H["_hlookup"](KEYS, tt, t(col), exact),
        gather.f_hlookup(None, [Value(KEYS), Value(tt), v(col), flag]).t,
    )


@pytest.mark.parametrize("mode", [0, 1, -1, 2])
@pytest.mark.parametrize("search", [1, -1])
@pytest.mark.parametrize("missing", [None, -5.0])
def test_xlookup_equals_the_compilers(mode, search, missing):
    empty = Value(t([[[[0.0]]]]), np.full((1, 1, 1, 1), EMPTY, np.int8))
    miss = empty if missing is None else v([[[[missing]]]])
    args = [Value(KEYS), Value(IDS), Value(TABLE), miss, v([[[[float(mode)]]]]), v([[[[float(search)]]]])]
    want = gather.f_xlookup(None, args).t
    xmode = {0: 0, 2: 0, -1: -2, 1: 2}[mode]
    got = H["_xlookup"](KEYS, IDS, TABLE, None if missing is None else missing, xmode, search == -1)
    same(got, want)


def test_offset_equals_the_compilers():
    rows, cols = t([[[[1.0]], [[4.0]], [[6.0]]]]), t([[[[0.0]]]])
    for top, left, h, w in ((0, 0, 1, 4), (1, 1, 2, 2), (-1, 0, 1, 1)):
        want = gather.offset(Value(TABLE), Value(rows), Value(cols), top, left, h, w).t
        same(H["_offset"](TABLE, rows, cols, top, left, h, w), want)


def test_choose_equals_the_compilers():
    ctx = type("Ctx", (), {"dtype": torch.float64, "device": "cpu"})
    k = t([[[[1.0]], [[2.9]], [[3.0]], [[0.0]], [[4.0]]]])
    vals = [t([[[[10.0]]]]), t([[[[20.0]], [[21.0]], [[22.0]], [[23.0]], [[24.0]]]]), TABLE[:, :, 0:1, :]]
    same(H["_choose"](k, *vals), lookup.f_choose(ctx, [Value(k), *map(Value, vals)]).t)  # with a range
    scalars = lookup.f_choose(ctx, [Value(k), *map(Value, vals[:2])]).t
    same(H["_choose"](k[:, :, 0, 0], 10.0, vals[1][:, :, 0, 0]), scalars[:, :, 0, 0])  # one value per cell
