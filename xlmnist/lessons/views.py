"""View sheets: weights as 28 x 28 colour-scaled grids, and a playground grid to type a digit into.

The grids are pictures: narrow square cells (``CELL_PX`` pixels a side at 96 dpi, in Excel and in
LibreOffice alike) whose numbers are hidden by the number format ``;;;`` (the values are still there, in
the formula bar and to formulas). The ten digits' heatmaps of ``mnist.xlsx`` open zoomed out to
``ZOOM_10`` % so that all ten fit on one screen.
"""

from __future__ import annotations

import numpy as np
from openpyxl.cell import WriteOnlyCell
from openpyxl.worksheet.formula import ArrayFormula

from xlmnist.lessons.models import NPIX, ONES, W_FIRST, W_LAST
from xlmnist.xlsx.book import Book, col, color_scale, fit_columns, one_page

SIDE = 28
CELL_PX = 18  # a grid cell's side in pixels (Excel: 7 * width + 5; LibreOffice: about the same here)
ZOOM_10 = 45  # % zoom of the ten-digit weights sheet: 5 x 30 columns in 1,215 pixels
HIDDEN = ";;;"  # number format that shows nothing
START_WIDTH = 100  # the start sheet's text column at most (one landscape page)


def _hide(ws, value) -> WriteOnlyCell:
    cell = WriteOnlyCell(ws, value=value)
    cell.number_format = HIDDEN
    return cell


def _square(ws, first_col: int, last_col: int, rows) -> None:
    """Columns first_col..last_col and ``rows`` CELL_PX pixels wide/high (Excel: width = (px - 5) / 7)."""
    for c in range(first_col, last_col + 1):
        ws.column_dimensions[col(c)].width = round((CELL_PX - 5) / 7, 4)
    for r in rows:
        ws.row_dimensions[r].height = CELL_PX * 0.75


def _pixel_values(img: np.ndarray) -> list[list]:
    return [[_pix(v) for v in row] for row in img]


def _pix(v) -> float | int:
    v = int(v)
    return 0 if v == 0 else 1 if v == 255 else v / 255


def weights_3v7(book: Book) -> None:
    """``weights``: linear!A3:ADD3 as a 28 x 28 grid in B3:AC30 (``=linear!A3`` ...)."""
    ws = book.sheet("weights")
    _square(ws, 1, SIDE + 1, range(2, SIDE + 3))
    ws.append(
        [
            book.cell(
                ws, "linear weights as an image: w for pixel (row, column); red = evidence for a 3", bold=True
            )
        ]
    )
    ws.append([None] + [_hide(ws, c) for c in range(SIDE)])
    for r in range(SIDE):
        ws.append([_hide(ws, r)] + [_hide(ws, f"=linear!{col(r * SIDE + c + 1)}3") for c in range(SIDE)])
    color_scale(ws, f"B3:{col(SIDE + 1)}{SIDE + 2}")


