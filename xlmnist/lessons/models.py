"""The MNIST model sheets: ``linear`` and ``simple_net`` (3 vs 7) and ``linear10`` (ten digits).

All of them read the visible example rows of the ``data`` sheet (pixels A..ADD, ``Ones`` ADE, label ADF,
one-hot ADG..ADP for ten digits) with the data row relative and the weights absolute, so each per-row
column is one formula copied down (identical in R1C1 form). Row ``r`` of ``data`` (from 2) is row
``r + offset`` of the model sheet.
"""

from __future__ import annotations

import numpy as np

from xlmnist.xlsx.book import Book, absref, col, fit_columns

NPIX = 784
ONES = col(NPIX + 1)  # ADE
LABEL = col(NPIX + 2)  # ADF
ONEHOT0, ONEHOT9 = col(NPIX + 3), col(NPIX + 12)  # ADG, ADP
W_FIRST, W_LAST = 7, 7 + NPIX  # rows of a 785-row weight block (last row = bias)
G_LABEL, G_FIRST, G_LAST = W_LAST + 2, W_LAST + 3, W_LAST + 3 + NPIX  # its gradient block below it
GRAD_LABEL = "gradient of the objective after the last step"


# training defaults per sheet, checked with hand-written torch runs of the same models on the full datasets
# (valid accuracy: linear 98.3 %, simple_net 98.6 %, linear10 92.7 %, mlp 784-256-10 98.2 %)
SETTINGS = {
    "linear": dict(
        optimizer="sgd",
        lr=1.0,
        epochs=20,
        batch_size=256,
        device="auto",
        seed=0,
        dataset="mnist_3v7",
        lr_schedule="constant",
    ),
    "simple_net": dict(
        optimizer="adam",
        lr=0.001,
        epochs=20,
        batch_size=64,
        device="auto",
        seed=0,
        dataset="mnist_3v7",
        lr_schedule="constant",
    ),
    "linear10": dict(
        optimizer="adam",
        lr=0.001,
        epochs=10,
        batch_size=64,
        device="auto",
        seed=0,
        dataset="mnist",
        lr_schedule="constant",
    ),
    "mlp": dict(
        optimizer="adam",
        lr=0.001,
        epochs=15,
        batch_size=64,
        device="auto",
        seed=0,
        dataset="mnist",
        lr_schedule="linear",
    ),
}


def pixel_name(k: int) -> str:
    return f"r{k // 28}c{k % 28}"


def head(book: Book, ws, values) -> list:
    return [book.cell(ws, v, bold=True) if isinstance(v, str) else v for v in values]


def mnist_names(book: Book, ws, name, n, *, objective, params, pred_col, pred_off, accuracy):
    book.model_names(
        ws,
        objective=objective,
        params=params,
        predictions=absref(name, pred_col, 2 + pred_off, pred_col, n + 1 + pred_off),
        labels=absref("data", NPIX + 2, 2, NPIX + 2, n + 1),
        data=absref("data", 1, 2, NPIX + 2, n + 1),
        accuracy=accuracy,
    )


def linear_sheet(book: Book, n: int, w: np.ndarray):
    """784 weights + bias in row 3; per example: z, sigmoid, mnist_loss, prediction, correct."""
    name, off = "linear", 8  # data row 2 -> sheet row 10
    ws = book.sheet(name)
    last = n + 1 + off
    rows = [
        [book.cell(ws, "linear: p = sigmoid(pixels . w + bias); mnist_loss = IF(y=1, 1-p, p)", bold=True)],
        head(book, ws, [f"w_{pixel_name(k)}" for k in range(NPIX)] + ["bias"]),
        [float(v) for v in w] + [book.cell(ws, "<- weights", bold=True)],
        [None] * (NPIX + 1) + [book.cell(ws, f"<- {GRAD_LABEL}", bold=True)],  # A4:ADE4
        head(book, ws, ["loss", f"=AVERAGE(D10:D{last})"]),
        head(book, ws, ["batch_accuracy", f"=AVERAGE(F10:F{last})"]),
        head(book, ws, ["threshold", 0.5]),
        [],
        head(book, ws, ["label", "z", "p = sigmoid(z)", "mnist_loss", "pred (1 = a 3)", "correct"]),
    ]
    fit_columns(ws, rows[1:3] + rows[4:])  # the weights' header and label, the labels, the row header
    for row in rows:
        ws.append(row)
    for d in range(2, n + 2):
        r = d + off
        ws.append(
            [
                f"=data!${LABEL}{d}",
                f"=SUMPRODUCT(data!$A{d}:${ONES}{d},$A$3:${ONES}$3)",
                f"=1/(1+EXP(-B{r}))",
                f"=IF(A{r}=1,1-C{r},C{r})",
                f"=IF(C{r}>$B$7,1,0)",
                f"=IF(E{r}=A{r},1,0)",
            ]
        )
    mnist_names(
        book,
        ws,
        name,
        n,
        objective="linear!$B$5",
        params=[f"linear!$A$3:${ONES}$3"],
        pred_col=3,
        pred_off=off,
        accuracy="linear!$B$6",
    )
    book.learner_names(ws, gradients=[f"linear!$A$4:${ONES}$4"])
    book.add_settings(name, **SETTINGS[name])
    return ws


