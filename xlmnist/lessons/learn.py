"""Learner views filled by ``xlmnist train``: a history sheet per model sheet (epochs x 5 block, line
charts of the losses and the validation accuracy, a confusion matrix of the validation set).

The blocks are empty in a built workbook; ``xlmnist.learner.write_training_results`` writes them. Their
places are the model sheet's names ``xlmnist_history`` (``history_<sheet>!$A$3:$E$202``) and
``xlmnist_confusion`` (``history_<sheet>!$H$4:...``: rows = true class, columns = predicted class, in
the order of the labels around it: 3, 7 for the 3-vs-7 models, 0..9 for ten digits).
"""

from __future__ import annotations

import re

from openpyxl.chart import LineChart, Reference

from xlmnist.xlsx.book import Book, absref, col, color_scale, fit_columns, one_page

HISTORY_ROWS = 200
HISTORY_HEAD = ("epoch", "train_loss", "valid_loss", "valid_accuracy", "seconds")
FIRST = 3  # first history row
CM_COL = 8  # H: first confusion column


def _chart(ws, title: str, ycols: list[int], ytitle: str, anchor: str) -> None:
    last = FIRST + HISTORY_ROWS - 1
    chart = LineChart()
    chart.title = title
    chart.width, chart.height = 18, 8
    for c in ycols:
        chart.add_data(Reference(ws, min_col=c, min_row=FIRST - 1, max_row=last), titles_from_data=True)
    chart.set_categories(Reference(ws, min_col=1, min_row=FIRST, max_row=last))
    chart.x_axis.title, chart.y_axis.title = "epoch", ytitle
    chart.x_axis.delete = chart.y_axis.delete = False
    ws.add_chart(chart, anchor)


def history_sheet(book: Book, model_ws, model: str, classes: list[int]) -> None:
    """``history_<model>`` with the history block, two charts and the confusion block; names on the model
    sheet ``model_ws``."""
    name = f"history_{model}"
    ws = book.sheet(name)
    k = len(classes)
    cells: dict[tuple[int, int], object] = {
        (1, 1): book.cell(ws, f"training history of {model} (written by xlmnist train)", bold=True),
        (2, CM_COL - 1): book.cell(ws, "confusion matrix, validation set", bold=True),
        (3, CM_COL - 1): book.cell(ws, "true \\ predicted", bold=True),
    }
    for j, h in enumerate(HISTORY_HEAD):
        cells[(2, 1 + j)] = book.cell(ws, h, bold=True)
    for i, label in enumerate(classes):
        cells[(3, CM_COL + i)] = book.cell(ws, label, bold=True)
        cells[(4 + i, CM_COL - 1)] = book.cell(ws, label, bold=True)
    one_page(ws)  # the table, the matrix and the charts on one page
    fit_columns(ws, [HISTORY_HEAD])  # columns that fit their headers (the titles overflow)
    fit_columns(ws, [[cells[(3, CM_COL - 1)]]], first=CM_COL - 1)
    for r in range(1, max(r for r, _ in cells) + 1):
        row = [cells.get((r, c)) for c in range(1, CM_COL + k)]
        while row and row[-1] is None:
            row.pop()
        ws.append(row)
    cm = f"{col(CM_COL)}4:{col(CM_COL + k - 1)}{3 + k}"
    color_scale(ws, cm, kind="counts")
    _chart(ws, f"{model}: loss per epoch", [2, 3], "loss", f"{col(CM_COL + k + 1)}2")
    _chart(ws, f"{model}: validation accuracy", [4], "accuracy", f"{col(CM_COL + k + 1)}20")
    book.learner_names(
        model_ws,
        history=absref(name, 1, FIRST, len(HISTORY_HEAD), FIRST + HISTORY_ROWS - 1),
        confusion=absref(name, CM_COL, 4, CM_COL + k - 1, 3 + k),
    )


def fit_chart_rows(xml: bytes, sheet: str, first: int, last: int, filled: int) -> bytes:
    """A chart part whose ranges over rows ``first..last`` of ``sheet`` (the history block) end at row
    ``filled`` instead, so the x axis covers exactly the epochs written (``xlmnist train`` rewrites it
    on every run; in Calc, ``xlmnist.calc.live.fit_charts`` does the same through UNO)."""
    name = re.escape(sheet).encode()
    pat = re.compile(
        rb"(<(?:c:)?f>'?"
        + name
        + rb"'?!\$?[A-Z]{1,3}\$?"
        + str(first).encode()
        + rb":\$?[A-Z]{1,3}\$?)(\d+)(</(?:c:)?f>)"
    )

    def fit(m: re.Match) -> bytes:
        return (
            m.group(1) + str(filled).encode() + m.group(3) if first <= int(m.group(2)) <= last else m.group(0)
        )

    return pat.sub(fit, xml)
