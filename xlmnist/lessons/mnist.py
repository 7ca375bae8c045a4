"""mnist_3v7.xlsx and mnist.xlsx: a ``data`` sheet of visible example rows plus the model and view sheets.

Visible rows: a seeded, balanced sample of the *train* split (``numpy.random.default_rng([seed, 2])`` for
3 vs 7: half 3s, half 7s; ``[seed, 3]`` for ten digits: N/10 of each), shuffled. Pixel cells hold
pixel/255. Initial parameters (``init_params``): linear N(0, 1) * 0.01; simple_net PyTorch ``nn.Linear``'s
default uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)); linear10 N(0, 1) * 0.01.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xlmnist.errors import DataError
from xlmnist.lessons import learn, models, views
from xlmnist.lessons.mlp import HIDDEN as MLP_HIDDEN
from xlmnist.lessons.mlp import mlp_sheet
from xlmnist.xlsx.book import Book, exact, fit_columns

HIDDEN = 30
MLP_ROWS = 200  # the mlp sheet reads only the first MLP_ROWS visible data rows (LibreOffice speed)


def init_params(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, 4])
    lin = rng.standard_normal(785) * 0.01
    b1, b2 = 1 / np.sqrt(784), 1 / np.sqrt(HIDDEN)
    w1 = rng.uniform(-b1, b1, size=(785, HIDDEN))
    w2 = rng.uniform(-b2, b2, size=HIDDEN + 1)
    w10 = np.random.default_rng([seed, 5]).standard_normal((785, 10)) * 0.01
    rng6 = np.random.default_rng([seed, 6])
    m1 = rng6.uniform(-b1, b1, size=(785, MLP_HIDDEN))
    bm = 1 / np.sqrt(MLP_HIDDEN)
    m2 = rng6.uniform(-bm, bm, size=(MLP_HIDDEN + 1, 10))
    return {
        "linear": lin,
        "simple_net_w1": w1,
        "simple_net_w2": w2,
        "linear10": w10,
        "mlp_w1": m1,
        "mlp_w2": m2,
    }


def sample_3v7(train_y: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """Indices of a balanced (3s first rounded up), shuffled sample of ``rows`` train examples."""
    rng = np.random.default_rng([seed, 2])
    threes, sevens = np.flatnonzero(train_y == 1), np.flatnonzero(train_y == 0)
    n3 = min((rows + 1) // 2, len(threes))
    n7 = min(rows - n3, len(sevens))
    idx = np.concatenate([rng.choice(threes, n3, replace=False), rng.choice(sevens, n7, replace=False)])
    return rng.permutation(idx)


def sample_digits(train_y: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """Indices of a stratified (N/10 per digit), shuffled sample of ``rows`` train examples."""
    rng = np.random.default_rng([seed, 3])
    parts = []
    for k in range(10):
        pool = np.flatnonzero(train_y == k)
        parts.append(rng.choice(pool, min(rows // 10 + (k < rows % 10), len(pool)), replace=False))
    return rng.permutation(np.concatenate(parts))


_PIX = [0] + [v / 255 for v in range(1, 255)] + [1]


def data_sheet(book: Book, x: np.ndarray, y: np.ndarray, onehot: bool) -> None:
    """``data``: header, then per example 784 pixel/255 cells, Ones, label (and ten one-hot formulas)."""
    ws = book.sheet("data")
    ws.freeze_panes = "A2"  # before the first row: write-only sheets write their views first
    head = [models.pixel_name(k) for k in range(models.NPIX)] + ["Ones", "label"]
    if onehot:
        head += list(range(10))  # numeric headers: one-hot column k holds =IF($ADF2=k,1,0)
    header = [book.cell(ws, h, bold=True) for h in head]
    fit_columns(ws, [header])
    ws.append(header)
    flat = x.reshape(len(x), -1)
    for i in range(len(flat)):
        r = i + 2
        row = [_PIX[v] for v in flat[i].tolist()] + [1, int(y[i])]
        if onehot:
            row += [f"=IF(${models.LABEL}{r}={models.col(models.NPIX + 3 + k)}$1,1,0)" for k in range(10)]
        ws.append(row)


@exact
def build_3v7(path: Path, rows: int = 1000, seed: int = 0) -> Path:
    from xlmnist.data import load_3v7  # deferred: only when this workbook is built

    d = load_3v7()
    idx = sample_3v7(np.asarray(d["train_y"]), rows, seed)
    params = init_params(seed)
    book = Book()
    views.start_sheet(book, "mnist_3v7.xlsx", *views.START_3V7)
    data_sheet(book, np.asarray(d["train_x"])[idx], np.asarray(d["train_y"])[idx], onehot=False)
    lin = models.linear_sheet(book, len(idx), params["linear"])
    net = models.simple_net_sheet(book, len(idx), params["simple_net_w1"], params["simple_net_w2"])
    views.weights_3v7(book)
    valid_y = np.asarray(d["valid_y"])
    views.playground_3v7(book, np.asarray(d["valid_x"])[int(np.flatnonzero(valid_y == 1)[0])])
    learn.history_sheet(book, lin, "linear", [3, 7])
    learn.history_sheet(book, net, "simple_net", [3, 7])
    book.write_settings()
    book.save(path)
    return path


@exact
def build_mnist(path: Path, rows: int = 1000, seed: int = 0) -> Path:
    from xlmnist import data  # deferred: only when this workbook is built

    try:
        d = data.load_mnist_all()
    except DataError as exc:
        raise DataError(
            f"mnist.xlsx needs the full MNIST data (set XLMNIST_DATA to a folder with the four IDX files, "
            f"or go online once): {exc}"
        ) from None
    idx = sample_digits(np.asarray(d["train_y"]), rows, seed)
    params = init_params(seed)
    book = Book()
    views.start_sheet(book, "mnist.xlsx", *views.START_10)
    data_sheet(book, np.asarray(d["train_x"])[idx], np.asarray(d["train_y"])[idx], onehot=True)
    lin = models.linear10_sheet(book, len(idx), params["linear10"])
    mlp = mlp_sheet(book, min(len(idx), MLP_ROWS), params["mlp_w1"], params["mlp_w2"])
    views.weights_10(book)
    views.playground_10(book, np.asarray(d["valid_x"])[0])
    learn.history_sheet(book, lin, "linear10", list(range(10)))
    learn.history_sheet(book, mlp, "mlp", list(range(10)))
    book.write_settings()
    book.save(path)
    return path