def w_block_rows(book: Book, ws, w: np.ndarray, heads: list[str]) -> dict[int, list]:
    """Rows 6..791 (header + 785 weight rows) of the left block: input names in A, weights from B; their
    columns fit the header and the names."""
    rows = {W_FIRST - 1: head(book, ws, ["input"] + heads)}
    for k in range(NPIX + 1):
        label = pixel_name(k) if k < NPIX else "bias (Ones)"
        rows[W_FIRST + k] = [label] + [float(v) for v in w[k]]
    fit_columns(ws, [rows[r] for r in range(W_FIRST - 1, W_LAST + 1)])  # the header, the input names
    rows[G_LABEL] = [book.cell(ws, f"{GRAD_LABEL} (same layout as the weights above)", bold=True)]
    return rows


def simple_net_sheet(book: Book, n: int, w1: np.ndarray, w2: np.ndarray):
    """784 -> 30 ReLU -> 1: W1 in B7:AE791 (column j = hidden unit j, row 791 = bias), W2 in BL4:CP4."""
    name, off = "simple_net", 4  # data row 2 -> sheet row 6
    hid = w1.shape[1]
    ws = book.sheet(name)
    left = w_block_rows(book, ws, w1, [f"h{j + 1}" for j in range(hid)])
    zc, rc = 34, 34 + hid  # AH.., BL..
    onec, outc = rc + hid, rc + hid + 1  # CP, CQ
    R0, ONE, OUT = col(rc), col(onec), col(outc)
    P, LOSS, PRED, COR = (col(outc + i) for i in range(1, 5))
    last = n + 1 + off
    right = {
        3: [None] * (rc - 2) + [book.cell(ws, "dW2", bold=True)],  # BL3:CP3: the gradient of W2
        4: [None] * (rc - 2) + head(book, ws, ["W2"]) + [float(v) for v in w2],
        5: head(
            book,
            ws,
            ["label"]
            + [f"z{j + 1}" for j in range(hid)]
            + [f"relu{j + 1}" for j in range(hid)]
            + ["Ones", "out", "p = sigmoid(out)", "mnist_loss", "pred (1 = a 3)", "correct"],
        ),
    }
    top = {
        1: [book.cell(ws, "simple_net: 784 -> 30 ReLU -> 1, sigmoid, mnist_loss", bold=True)],
        2: head(book, ws, ["loss", f"=AVERAGE({LOSS}6:{LOSS}{last})"]),
        3: head(book, ws, ["batch_accuracy", f"=AVERAGE({COR}6:{COR}{last})"]),
        4: head(book, ws, ["threshold", 0.5]),
    }
    fit_columns(ws, [top[2], top[3], top[4], right[4]])  # the labels (A1 is the title)
    fit_columns(ws, [right[5]], first=33)
    for r in range(1, max(G_LABEL, last) + 1):
        row = top.get(r) or left.get(r) or []
        row = row + [None] * (32 - len(row))  # per-row block from AG (33)
        if r in right:
            row = row[:2] + right[r][2:] if r in (3, 4) else row + right[r]
        elif 6 <= r <= last:
            d = r - off
            row += [f"=data!${LABEL}{d}"]
            row += [
                f"=MMULT(data!$A{d}:${ONES}{d},{col(j + 2)}${W_FIRST}:{col(j + 2)}${W_LAST})"
                for j in range(hid)
            ]
            row += [f"=IF({col(zc + j)}{r}<0,0,{col(zc + j)}{r})" for j in range(hid)]
            row += [
                1,
                f"=SUMPRODUCT({R0}{r}:{ONE}{r},${R0}$4:${ONE}$4)",
                f"=1/(1+EXP(-{OUT}{r}))",
                f"=IF(AG{r}=1,1-{P}{r},{P}{r})",
                f"=IF({P}{r}>$B$4,1,0)",
                f"=IF({PRED}{r}=AG{r},1,0)",
            ]
        ws.append(row)
    params = [f"{name}!$B${W_FIRST}:${col(hid + 1)}${W_LAST}", f"{name}!${R0}$4:${ONE}$4"]
    mnist_names(
        book,
        ws,
        name,
        n,
        objective=f"{name}!$B$2",
        params=params,
        pred_col=outc + 1,
        pred_off=off,
        accuracy=f"{name}!$B$3",
    )
    book.learner_names(
        ws, gradients=[f"{name}!$B${G_FIRST}:${col(hid + 1)}${G_LAST}", f"{name}!${R0}$3:${ONE}$3"]
    )
    book.add_settings(name, **SETTINGS[name])
    return ws