def _grid_origin(k: int) -> tuple[int, int]:
    """Top-left (row, column) of digit k's grid on the ten-digit weights sheet (two rows of five)."""
    return 3 + (k // 5) * (SIDE + 3), 2 + (k % 5) * (SIDE + 2)


def weights_10(book: Book) -> None:
    """``weights``: each digit's 784 weights (a column of linear10) as a 28 x 28 grid; each grid row is one
    array formula ``{=TRANSPOSE(linear10!B7:B34)}`` (28 blocks per digit instead of 784 one-cell ones)."""
    ws = book.sheet("weights")
    _, last_c = _grid_origin(9)
    rows = [r0 + r for r0 in (_grid_origin(0)[0], _grid_origin(5)[0]) for r in range(SIDE)]
    _square(ws, 1, last_c + SIDE - 1, rows)
    ws.sheet_view.zoomScale = ZOOM_10
    one_page(ws)  # printed (and rendered) on one landscape page
    cells: dict[tuple[int, int], object] = {
        (1, 1): book.cell(ws, "linear10 weights per digit (red = evidence for it)", bold=True)
    }
    for k in range(10):
        r0, c0 = _grid_origin(k)
        cells[(r0 - 1, c0)] = book.cell(ws, f"digit {k}", bold=True)
        wcol = col(k + 2)
        for r in range(SIDE):
            first = W_FIRST + r * SIDE
            ref = f"{col(c0)}{r0 + r}:{col(c0 + SIDE - 1)}{r0 + r}"
            cells[(r0 + r, c0)] = _hide(
                ws, ArrayFormula(ref, f"=TRANSPOSE(linear10!{wcol}{first}:{wcol}{first + SIDE - 1})")
            )
            for c in range(1, SIDE):
                cells[(r0 + r, c0 + c)] = _hide(ws, None)
        color_scale(ws, f"{col(c0)}{r0}:{col(c0 + SIDE - 1)}{r0 + SIDE - 1}")
    _write_cells(ws, cells)


def _write_cells(ws, cells: dict[tuple[int, int], object], labels: int | None = None) -> None:
    """Append ``cells`` ({(row, column): value}) row by row; the columns from ``labels`` on (the
    playground's table beside the grid) first fit their text."""
    nrows = max(r for r, _ in cells)
    ncols = max(c for _, c in cells)
    rows = []
    for r in range(1, nrows + 1):
        row = [cells.get((r, c)) for c in range(1, ncols + 1)]
        while row and row[-1] is None:
            row.pop()
        rows.append(row)
    if labels is not None:
        fit_columns(ws, [row[labels - 1 :] for row in rows], first=labels)
    for row in rows:
        ws.append(row)


def playground_3v7(book: Book, image: np.ndarray) -> None:
    """A 28 x 28 input grid (B3:AC30, prefilled with a 3) scored by the linear weights."""
    ws = book.sheet("playground")
    cells: dict[tuple[int, int], object] = {
        (1, 1): book.cell(
            ws, "Type pixel values (0 = white .. 1 = black) into B3:AC30; the linear model answers", bold=True
        )
    }
    _grid(ws, cells, image)
    grid = f"B3:{col(SIDE + 1)}{SIDE + 2}"
    pc = SIDE + 3  # AE
    for i, (label, formula) in enumerate(
        [
            ("z", f"=SUMPRODUCT({grid},weights!{grid})+linear!${ONES}$3"),
            ("P(3)", f"=1/(1+EXP(-{col(pc + 1)}3))"),
            ("prediction", f"=IF({col(pc + 1)}4>linear!$B$7,3,7)"),  # a number: recomputed on write-back
        ]
    ):
        cells[(3 + i, pc)] = book.cell(ws, label, bold=True)
        cells[(3 + i, pc + 1)] = formula
    _write_cells(ws, cells, labels=pc)
    color_scale(ws, grid, kind="pixels")


def playground_10(book: Book, image: np.ndarray) -> None:
    """A 28 x 28 input grid scored by each digit's weights grid; softmax and the predicted digit."""
    ws = book.sheet("playground")
    cells: dict[tuple[int, int], object] = {
        (1, 1): book.cell(
            ws, "Type pixel values (0 = white .. 1 = black) into B3:AC30; linear10 answers", bold=True
        )
    }
    _grid(ws, cells, image)
    grid = f"B3:{col(SIDE + 1)}{SIDE + 2}"
    pc = SIDE + 3  # AE digit, AF z, AG exp, AH p
    Z, E, P = col(pc + 1), col(pc + 2), col(pc + 3)
    for i, h in enumerate(["digit", "z", "exp", "p"]):
        cells[(3, pc + i)] = book.cell(ws, h, bold=True)
    for k in range(10):
        r = 4 + k
        r0, c0 = _grid_origin(k)
        wgrid = f"{col(c0)}{r0}:{col(c0 + SIDE - 1)}{r0 + SIDE - 1}"
        cells[(r, pc)] = k
        cells[(r, pc + 1)] = f"=SUMPRODUCT({grid},weights!{wgrid})+linear10!{col(k + 2)}{W_LAST}"
        cells[(r, pc + 2)] = f"=EXP({Z}{r}-MAX(${Z}$4:${Z}$13))"
        cells[(r, pc + 3)] = f"={E}{r}/SUM(${E}$4:${E}$13)"
    cells[(15, pc)] = book.cell(ws, "prediction", bold=True)
    cells[(15, pc + 1)] = f"=MATCH(MAX({P}4:{P}13),{P}4:{P}13,0)-1"
    _write_cells(ws, cells, labels=pc)
    color_scale(ws, grid, kind="pixels")


def _grid(ws, cells: dict, image: np.ndarray) -> None:
    """The playground's digit, drawn like the weights: square cells, numbers hidden; the model's answer
    beside it on the same page."""
    _square(ws, 1, SIDE + 2, range(2, SIDE + 3))
    one_page(ws, "portrait")
    for c in range(SIDE):
        cells[(2, c + 2)] = _hide(ws, c)
    for r, row in enumerate(_pixel_values(image)):
        cells[(3 + r, 1)] = _hide(ws, r)
        for c, v in enumerate(row):
            cells[(3 + r, 2 + c)] = _hide(ws, v)


assert NPIX == SIDE * SIDE


START_PRESS = (
    "Train on the xlmnist toolbar (LibreOffice Calc) or the xlmnist ribbon tab (Excel), on the model sheet",
    "Step: one optimisation step; Reset: random weights again; Export: the model as PyTorch code",
    "or in a terminal: xlmnist train {book} --sheet {sheet}",
)

START_3V7 = (
    "is it a 3 or a 7? A linear model and a small neural net in which every number is a cell",
    [
        ("data", "the visible training images: 784 pixels (0-1) per row, Ones, label (1 = a 3, 0 = a 7)"),
        ("linear", "one weight per pixel (row 3), sigmoid, loss, accuracy: the model to start with"),
        ("simple_net", "784 -> 30 ReLU -> 1: a 785 x 30 weight block and MMULT"),
        ("weights", "the linear weights as a 28 x 28 picture (red = evidence for a 3)"),
        ("playground", "a digit to draw (type 0-1 into the grid) and the linear model's answer"),
        (
            "history_linear, history_simple_net",
            "loss and accuracy per epoch, confusion matrix (after training)",
        ),
        ("settings", "optimizer, learning rate, epochs, batch size and dataset per model sheet"),
    ],
    "the weights on linear (row 3) or simple_net, or a pixel on playground; the loss cells follow",
    "linear",
)
START_10 = (
    "which digit is it? Ten-class models in which every number is a cell",
    [
        ("data", "the visible training images: 784 pixels (0-1), Ones, label and one-hot columns"),
        ("linear10", "785 x 10 weights, softmax, cross-entropy, predicted digit: the model to start with"),
        ("mlp", "784 -> 256 ReLU -> 10 softmax (its first rows are visible)"),
        ("weights", "each digit's linear10 weights as a 28 x 28 picture, all ten on one screen"),
        ("playground", "a digit to draw and linear10's answer"),
        ("history_linear10, history_mlp", "loss and accuracy per epoch, confusion matrix (after training)"),
        ("settings", "optimizer, learning rate, epochs, batch size and dataset per model sheet"),
    ],
    "the weights on linear10 or mlp, or a pixel on playground; the loss cells follow",
    "linear10",
)


def start_sheet(
    book: Book, name: str, about: str, sheets: list[tuple[str, str]], edit: str, model: str
) -> None:
    """The sheet a workbook opens on: what is here, which sheet to edit, which button to press."""
    ws = book.sheet("start")
    one_page(ws)  # one page wide when printed
    rows = [[book.cell(ws, name, bold=True), about], [], [book.cell(ws, "what is here", bold=True)]]
    rows += [[sheet, what] for sheet, what in sheets]
    rows += [[], [book.cell(ws, "edit", bold=True), edit]]
    rows += [
        [book.cell(ws, "press", bold=True) if i == 0 else None, line.format(book=name, sheet=model)]
        for i, line in enumerate(START_PRESS)
    ]
    fit_columns(ws, rows, cap=START_WIDTH)  # A: the sheet names; B: the longest line
    for row in rows:
        ws.append(row)
