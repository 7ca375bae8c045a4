"""titanic.xlsx: the course's three Titanic models (linear, nnet, mmult) with fresh random parameters.

The layout copies the course workbook: data in A..P with a header in row 3 and rows from 4, raw columns
A..H, feature formulas I..O (``=E4/$E$1``, ``=LOG10(F4+1)``, ``=IF(C4=1,1,0)`` ...), ``Ones`` in P,
parameters from column R, the model columns after them and an objective cell. Plain A1 references
(no Excel Tables). Initial parameters: uniform(-0.5, 0.5) from ``numpy.random.default_rng([seed, 1])``;
the mmult sheet holds the transpose of nnet's parameters, so both start at the same loss.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from openpyxl.worksheet.formula import ArrayFormula

from xlmnist.xlsx.book import Book, absref, exact, fit_columns

RAW = ["Survived", "Embarked", "Pclass", "Sex", "Age", "Fare", "SibSp", "Parch"]
FEATURES = [
    "SibSp",
    "Parch",
    "Age_N",
    "log_Fare",
    "Pclass_1",
    "Pclass_2",
    "Embark_S",
    "Embark_C",
    "Male",
    "Ones",
]
HEADERS = RAW + FEATURES[2:]  # A..P
FIRST = 4  # first data row


def init_params(seed: int) -> dict[str, np.ndarray]:
    """The initial parameters of every sheet (also used by the tests)."""
    rng = np.random.default_rng([seed, 1])
    lin = rng.uniform(-0.5, 0.5, size=(1, 10))
    net = rng.uniform(-0.5, 0.5, size=(2, 10))
    return {"linear": lin, "nnet": net, "mmult": net.T.copy()}


def _raw_rows(table, rows: int):
    out = []
    for rec in table[RAW].head(rows).itertuples(index=False):
        s, emb, pc, sex, age, fare, sib, par = rec
        out.append([int(s), str(emb), int(pc), str(sex), float(age), float(fare), int(sib), int(par)])
    return out


def _feature_formulas(r: int) -> list:
    return [
        f"=E{r}/$E$1",
        f"=LOG10(F{r}+1)",
        f"=IF(C{r}=1,1,0)",
        f"=IF(C{r}=2,1,0)",
        f'=IF(B{r}="S",1,0)',
        f'=IF(B{r}="C",1,0)',
        f'=IF(D{r}="male",1,0)',
        1,
    ]


def _rows(table, rows: int):
    """Raw values + feature formulas per data row; empty rows up to row 25 (mmult's params and their
    gradients)."""
    raws = _raw_rows(table, rows)
    for i in range(max(rows, 22)):
        yield raws[i] + _feature_formulas(FIRST + i) if i < rows else [None] * 16


def _pad(row: list, upto: int) -> list:
    """``row`` extended with None up to ``upto`` cells (1-based column upto)."""
    return row + [None] * (upto - len(row))


def _top_rows(book: Book, ws, last: int) -> list[list]:
    row1 = [
        book.cell(ws, "Data", bold=True),
        None,
        None,
        "Max:",
        f"=MAX(E{FIRST}:E{last})",
        f"=MAX(F{FIRST}:F{last})",
    ]
    return [_pad(row1, 17) + [book.cell(ws, "Params", bold=True)], []]


GRAD_LABEL = "gradient of the objective after the last step (below)"
GRADS = {"linear": (9, "R10:AA10"), "nnet": (7, "R8:AA9"), "mmult": (15, "S16:T25")}  # label row, area


def _grad_label(book: Book, ws, name: str, r: int, row: list) -> list:
    """Put the gradient block's label in column R of its row; name the block ``xlmnist_gradients``."""
    if r != GRADS[name][0]:
        return row
    row = _pad(row, 18)
    row[17] = book.cell(ws, GRAD_LABEL, bold=True)
    return row


def _grad_name(book: Book, ws, name: str) -> None:
    a, b = GRADS[name][1].split(":")
    book.learner_names(ws, gradients=[f"{name}!" + ":".join(_dollar(x) for x in (a, b))])


