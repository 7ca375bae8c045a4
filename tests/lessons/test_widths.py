"""Column widths of the built lesson workbooks: every header and every label beside a value fits its
column (``xlmnist.xlsx.book.fit_columns``), while the weight and playground grids keep their narrow
square cells. Read from the files as written (the ``<col>`` elements, the cells and their fonts)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from openpyxl import load_workbook

from xlmnist.lessons.views import CELL_PX, SIDE, _grid_origin
from xlmnist.xlsx.book import DEFAULT_WIDTH, MAX_WIDTH, WIDTH_PAD
from xlmnist.xlsx.package import sheet_members

ROOT = Path(__file__).resolve().parents[2]
BOOKS = ("titanic.xlsx", "mnist_3v7.xlsx", "mnist.xlsx")
M = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
SQUARE = round((CELL_PX - 5) / 7, 4)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_mnist) -> Path:
    """The three workbooks, 20 visible rows, from the tiny MNIST."""
    out = tmp_path_factory.mktemp("widths")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XLMNIST_DATA": str(tiny_mnist),
           "XLMNIST_CACHE": str(out / "cache")}  # fmt: skip
    cmd = [sys.executable, "-m", "xlmnist", "build", "--out", str(out), "--rows", "20"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out


def col_widths(path: Path) -> dict[str, dict[int, float]]:
    """{sheet: {column: width}} of the columns that have a width in the file."""
    out = {}
    with zipfile.ZipFile(path) as zf:
        for sheet, member in sheet_members(zf, str(path)).items():
            widths = out.setdefault(sheet, {})
            for c in ET.fromstring(zf.read(member)).iter(M + "col"):
                if c.get("width") is not None:
                    for k in range(int(c.get("min")), int(c.get("max")) + 1):
                        widths[k] = float(c.get("width"))
    return out


def headers(ws) -> list[tuple[str, int, str]]:
    """(coordinate, column, text) of the sheet's headers and labels: a constant text with a value to its
    right (a label, cut off by a narrow column), or a bold text with a value to its left (a header row).
    Titles (a text alone in its row part) may overflow into their empty neighbours."""
    cells, found = {}, []
    for row in ws.iter_rows():
        for c in row:
            if c.value is not None and c.value != "":
                cells[(c.row, c.column)] = c
    for (r, k), c in cells.items():
        if c.data_type != "s" or str(c.value).startswith("="):
            continue
        bold = bool(c.font is not None and c.font.b)
        if (r, k + 1) in cells or (bold and (r, k - 1) in cells):
            found.append((c.coordinate, k, str(c.value)))
    return found


@pytest.mark.parametrize("book", BOOKS)
def test_every_header_fits_its_column(built, book):
    widths = col_widths(built / book)
    wb = load_workbook(built / book, read_only=True)
    short, seen = [], {}
    for ws in wb.worksheets:
        found = headers(ws)
        seen[ws.title] = len(found)
        for ref, k, text in found:
            width = widths[ws.title].get(k, DEFAULT_WIDTH)
            if width < min(len(text) + WIDTH_PAD, MAX_WIDTH) or width < len(text):
                short.append(f"{ws.title}!{ref} {text!r}: width {width}")
    wb.close()
    assert not short, "\n".join(short)
    for sheet, n in seen.items():  # every sheet but the pictures has headers to check
        assert n > 0 or sheet == "weights", sheet


def test_the_headers_that_were_cut_off_are_wide_now(built):
    """Examples of labels that were cut off or ran into each other at the default width."""
    w3, wt = col_widths(built / "mnist_3v7.xlsx"), col_widths(built / "titanic.xlsx")
    assert w3["linear"][1] >= len("batch_accuracy") + WIDTH_PAD  # A6, beside its value
    assert w3["linear"][5] >= len("pred (1 = a 3)") + WIDTH_PAD
    assert w3["history_linear"][4] >= len("valid_accuracy") + WIDTH_PAD
    assert w3["settings"][3] >= len("mnist_3v7") + WIDTH_PAD
    assert wt["linear"][26] >= len("Total loss:") + WIDTH_PAD  # Z7
    assert 30 not in w3["linear"]  # w_r1c1 fits in the default width: no <col> written for it


@pytest.mark.parametrize("book", ["mnist_3v7.xlsx", "mnist.xlsx"])
def test_the_grids_keep_square_cells(built, book):
    widths = col_widths(built / book)
    if book == "mnist.xlsx":
        _, c9 = _grid_origin(9)
        grid = range(_grid_origin(0)[1], c9 + SIDE)
    else:
        grid = range(2, SIDE + 2)
    assert {widths["weights"][k] for k in grid} == {SQUARE}
    assert {widths["playground"][k] for k in range(2, SIDE + 2)} == {SQUARE}  # the digit's grid
    assert widths["playground"][SIDE + 3] >= len("prediction") + WIDTH_PAD  # the answer beside it
    with zipfile.ZipFile(built / book) as zf:  # printed on one page: the digit and the answer together
        sheet = ET.fromstring(zf.read(sheet_members(zf, book)["playground"]))
    assert sheet.find(f"{M}sheetPr/{M}pageSetUpPr").get("fitToPage") in ("1", "true")
