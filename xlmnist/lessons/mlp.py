"""The ``mlp`` sheet of mnist.xlsx: 784 -> 256 ReLU -> 10 softmax, built like ``simple_net``.

Layout: W1 in B7:DY791 (column j = hidden unit j, row 791 = bias), W2 in B795:K923 (row i = hidden unit
i, row 923 = bias, column k = digit k), their gradients below (B926:DY1710 and B1713:K1841). Per visible
data row r (data row r - 4): label EA, hidden pre-activations EB..IA (``=MMULT(data!$A2:$ADE2,B$7:B$791)``),
ReLUs IB..NA, Ones NB, logits NC..NL (``=MMULT($IB6:$NB6,B$795:B$923)``), EXP, SUM, softmax,
cross-entropy ``-LN(SUMPRODUCT(onehot,p))``, MATCH prediction, correct.
"""

from __future__ import annotations

import numpy as np

from xlmnist.lessons.models import (
    GRAD_LABEL,
    LABEL,
    ONEHOT0,
    ONEHOT9,
    ONES,
    SETTINGS,
    W_FIRST,
    W_LAST,
    head,
    mnist_names,
    w_block_rows,
)
from xlmnist.xlsx.book import Book, col, fit_columns

HIDDEN = 256
W2_LABEL, W2_HEAD, W2_FIRST = W_LAST + 2, W_LAST + 3, W_LAST + 4  # 793, 794, 795..923
W2_LAST = W2_FIRST + HIDDEN  # 923
G1_LABEL, G1_FIRST = W2_LAST + 2, W2_LAST + 3  # 925, 926..1710
G1_LAST = G1_FIRST + W_LAST - W_FIRST
G2_LABEL, G2_FIRST = G1_LAST + 2, G1_LAST + 3  # 1712, 1713..1841
G2_LAST = G2_FIRST + HIDDEN


def mlp_sheet(book: Book, n: int, w1: np.ndarray, w2: np.ndarray):
    name, off = "mlp", 4  # data row 2 -> sheet row 6
    ws = book.sheet(name)
    left = w_block_rows(book, ws, w1, [f"h{j + 1}" for j in range(HIDDEN)])
    left[W2_LABEL] = [
        book.cell(ws, f"W2 (rows: hidden units h1..h{HIDDEN} and the bias; columns: digits)", bold=True)
    ]
    left[W2_HEAD] = head(book, ws, ["input"] + [f"digit {k}" for k in range(10)])
    for i in range(HIDDEN + 1):
        left[W2_FIRST + i] = [f"h{i + 1}" if i < HIDDEN else "bias (Ones)"] + [float(v) for v in w2[i]]
    left[G1_LABEL] = [book.cell(ws, f"dW1: {GRAD_LABEL} (layout of W1)", bold=True)]
    left[G2_LABEL] = [book.cell(ws, f"dW2: {GRAD_LABEL} (layout of W2)", bold=True)]
    pc = HIDDEN + 3  # EA: label; the weights end at DY, DZ is a gap
    z0, r0 = pc + 1, pc + 1 + HIDDEN
    one, l0 = r0 + HIDDEN, r0 + HIDDEN + 1
    e0, sm = l0 + 10, l0 + 20
    p0 = sm + 1
    loss, pred, cor = p0 + 10, p0 + 11, p0 + 12
    L = col
    last = n + 1 + off
    top = {
        1: [
            book.cell(
                ws, f"mlp: 784 -> {HIDDEN} ReLU -> 10, softmax, cross-entropy loss -LN(p[label])", bold=True
            )
        ],
        2: head(book, ws, ["loss", f"=AVERAGE({L(loss)}6:{L(loss)}{last})"]),
        3: head(book, ws, ["accuracy", f"=AVERAGE({L(cor)}6:{L(cor)}{last})"]),
    }
    header = head(
        book,
        ws,
        ["label"]
        + [f"z{j + 1}" for j in range(HIDDEN)]
        + [f"relu{j + 1}" for j in range(HIDDEN)]
        + ["Ones"]
        + [f"logit{k}" for k in range(10)]
        + [f"exp{k}" for k in range(10)]
        + ["sum exp"]
        + [f"p{k}" for k in range(10)]
        + ["loss", "pred", "correct"],
    )
    fit_columns(ws, [top[2], top[3]] + [left[r] for r in range(W2_HEAD, W2_LAST + 1)])  # A1: the title
    fit_columns(ws, [header], first=pc)
    for r in range(1, max(G2_LABEL, last) + 1):
        row = top.get(r) or left.get(r) or []
        row = row + [None] * (pc - 1 - len(row))
        if r == 5:
            row += header
        elif 6 <= r <= last:
            d = r - off
            row += [f"=data!${LABEL}{d}"]
            row += [
                f"=MMULT(data!$A{d}:${ONES}{d},{L(j + 2)}${W_FIRST}:{L(j + 2)}${W_LAST})"
                for j in range(HIDDEN)
            ]
            row += [f"=IF({L(z0 + j)}{r}<0,0,{L(z0 + j)}{r})" for j in range(HIDDEN)]
            row += [1]
            row += [
                f"=MMULT(${L(r0)}{r}:${L(one)}{r},{L(k + 2)}${W2_FIRST}:{L(k + 2)}${W2_LAST})"
                for k in range(10)
            ]
            row += [f"=EXP({L(l0 + k)}{r}-MAX(${L(l0)}{r}:${L(l0 + 9)}{r}))" for k in range(10)]
            row += [f"=SUM({L(e0)}{r}:{L(e0 + 9)}{r})"]
            row += [f"={L(e0 + k)}{r}/${L(sm)}{r}" for k in range(10)]
            row += [
                f"=-LN(SUMPRODUCT(data!${ONEHOT0}{d}:${ONEHOT9}{d},{L(p0)}{r}:{L(p0 + 9)}{r}))",
                f"=MATCH(MAX({L(p0)}{r}:{L(p0 + 9)}{r}),{L(p0)}{r}:{L(p0 + 9)}{r},0)-1",
                f"=IF({L(pred)}{r}={L(pc)}{r},1,0)",
            ]
        ws.append(row)
    mnist_names(
        book,
        ws,
        name,
        n,
        objective=f"{name}!$B$2",
        params=[f"{name}!$B${W_FIRST}:${L(HIDDEN + 1)}${W_LAST}", f"{name}!$B${W2_FIRST}:$K${W2_LAST}"],
        pred_col=pred,
        pred_off=off,
        accuracy=f"{name}!$B$3",
    )
    book.learner_names(
        ws,
        gradients=[f"{name}!$B${G1_FIRST}:${L(HIDDEN + 1)}${G1_LAST}", f"{name}!$B${G2_FIRST}:$K${G2_LAST}"],
    )
    book.add_settings(name, **SETTINGS[name])
    return ws