def _dollar(cell: str) -> str:
    letters = cell.rstrip("0123456789")
    return f"${letters}${cell[len(letters) :]}"


def _header(book: Book, ws) -> list:
    return [book.cell(ws, h, bold=True) for h in HEADERS] + [None]


def _begin(ws, top: list[list], header: list, labels: tuple = ()) -> None:
    """Rows 1..3 (the top rows and the header); first the columns fit them and ``labels`` (column,
    texts) further down beside their values ("Total loss:", mmult's feature names)."""
    fit_columns(ws, [*top, header])
    for first, texts in labels:
        fit_columns(ws, [[t] for t in texts], first=first)
    for row in [*top, header]:
        ws.append(row)


def _common_names(
    book: Book, ws, name: str, last: int, objective: str, params: list[str], pred_col: int, acc: str
):
    book.model_names(
        ws,
        objective=objective,
        params=params,
        predictions=absref(name, pred_col, FIRST, pred_col, last),
        labels=absref(name, 1, FIRST, 1, last),
        data=absref(name, 1, FIRST, 16, last),
        accuracy=acc,
    )


def _linear(book: Book, table, rows: int, w: np.ndarray) -> None:
    name, last = "linear", FIRST + rows - 1
    ws = book.sheet(name)
    top = _top_rows(book, ws, last)
    top[0] = _pad(top[0], 28) + [book.cell(ws, "Model", bold=True)]
    header = (
        _header(book, ws)
        + [book.cell(ws, h, bold=True) for h in FEATURES[:-1] + ["Const"]]
        + [None]
        + [book.cell(ws, h, bold=True) for h in ("Linear", "Loss", "Pred", "Correct")]
    )
    _begin(ws, top, header, labels=((26, ["Total loss:", "Accuracy:"]),))
    for i, raw in enumerate(_rows(table, rows)):
        r = FIRST + i
        row = raw + [None]
        row += [float(v) for v in w[0]] if i == 0 else [None] * 10
        if i < rows:
            row += [
                None,
                f"=SUMPRODUCT(G{r}:P{r},$R$4:$AA$4)",
                f"=(AC{r}-A{r})^2",
                f"=IF(AC{r}>0.5,1,0)",
                f"=IF(AE{r}=A{r},1,0)",
            ]
        row = _pad(row, 27)
        if r == 7:
            row[25], row[26] = "Total loss:", f"=AVERAGE(AD{FIRST}:AD{last})"
        if r == 8:
            row[25], row[26] = "Accuracy:", f"=AVERAGE(AF{FIRST}:AF{last})"
        ws.append(_grad_label(book, ws, name, r, row))
    _grad_name(book, ws, name)
    _common_names(book, ws, name, last, "linear!$AA$7", ["linear!$R$4:$AA$4"], 29, "linear!$AA$8")
    book.add_settings(
        name, optimizer="lbfgs", lr=1, epochs=100, batch_size=0, device="auto", seed=0, dataset=""
    )


