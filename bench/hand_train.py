"""The hand-written baseline of ``bench_command.py``: the plain script a student writes to train a lesson
sheet with PyTorch and no xlmnist. It reads the data rows and the starting weights from the workbook,
builds the same model with torch ops, trains it the way ``xlmnist train`` does (the settings sheet's
optimiser, lr, steps/epochs, batch size, seed; float64 full batch, float32 minibatches), writes the weights
back into the workbook and prints one JSON line (the sheet's loss before and after, float64).

``python bench/hand_train.py BOOK SHEET OUT [--io openpyxl|xlmnist] [--data sheet|dataset] [--epochs N]
[--optim torch|nodynamo]``

* ``--io openpyxl``: read with ``openpyxl.load_workbook(read_only=True)``, write with ``load_workbook`` +
  ``save`` (what a student would use). ``--io xlmnist``: xlmnist's reader (``read_workbook``) and its
  surgical writer (``write_values``): the same script on the fastest workbook I/O this repository has.
* ``--data sheet``: the workbook's data rows, full batch (what ``xlmnist train --dataset none`` does: each
  step one update on all rows). ``--data dataset``: the dataset the settings name (full MNIST or 3 vs 7,
  loaded by ``xlmnist.data.dataset_arrays``), seeded minibatches, the valid split scored after each epoch.
* ``--optim torch``: ``torch.optim`` as is (it imports ``torch._dynamo``, ~0.8 s). ``--optim nodynamo``: the
  same three optimiser calls through ``xlmnist.train.torchopt``, as ``xlmnist train`` makes them.

The model of each sheet is written out below, as the student reads it off the sheet's formulas.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def titanic_features(rows):
    """nnet!A4:P715 -> (X = G..P as the sheet's feature formulas compute them, y = Survived)."""
    a = np.array(rows, dtype=object)
    age, fare = a[:, 4].astype(float), a[:, 5].astype(float)
    pclass, emb, sex = a[:, 2].astype(float), a[:, 1], a[:, 3]
    x = np.stack(
        [
            a[:, 6].astype(float),
            a[:, 7].astype(float),
            age / age.max(),
            np.log10(fare + 1),
            pclass == 1,
            pclass == 2,
            emb == "S",
            emb == "C",
            sex == "male",
            a[:, 15].astype(float),
        ],
        1,
    )
    return x.astype(np.float64), a[:, 0].astype(np.float64)  # fmt: skip


def forward(sheet, x, w):
    if sheet == "nnet":  # two SUMPRODUCTs, IF(x<0,0,x) ReLUs, their sum
        return torch.relu(x @ w[0].T).sum(1)
    if sheet == "linear":  # 1/(1+EXP(-SUMPRODUCT(pixels & Ones, weights)))
        return torch.sigmoid(x[:, :785] @ w[0][0])
    if sheet == "linear10":  # MMULT logits
        return x[:, :785] @ w[0]
    h = torch.relu(x[:, :785] @ w[0])  # mlp: 784+1 -> 256 ReLU (+ a Ones column) -> 10 logits
    return torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], 1) @ w[1]


def loss_of(sheet, out, y):
    if sheet == "nnet":
        return ((y - out) ** 2).mean()  # AVERAGE of (A4-AG4)^2
    if sheet == "linear":
        return torch.where(y == 1, 1 - out, out).mean()  # mnist_loss
    return F.cross_entropy(out, y.long())  # -LN(SUMPRODUCT(one-hot, softmax)), averaged


# ---------------------------------------------------------------------------------------- workbook I/O
def area(ref):
    """'data!$A$2:$ADF$1001' -> (sheet, r1, c1, r2, c2)."""
    sheet, cells = ref.replace("$", "").rsplit("!", 1)
    (a, r1), (b, r2) = (re.fullmatch(r"([A-Z]+)([0-9]+)", x).groups() for x in cells.split(":"))
    col = lambda s: sum((ord(ch) - 64) * 26**i for i, ch in enumerate(reversed(s)))  # noqa: E731
    return sheet.strip("'"), int(r1), col(a), int(r2), col(b)


def read_openpyxl(book, sheet):
    import openpyxl

    wb = openpyxl.load_workbook(book, read_only=True)
    names = {k: v.attr_text for k, v in wb[sheet].defined_names.items()}

    def rows(ref):
        s, r1, c1, r2, c2 = area(ref)
        return [list(r) for r in wb[s].iter_rows(r1, r2, c1, c2, values_only=True)]

    settings = {r[1]: r[2] for r in wb["settings"].iter_rows(values_only=True) if r[0] == sheet}
    data = rows(names["xlmnist_data"])
    params = [np.array(rows(ref), dtype=np.float64) for ref in names["xlmnist_params"].split(",")]
    wb.close()
    return settings, data, params, names["xlmnist_params"].split(",")


def read_xlmnist(book, sheet):
    from xlmnist.xlsx.reader import read_workbook

    wb = read_workbook(book)

    def rows(ref):
        s, r1, c1, r2, c2 = area(ref)
        values = wb.sheet(s).values
        out = np.full((r2 - r1 + 1, c2 - c1 + 1), None, object)
        others = values.items()
        if hasattr(values, "num"):  # the reader's dense grid of number cells, then the other cells
            has = values.has[r1 : r2 + 1, c1 : c2 + 1]
            out[: has.shape[0], : has.shape[1]][has] = values.num[r1 : r2 + 1, c1 : c2 + 1][has]
            others = values.other.items()
        for (r, c), v in others:
            if r1 <= r <= r2 and c1 <= c <= c2:
                out[r - r1, c - c1] = v
        return out

    st = rows(f"settings!A1:C{wb.sheet('settings').max_row}")
    settings = {r[1]: r[2] for r in st if r[0] == sheet}
    refs = wb.name(sheet, "xlmnist_params").split(",")
    params = [rows(ref).astype(np.float64) for ref in refs]
    return settings, rows(wb.name(sheet, "xlmnist_data")), params, refs