def linear10_sheet(book: Book, n: int, w: np.ndarray):
    """Ten-digit softmax regression: W in B7:K791; logits, EXP, SUM, softmax, cross-entropy, argmax."""
    name, off = "linear10", 4
    ws = book.sheet(name)
    left = w_block_rows(book, ws, w, [f"digit {k}" for k in range(10)])
    last = n + 1 + off
    # M label, N..W logits, X..AG exp, AH sum, AI..AR softmax, AS loss, AT pred, AU correct
    top = {
        1: [book.cell(ws, "linear10: softmax(pixels . W + b), cross-entropy loss -LN(p[label])", bold=True)],
        2: head(book, ws, ["loss", f"=AVERAGE(AS6:AS{last})"]),
        3: head(book, ws, ["accuracy", f"=AVERAGE(AU6:AU{last})"]),
    }
    header = head(
        book,
        ws,
        ["label"]
        + [f"z{k}" for k in range(10)]
        + [f"exp{k}" for k in range(10)]
        + ["sum exp"]
        + [f"p{k}" for k in range(10)]
        + ["loss", "pred", "correct"],
    )
    fit_columns(ws, [top[2], top[3]])  # the labels (A1 is the title)
    fit_columns(ws, [header], first=13)
    for r in range(1, max(G_LABEL, last) + 1):
        row = top.get(r) or left.get(r) or []
        row = row + [None] * (12 - len(row))  # per-row block from M (13)
        if r == 5:
            row += header
        elif 6 <= r <= last:
            d = r - off
            row += [f"=data!${LABEL}{d}"]
            row += [
                f"=MMULT(data!$A{d}:${ONES}{d},{col(k + 2)}${W_FIRST}:{col(k + 2)}${W_LAST})"
                for k in range(10)
            ]
            row += [f"=EXP({col(14 + k)}{r}-MAX($N{r}:$W{r}))" for k in range(10)]
            row += [f"=SUM(X{r}:AG{r})"]
            row += [f"={col(24 + k)}{r}/$AH{r}" for k in range(10)]
            row += [
                f"=-LN(SUMPRODUCT(data!${ONEHOT0}{d}:${ONEHOT9}{d},AI{r}:AR{r}))",
                f"=MATCH(MAX(AI{r}:AR{r}),AI{r}:AR{r},0)-1",
                f"=IF(AT{r}=M{r},1,0)",
            ]
        ws.append(row)
    mnist_names(
        book,
        ws,
        name,
        n,
        objective=f"{name}!$B$2",
        params=[f"{name}!$B${W_FIRST}:$K${W_LAST}"],
        pred_col=46,
        pred_off=off,
        accuracy=f"{name}!$B$3",
    )
    book.learner_names(ws, gradients=[f"{name}!$B${G_FIRST}:$K${G_LAST}"])
    book.add_settings(name, **SETTINGS[name])
    return ws