def _nnet(book: Book, table, rows: int, w: np.ndarray) -> None:
    name, last = "nnet", FIRST + rows - 1
    ws = book.sheet(name)
    top = _top_rows(book, ws, last)
    top[0] = _pad(top[0], 28) + [
        book.cell(ws, "Model", bold=True),
        None,
        None,
        None,
        "Total loss:",
        f"=AVERAGE(AH{FIRST}:AH{last})",
    ]
    top[1] = [None] * 32 + ["Accuracy:", f"=AVERAGE(AJ{FIRST}:AJ{last})"]
    heads = ["Lin1", "Lin2", "ReLU1", "ReLU2", "Preds", "Loss", "Pred", "Correct"]
    header = (
        _header(book, ws)
        + [book.cell(ws, h, bold=True) for h in FEATURES[:-1] + ["Const"]]
        + [None]
        + [book.cell(ws, h, bold=True) for h in heads]
    )
    _begin(ws, top, header)
    for i, raw in enumerate(_rows(table, rows)):
        r = FIRST + i
        row = raw + [None]
        row += [float(v) for v in w[i]] if i < 2 else [None] * 10
        if i < rows:
            row += [
                None,
                f"=SUMPRODUCT(G{r}:P{r},$R$4:$AA$4)",
                f"=SUMPRODUCT(G{r}:P{r},$R$5:$AA$5)",
                f"=IF(AC{r}<0,0,AC{r})",
                f"=IF(AD{r}<0,0,AD{r})",
                f"=AE{r}+AF{r}",
                f"=(A{r}-AG{r})^2",
                f"=IF(AG{r}>0.5,1,0)",
                f"=IF(AI{r}=A{r},1,0)",
            ]
        ws.append(_grad_label(book, ws, name, r, row))
    _grad_name(book, ws, name)
    _common_names(book, ws, name, last, "nnet!$AH$1", ["nnet!$R$4:$AA$5"], 33, "nnet!$AH$2")
    book.add_settings(
        name, optimizer="lbfgs", lr=1, epochs=100, batch_size=0, device="auto", seed=0, dataset=""
    )


def _mmult(book: Book, table, rows: int, w: np.ndarray) -> None:
    name, last = "mmult", FIRST + rows - 1
    ws = book.sheet(name)
    top = _top_rows(book, ws, last)
    top[0] = _pad(top[0], 21) + [
        book.cell(ws, "Model", bold=True),
        None,
        None,
        None,
        "Total loss:",
        f"=AVERAGE(AA{FIRST}:AA{last})",
    ]
    top[1] = [None] * 25 + ["Accuracy:", f"=AVERAGE(AC{FIRST}:AC{last})"]
    heads = ["Lin1", "Lin2", "ReLU1", "ReLU2", "Preds", "Loss", "Pred", "Correct"]
    header = (
        _header(book, ws)
        + [book.cell(ws, h, bold=True) for h in ("Column", "Param1", "Param2")]
        + [None]
        + [book.cell(ws, h, bold=True) for h in heads]
    )
    _begin(ws, top, header, labels=((18, FEATURES),))
    for i, raw in enumerate(_rows(table, rows)):
        r = FIRST + i
        row = raw + [None]
        row += [FEATURES[i], float(w[i, 0]), float(w[i, 1])] if i < 10 else [None] * 3
        if i < rows:
            row += [
                None,
                ArrayFormula(f"V{FIRST}:W{last}", f"=MMULT(G{FIRST}:P{last},S4:T13)") if i == 0 else None,
            ]
            row += [
                None,
                f"=IF(V{r}<0,0,V{r})",
                f"=IF(W{r}<0,0,W{r})",
                f"=X{r}+Y{r}",
                f"=(A{r}-Z{r})^2",
                f"=IF(Z{r}>0.5,1,0)",
                f"=IF(AB{r}=A{r},1,0)",
            ]
        ws.append(_grad_label(book, ws, name, r, row))
    _grad_name(book, ws, name)
    _common_names(book, ws, name, last, "mmult!$AA$1", ["mmult!$S$4:$T$13"], 26, "mmult!$AA$2")
    book.add_settings(
        name, optimizer="lbfgs", lr=1, epochs=100, batch_size=0, device="auto", seed=0, dataset=""
    )


@exact
def build(path: Path, rows: int | None = None, seed: int = 0) -> Path:
    """Write titanic.xlsx (all 712 rows, or the first ``rows``)."""
    from xlmnist.data import titanic_table  # deferred: pandas, only when this workbook is built

    table = titanic_table()
    n = len(table) if rows is None else min(rows, len(table))
    params = init_params(seed)
    book = Book()
    _linear(book, table, n, params["linear"])
    _nnet(book, table, n, params["nnet"])
    _mmult(book, table, n, params["mmult"])
    book.write_settings()
    book.save(path)
    return path
