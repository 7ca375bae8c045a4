"""The bulk path of the write-back (xlmnist.xlsx.splice) writes the same bytes as the cell-by-cell edit
(SheetEdit.write) and leaves to it every cell it cannot place (so its errors still come)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from xlmnist.compile import compile_workbook
from xlmnist.errors import WorkbookError
from xlmnist.lessons import build_all
from xlmnist.train.results import cached_values, result_blocks
from xlmnist.xlsx import writeback
from xlmnist.xlsx.edits import SheetEdit, format_number
from xlmnist.xlsx.package import sheet_members
from xlmnist.xlsx.splice import _number_texts, splice_blocks

HEAD = b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><dimension ref="A1:F9"/><sheetData>'
ROWS = [
    b'<row r="1"><c r="A1" t="inlineStr"><is><t>w</t></is></c><c r="B1" s="2"><v>1</v></c><c r="C1" t="n"><v>2.5</v></c>'
    b'<c r="D1" s="1" t="n"><v>3</v></c><c r="E1"><f>B1*2</f><v /></c><c r="F1"><f>C1+1</f><v>3.5</v></c></row>',
    b'<row r="2"><c r="B2"><v>4</v></c><c r="C2" t="s"><v>0</v></c><c r="D2"><v>6</v></c>'
    b'<c r="E2"><f>B2*2</f></c><c r="F2" s="3"><f>C2+1</f><v/></c></row>',
    b'<row r="3"><c r="B3"><v>7</v></c><c r="D3"><v>9</v></c><c r="E3"><f>B3*2</f><v>14</v></c></row>',  # no C3
    b'<row r="4"></row>',
    b'<row r="5" spans="1:6"/>',
    b'<row r="6"><c r="B6" s="1"/><c r="C6"></c><c r="D6"><v>1</v></c></row>',
    b'<row r="10"><c r="A10"><v>1</v></c></row>',
]
TAIL = b"</sheetData></worksheet>"


def per_cell(data: bytes, blocks) -> bytes:
    cells = {}
    for op, r1, c1, a in blocks:
        for (i, j), x in np.ndenumerate(a):
            cells[(r1 + i, c1 + j)] = (op, float(x))
    return SheetEdit(data, "s").write(cells)


def bulk(data: bytes, blocks) -> bytes:
    new, leftover = splice_blocks(data, "s", blocks)
    return SheetEdit(new, "s").write(leftover) if leftover else new


@pytest.mark.parametrize(
    "blocks",
    [
        [("v", 1, 2, np.array([[0.25, -1e-7, 3.0]]))],  # numbers with and without s= / t="n"
        [("v", 1, 2, np.array([[0.5, 1.5, 2.5], [4.5, 5.5, 6.5], [7.25, 8.25, 9.25]]))],  # a text, a gap
        [
            ("f", 1, 5, np.array([[1.0, 2.0], [3.0, 4.0]])),
            ("f", 3, 5, np.array([[5.0]])),
        ],  # <v />, none, <v/>, <v>
        [("f", 1, 5, np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))],  # F3 is not there: both refuse
        [("v", 4, 2, np.array([[1.0, 2.0, -0.0], [3.0, 1e20, 0.1]]))],  # empty rows: new cells
        [("v", 4, 7, np.array([[1.0, 2.0]]))],  # new cells beyond <dimension>: it widens
        [("v", 6, 2, np.array([[1.0, 2.0, 3.0]]))],  # self-closing and empty cells
        [("v", 8, 1, np.array([[1.0]]))],  # a row that is not there
        [
            ("v", 7, 2, np.ones((2, 3))),
            ("v", 11, 1, np.array([[2.0, 3.0]])),
        ],  # rows not there: before 10, at the end
        [("v", 9, 1, np.ones((2, 2)))],  # a row not there, then a row with a cell that is not there
        [
            ("f", 1, 5, np.array([[1.0], [2.0]])),
            ("f", 1, 6, np.array([[3.0], [4.0]])),
            ("v", 1, 2, np.array([[9.0], [8.0]])),
        ],  # fmt: skip
    ],
)
def test_bulk_writes_what_cell_by_cell_writes(blocks):
    data = HEAD + b"".join(ROWS) + TAIL
    assert outcome(bulk, data, blocks) == outcome(per_cell, data, blocks)


def outcome(write, data, blocks):
    try:
        return write(data, blocks)
    except WorkbookError as exc:
        return str(exc)


def test_a_long_row_takes_the_fast_path_and_still_matches():
    row = b'<row r="2">' + b"".join(
        b'<c r="%s2" t="n"><v>%d</v></c>' % (c.encode(), i) for i, c in enumerate("BCDEFGH")
    )
    data = HEAD + row + b'<c r="I2"><f>SUM(B2:H2)</f><v>1</v></c></row>' + TAIL
    data = data.replace(b"</row><c", b"<c")
    blocks = [("v", 2, 2, np.arange(7.0)[None] / 3), ("f", 2, 9, np.array([[7.0]]))]
    new, leftover = splice_blocks(data, "s", blocks)
    assert leftover == {} and new == per_cell(data, blocks)


def test_formula_and_array_targets_are_left_to_sheet_edit_which_refuses_them():
    data = HEAD + b"".join(ROWS) + TAIL
    new, leftover = splice_blocks(data, "s", [("v", 1, 5, np.array([[1.0]]))])
    assert new == data and leftover == {(1, 5): ("v", 1.0)}
    with pytest.raises(WorkbookError, match="holds a formula"):
        SheetEdit(new, "s").write(leftover)
    arr = (
        HEAD
        + b'<row r="1"><c r="A1"><f t="array" ref="A1:B1">X</f><v>1</v></c><c r="B1"><v>2</v></c></row>'
        + TAIL
    )
    new, leftover = splice_blocks(arr, "s", [("v", 1, 2, np.array([[5.0]]))])
    assert new == arr and leftover == {(1, 2): ("v", 5.0)}


def test_number_texts_are_format_number():
    rng = np.random.default_rng(0)
    x = rng.normal(size=2000) * 10.0 ** rng.integers(-30, 30, size=2000)
    x = np.concatenate([x, [0.0, -0.0, 1.0, -3.0, 1e15, 1e16, 9999999999999998.0, 5e-324, 0.1]])
    assert [t.encode() for t in _number_texts(x).tolist()] == [format_number(v) for v in x.tolist()]


def test_a_lesson_sheet_written_in_bulk_is_the_same_as_cell_by_cell(tmp_path):
    """What `xlmnist train` writes into the built titanic.xlsx nnet sheet: parameters, gradients, cached results."""
    build_all(tmp_path, only=["titanic.xlsx"])
    book = tmp_path / "titanic.xlsx"
    m = compile_workbook(book, sheet="nnet")
    ps = [p + 0.01 for p in m.initial_params()]
    values = result_blocks(book, m, ps, gradients=[torch.full_like(p, 0.5) for p in ps])
    cached = cached_values(m, ps)
    per = {}
    for op, group in (("f", cached), ("v", values)):
        for ref, v in group.items():
            sheet, cells = writeback._cells_of(ref, v, op)
            per.setdefault(sheet, {}).update(cells)
    out = writeback.write_values(book, values, out=tmp_path / "out.xlsx", cached=cached)
    with zipfile.ZipFile(book) as z0, zipfile.ZipFile(out) as z1:
        members = sheet_members(z0, str(book))
        for sheet, cells in per.items():
            assert z1.read(members[sheet]) == SheetEdit(z0.read(members[sheet]), sheet).write(cells)


UNIFORM = [
    b'<row r="1"><c r="A1" s="4" t="n"><v>1</v></c><c r="B1" s="4" t="n"><v>2</v></c><c r="C1" s="4" t="n"><v>3</v></c></row>',
    b'<row r="2"><c r="A2"><v>1</v></c><c r="B2"><v>2</v></c><c r="C2"><v>3</v></c></row>',
    b'<row r="3"><c r="A3" t="n" s="5"><v>1</v></c><c r="B3" t="n" s="5"><v>2</v></c><c r="C3" s="6"><v>3</v></c></row>',
    b'<row r="4"><c r="A4" t="n"><v>1</v></c><c r="B4" t="n"><v/></c><c r="C4" t="n"><v>3</v></c></row>',
    b'<row r="5"><c r="A5" t="n"><v>1</v></c><c r="B5" t="n"><f>A5</f><v>2</v></c><c r="C5" t="n"><v>3</v></c></row>',
    b'<row r="6"><c r="A6" s="1"><v>1</v></c><c r="B6" s="1"><v>2</v><v>9</v></c><c r="C6" s="1"><v>3</v></c></row>',
]


def test_uniform_rows_write_what_cell_by_cell_writes():
    """Rows of cells with one kind of start tag (the fast case of the row split), and rows that look
    like one but are not (another style, <v/>, a formula, two values): the same bytes as cell by cell."""
    data = HEAD + b"".join(UNIFORM) + TAIL
    blocks = [("v", 1, 1, np.arange(18.0).reshape(6, 3) / 8 - 1)]
    assert outcome(bulk, data, blocks) == outcome(per_cell, data, blocks)
    new, leftover = splice_blocks(data, "s", blocks)
    assert b'<c r="A1" s="4"><v>-1</v></c><c r="B1" s="4"><v>-0.875</v></c>' in new
    assert b'<c r="A3" s="5"><v>-0.25</v></c>' in new and set(leftover) == {(5, 2), (6, 2)}
