"""The lesson workbooks' pictures, rendered by LibreOffice (sheet -> PDF -> PNG at 96 dpi): the weight
heatmaps and the playground digit are grids of square cells without numbers. The PNGs of the last run
stay in ``workbooks/preview/`` for the README."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from calclive import ROOT, render
from openpyxl import load_workbook

from xlmnist.lessons.views import CELL_PX, HIDDEN

pytestmark = [pytest.mark.calc_live, pytest.mark.libreoffice, pytest.mark.slow]


def _runs(idx: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """Runs of consecutive indices (a jump of more than ``gap`` starts a new run), as (first, last + 1)."""
    out, start = [], idx[0]
    for a, b in zip(idx, list(idx[1:]) + [None]):
        if b is None or b - a > gap:
            out.append((start, a + 1))
            start = b
    return out


def heatmap_boxes(img: np.ndarray, min_px: int = 40, gap: int = 4) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (top, left, bottom, right) of the coloured (blue-white-red) grids: bands of coloured
    columns, each split into bands of coloured rows."""
    colour = (img.max(axis=2) - img.min(axis=2)) > 12
    boxes = []
    for left, right in _runs(np.flatnonzero(colour.sum(axis=0) > 0), gap):
        rows = np.flatnonzero(colour[:, left:right].sum(axis=1) > 0)
        for top, bottom in _runs(rows, gap):
            if right - left >= min_px and bottom - top >= min_px:
                boxes.append((top, left, bottom, right))
    return boxes


def assert_square_unlabelled(img, box, cells: int = 28):
    top, left, bottom, right = box
    height, width = bottom - top, right - left
    assert abs(width / height - 1) < 0.06, f"grid {width} x {height} px: cells are not square"
    assert abs(height / cells - CELL_PX) < CELL_PX * 0.25 or height / cells < CELL_PX  # narrow cells
    dark = (img[top:bottom, left:right].max(axis=2) < 90).sum()
    assert dark == 0, f"{dark} dark (text) pixels inside the heatmap: numbers are showing"


def test_weights_3v7(calc, books, workdir):
    folder = workdir / "pictures"
    folder.mkdir(exist_ok=True)
    calc.call("open", name="pic3", path=str(books / "mnist_3v7.xlsx"), hidden=False)
    img = render(calc, "pic3", "weights", folder, "mnist_3v7_weights")
    boxes = heatmap_boxes(img)
    assert len(boxes) == 1
    assert_square_unlabelled(img, boxes[0])
    digit = render(calc, "pic3", "playground", folder, "mnist_3v7_playground")
    assert (digit[:, : digit.shape[1] // 2].max(axis=2) < 60).sum() > 100  # the digit is drawn
    ws = load_workbook(books / "mnist_3v7.xlsx")["playground"]
    assert {ws.cell(r, c).number_format for r in range(3, 31) for c in range(2, 30)} == {HIDDEN}
    assert isinstance(ws.cell(10, 10).value, int | float)  # the values are still there


def test_weights_ten_digits_on_one_page(calc, workdir):
    folder = workdir / "ten"
    data = folder / "mnist"
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); from pathlib import Path; "
            f"from testenv import make_tiny_mnist; make_tiny_mnist(Path({str(data)!r}), per_digit=20, test_per_digit=5)")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XLMNIST_DATA": str(data), "XLMNIST_CACHE": str(folder)}
    subprocess.run([sys.executable, "-m", "xlmnist", "build", "--out", str(folder), "--rows", "100", "--only",
                    "mnist.xlsx"], check=True, capture_output=True, env=env)  # fmt: skip
    calc.call("open", name="pic10", path=str(folder / "mnist.xlsx"), hidden=False)
    img = render(calc, "pic10", "weights", folder, "mnist_weights")
    boxes = heatmap_boxes(img, min_px=20)
    assert len(boxes) == 10, boxes  # every digit's heatmap on the one page
    for box in boxes:
        assert_square_unlabelled(img, box)


def test_mnist_3v7_opens_on_its_start_sheet(calc, books, workdir):
    """A short sheet first: every sheet it names exists, the model sheet is named, the button too; the
    compiler still finds the first model sheet when none is given."""
    from xlmnist.compile import compile_workbook

    wb = load_workbook(books / "mnist_3v7.xlsx", read_only=True)
    assert wb.sheetnames[0] == "start" and wb.active.title == "start"
    rows = [(tuple(r) + (None, None))[:2] for r in wb["start"].iter_rows(values_only=True) if any(r)]
    assert len(rows) <= 15
    named = {
        s.strip()
        for r in rows[1:]
        if r[0] and r[1] and r[0] not in ("edit", "press")
        for s in r[0].split(",")
    }
    assert named <= set(wb.sheetnames) and "linear" in named
    assert any(r[0] == "press" and "Train" in r[1] for r in rows)
    assert compile_workbook(books / "mnist_3v7.xlsx").objective_ref.startswith("linear!")
    folder = workdir / "start"
    folder.mkdir(exist_ok=True)
    calc.call("open", name="start", path=str(books / "mnist_3v7.xlsx"), hidden=False)
    img = render(calc, "start", "start", folder, "mnist_3v7_start")
    assert (img.max(axis=2) < 90).sum() > 500  # text on the page