def write(io, book, out, refs, weights):
    if io == "xlmnist":
        from xlmnist.xlsx.writeback import write_values

        write_values(book, {ref.replace("$", ""): w for ref, w in zip(refs, weights)}, out=out)
        return
    import openpyxl

    wb = openpyxl.load_workbook(book)
    for ref, w in zip(refs, weights):
        s, r1, c1, _, _ = area(ref)
        ws = wb[s]
        for i, row in enumerate(w.tolist()):
            for j, v in enumerate(row):
                ws.cell(r1 + i, c1 + j, v)
    wb.save(out)


# ---------------------------------------------------------------------------------------------- train
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("book")
    ap.add_argument("sheet")
    ap.add_argument("out")
    ap.add_argument("--io", choices=["openpyxl", "xlmnist"], default="openpyxl")
    ap.add_argument("--data", choices=["sheet", "dataset"], default="sheet")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--optim", choices=["torch", "nodynamo"], default="torch",
                    help="nodynamo: torch's optimisers through xlmnist.train.torchopt (no torch._dynamo import)")  # fmt: skip
    args = ap.parse_args()
    if args.optim == "nodynamo":
        from xlmnist.train import torchopt

        class Opt:  # the three calls below, routed through torchopt (the same torch code, bit for bit)
            def __init__(self, name, w, **kw):
                self.opt = torchopt.make(name, w, **kw)
                self.param_groups = self.opt.param_groups

            def zero_grad(self):
                torchopt.zero_grad(self.opt)

            def step(self, closure=None):
                return torchopt.step(self.opt, closure)

        make = Opt
    else:
        classes = {"lbfgs": torch.optim.LBFGS, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}

        def make(name, w, **kw):
            return classes[name](w, **kw)

    sheet = args.sheet
    settings, data, params, refs = (read_xlmnist if args.io == "xlmnist" else read_openpyxl)(args.book, sheet)
    x, y = titanic_features(data) if sheet == "nnet" else (np.asarray(data, np.float64), None)
    y = x[:, -1] if y is None else y
    opt_name, lr, seed = str(settings["optimizer"]), float(settings["lr"]), int(settings["seed"] or 0)
    epochs = int(args.epochs if args.epochs is not None else settings["epochs"])
    sheet_x, sheet_y = torch.from_numpy(x), torch.from_numpy(y)
    w64 = [torch.from_numpy(p) for p in params]
    with torch.no_grad():
        initial = float(loss_of(sheet, forward(sheet, sheet_x, w64), sheet_y))
    valid_acc = None

    if args.data == "sheet":  # full batch in float64, `epochs` optimiser steps
        w = [p.clone().requires_grad_(True) for p in w64]
        if opt_name == "lbfgs":
            opt = make("lbfgs", w, lr=lr, max_iter=epochs, history_size=100, line_search_fn="strong_wolfe",
                                    tolerance_grad=1e-14, tolerance_change=1e-12 * initial)  # fmt: skip
        else:
            opt = make("adam" if opt_name == "adam" else "sgd", w, lr=lr)

        def closure():
            opt.zero_grad()
            loss = loss_of(sheet, forward(sheet, sheet_x, w), sheet_y)
            loss.backward()
            return loss

        for _ in range(1 if opt_name == "lbfgs" else epochs):
            opt.step(closure)
    else:  # the settings' dataset in seeded float32 minibatches, scored on its valid split after each epoch
        from xlmnist.data import dataset_arrays

        def rows_of(split):
            xs, ys = dataset_arrays(settings["dataset"], split)
            return np.concatenate([xs, np.ones((len(xs), 1)), ys[:, None]], 1).astype(np.float32)

        train, valid = rows_of("train"), torch.from_numpy(rows_of("valid"))
        w = [p.float().clone().requires_grad_(True) for p in w64]
        opt = make("adam" if opt_name == "adam" else "sgd", w, lr=lr)
        bs, gen, step = int(settings["batch_size"]), torch.Generator().manual_seed(seed), 0
        total = max(1, epochs * math.ceil(len(train) / bs))
        for _ in range(epochs):
            for idx in torch.randperm(len(train), generator=gen).split(bs):
                if str(settings.get("lr_schedule") or "").lower() == "linear":
                    opt.param_groups[0]["lr"] = lr * (1 - step / total)
                step += 1
                xb = torch.from_numpy(train[idx.numpy()])
                opt.zero_grad()
                loss_of(sheet, forward(sheet, xb, w), xb[:, -1]).backward()
                opt.step()
            with torch.no_grad():
                out = forward(sheet, valid, w)
                pred = (out > 0.5).float() if sheet == "linear" else out.argmax(1).float()
                valid_acc = float((pred == valid[:, -1]).float().mean())

    weights = [p.detach().double().numpy() for p in w]
    with torch.no_grad():
        final = float(
            loss_of(sheet, forward(sheet, sheet_x, [torch.from_numpy(v) for v in weights]), sheet_y)
        )
    write(args.io, args.book, args.out, refs, weights)
    print(json.dumps({"initial_objective": initial, "objective": final, "valid_accuracy": valid_acc}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
