"""``xlmnist import``: a PyTorch model -> a workbook, two ways.

``xlmnist import MODEL BOOK`` (:func:`import_into`): the weights of a module exported from BOOK (either
form; its ``model.py``, or a state dict saved from it with the module named) written back into the
trainable ranges they came from, which the module records (read from its source, never run; see
:mod:`xlmnist.export.pyread`), with the dependent formula cells' cached values recomputed.

``xlmnist import MODEL -o NEW.xlsx``: a chain of Linear / ReLU / Sigmoid / Softmax -> a new lesson-style
workbook. Sheet ``model``: the loss cell (B2, when there are labels), one visible weights block per
``nn.Linear`` (one row per unit, exactly ``layer.weight``, with its bias in the column beside it), then one row per
example: ``SUMPRODUCT(inputs and Ones, weight row)`` per unit, ``IF(x<0,0,x)`` ReLUs,
``1/(1+EXP(-x))`` sigmoids, ``EXP(x-MAX(row))`` / ``SUM`` softmax, a label and a per-row loss.
Sheet ``data``: the sample rows (inputs, ``Ones``, label, one-hot label columns for a softmax).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import torch
from openpyxl.workbook.defined_name import DefinedName
from torch import nn

from xlmnist import data as D
from xlmnist.errors import DataError, XlmnistError
from xlmnist.export.pyread import module_form, parse_module, read_exported
from xlmnist.export.restore import import_into, safely, torch_load
from xlmnist.xlsx.book import Book, absref, col

ACTS = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Softmax: "softmax"}
SUPPORTED = "Linear, ReLU, Sigmoid, Softmax"
LABEL_NAMES = ("label", "y", "target", "survived")


def parse_arch(text: str) -> nn.Sequential:
    """``784-30-relu-1-sigmoid`` -> ``Sequential(Linear(784,30), ReLU(), Linear(30,1), Sigmoid())``."""
    mods, width = [], None
    for tok in [t for t in re.split(r"[-,\s]+", text.strip().lower()) if t]:
        if tok.isdigit():
            if width is not None:
                mods.append(nn.Linear(width, int(tok), dtype=torch.float64))
            width = int(tok)
        elif tok in ("relu", "sigmoid", "softmax"):
            mods.append({"relu": nn.ReLU(), "sigmoid": nn.Sigmoid(), "softmax": nn.Softmax(dim=1)}[tok])
        else:
            raise XlmnistError(f"--arch {text!r}: unknown layer {tok!r} (use sizes and relu/sigmoid/softmax)")
    if not any(isinstance(m, nn.Linear) for m in mods):
        raise XlmnistError(f"--arch {text!r}: needs at least two sizes, e.g. 784-30-relu-1-sigmoid")
    return nn.Sequential(*mods)


def load_model(path, arch: str | None = None) -> list[nn.Module]:
    """The layers of a state dict (+ ``arch``) or an exported layer-form ``model.py`` (read, not run).

    Saved files are read with ``torch.load(weights_only=True)``: tensors and plain containers only; a
    pickled module (which could run any code while loading) is refused with a one-line error."""
    path = Path(path)
    name = path.name
    obj = safely(path, lambda: read_exported(path) if path.suffix == ".py" else torch_load(path))
    if isinstance(obj, dict):
        if not arch:
            raise XlmnistError(f"{name}: a state dict needs --arch (e.g. 784-30-relu-1-sigmoid)")
        seq = parse_arch(arch)
        state = {re.sub(r"^(net\.|model\.|module\.)", "", k): v for k, v in obj.items()}
        try:
            seq.load_state_dict({k: v.to(torch.float64) for k, v in state.items()})
        except RuntimeError as exc:
            raise XlmnistError(f"{name}: does not fit --arch {arch}: {str(exc).splitlines()[0]}") from None
        obj = seq
    if not isinstance(obj, nn.Module):
        raise XlmnistError(f"{name}: not a torch nn.Module or state dict ({type(obj).__name__})")
    if not isinstance(obj, nn.Sequential) and isinstance(getattr(obj, "net", None), nn.Sequential):
        obj = obj.net
    layers = _flatten(obj)
    for i, m in enumerate(layers):
        if not isinstance(m, (nn.Linear, *ACTS)):
            raise XlmnistError(
                f"{name}: unsupported layer {type(m).__name__} (layer {i}); supported: {SUPPORTED}"
            )
        if isinstance(m, nn.Softmax) and m.dim not in (1, -1):
            raise XlmnistError(f"{name}: Softmax(dim={m.dim}) (layer {i}) is not over the features (dim=1)")
    lin = [m for m in layers if isinstance(m, nn.Linear)]
    if not lin:
        raise XlmnistError(f"{name}: the model has no Linear layer")
    for a, b in zip(lin, lin[1:]):
        if a.out_features != b.in_features:
            raise XlmnistError(
                f"{name}: Linear({a.in_features}, {a.out_features}) feeds Linear({b.in_features}, ...)"
            )
    return layers


def _flatten(m: nn.Module) -> list[nn.Module]:
    if isinstance(m, nn.Sequential):
        return [x for child in m for x in _flatten(child)]
    if isinstance(m, nn.Flatten):
        return []
    if type(m) is nn.Module or not (isinstance(m, (nn.Linear, *ACTS)) or list(m.children()) == []):
        raise XlmnistError(
            f"unsupported module {type(m).__name__}: only an nn.Sequential of {SUPPORTED} (or a module with .net)"
        )
    return [m]


def sample_rows(n_in: int, data=None, dataset=None, rows=None):
    """(X [N, n_in], y [N] or None, input names) from a CSV (header row) or a built-in dataset."""
    if data is not None:
        import pandas as pd  # deferred: pandas only for a CSV given with --data

        try:
            df = pd.read_csv(data)
        except (OSError, ValueError) as exc:
            raise DataError(f"{data}: cannot read the CSV ({str(exc).splitlines()[0]})") from None
        label = next((c for c in df.columns if str(c).strip().lower() in LABEL_NAMES), None)
        inputs = [c for c in df.columns if c != label]
        if len(inputs) != n_in:
            raise DataError(f"{data}: {len(inputs)} input columns, the model takes {n_in}")
        bad = [c for c in df.columns if not np.issubdtype(df[c].dtype, np.number)]
        if bad:
            raise DataError(f"{data}: column {bad[0]!r} is not numeric")
        X = df[inputs].to_numpy(np.float64)
        y = None if label is None else df[label].to_numpy(np.float64)
        names = [str(c) for c in inputs]
    else:
        X, y = D.dataset_arrays(dataset or "titanic")
        names = (
            list(D.TITANIC_FEATURES)
            if dataset in (None, "titanic")
            else [f"px{k}" for k in range(X.shape[1])]
        )
        if X.shape[1] == n_in + 1 and (X[:, -1] == 1).all():
            X, names = X[:, :-1], names[:-1]  # the Ones column: the workbook adds its own
        if X.shape[1] != n_in:
            raise DataError(f"dataset {dataset}: {X.shape[1]} inputs, the model takes {n_in}")
    n = len(X) if rows is None else min(int(rows), len(X))
    if n < 1:
        raise DataError("no data rows")
    return X[:n], (None if y is None else y[:n]), names


def build_workbook(layers, X, y, names, out_path) -> dict:
    """Write the workbook; returns the names of its key areas (predictions, loss cell)."""
    N, n_in = X.shape
    out_k = next(m.out_features for m in reversed(layers) if isinstance(m, nn.Linear))
    last_act = next((ACTS[type(m)] for m in reversed(layers) if not isinstance(m, nn.Linear)), None)
    last_act = last_act if not isinstance(layers[-1], nn.Linear) else None
    loss_kind = None
    if y is not None:
        loss_kind = (
            "ce"
            if last_act == "softmax"
            else ("mnist" if last_act == "sigmoid" and out_k == 1 else ("mse" if out_k == 1 else None))
        )
    book = Book()
    ws = book.sheet("model")
    dws = book.sheet("data")
    ones_c, label_c = n_in + 1, n_in + 2
    oh = y is not None and loss_kind == "ce"
    dws.append(
        [
            book.cell(dws, h, bold=True)
            for h in names
            + ["Ones"]
            + (["label"] if y is not None else [])
            + ([f"is_{k}" for k in range(out_k)] if oh else [])
        ]
    )
    for i in range(N):
        row = [float(v) for v in X[i]] + [1]
        if y is not None:
            row.append(float(y[i]))
            if oh:
                row += [1 if int(y[i]) == k else 0 for k in range(out_k)]
        dws.append(row)
    rows: dict[int, list] = {1: [book.cell(ws, " -> ".join(_desc(m) for m in layers), bold=True)]}
    r, blocks, params = 4, [], []
    for m in layers:
        if isinstance(m, nn.Linear):
            w = m.weight.detach().double().numpy()
            b = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(m.out_features)
            rows[r] = [book.cell(ws, f"{_desc(m)}: weights, bias", bold=True)]
            for j in range(m.out_features):
                rows[r + 1 + j] = [f"unit {j + 1}"] + [float(v) for v in w[j]] + [float(b[j])]
            blocks.append(r + 1)
            params.append(absref("model", 2, r + 1, m.in_features + 2, r + m.out_features))
            r += m.out_features + 2
    head, first = r, r + 1
    last = first + N - 1
    cur = None  # (first col, last col) of the previous step's outputs, with a Ones column after when needed
    c, li, header = 1, 0, []
    label_col = None
    if y is not None:
        label_col, c = c, c + 1
        header.append("label")
    cols: dict[int, list] = {}  # column -> formula template with {r} and {d}

    def put(template, title):
        nonlocal c
        cols[c] = template
        header.append(title)
        c += 1
        return c - 1

    if label_col:
        cols[label_col] = f"=data!${col(label_c)}{{d}}"
    for m in layers:
        if isinstance(m, nn.Linear):
            if cur is None:
                src = f"data!$A{{d}}:${col(ones_c)}{{d}}"
            else:
                one = put("1", "Ones")
                src = f"{col(cur[0])}{{r}}:{col(one)}{{r}}"
            wr = blocks[li]
            start = c
            for j in range(m.out_features):
                put(
                    f"=SUMPRODUCT({src},$B${wr + j}:${col(m.in_features + 2)}${wr + j})",
                    f"lin{li + 1}_{j + 1}",
                )
            cur, li = (start, c - 1), li + 1
        elif isinstance(m, nn.ReLU):
            start = c
            for j in range(cur[0], cur[1] + 1):
                put(f"=IF({col(j)}{{r}}<0,0,{col(j)}{{r}})", f"relu_{j - cur[0] + 1}")
            cur = (start, c - 1)
        elif isinstance(m, nn.Sigmoid):
            start = c
            for j in range(cur[0], cur[1] + 1):
                put(f"=1/(1+EXP(-{col(j)}{{r}}))", f"sigmoid_{j - cur[0] + 1}")
            cur = (start, c - 1)
        else:
            zr = f"${col(cur[0])}{{r}}:${col(cur[1])}{{r}}"
            e0 = c
            for j in range(cur[0], cur[1] + 1):
                put(f"=EXP({col(j)}{{r}}-MAX({zr}))", f"exp_{j - cur[0] + 1}")
            s = put(f"=SUM({col(e0)}{{r}}:{col(c - 1)}{{r}})", "sum_exp")
            start = c
            for j in range(e0, s):
                put(f"={col(j)}{{r}}/${col(s)}{{r}}", f"p_{j - e0 + 1}")
            cur = (start, c - 1)
    loss_col = None
    p0, p1 = cur
    if loss_kind == "mse":
        loss_col = put(f"=({col(label_col)}{{r}}-{col(p0)}{{r}})^2", "loss")
    elif loss_kind == "mnist":
        loss_col = put(f"=IF({col(label_col)}{{r}}=1,1-{col(p0)}{{r}},{col(p0)}{{r}})", "mnist_loss")
    elif loss_kind == "ce":
        ohr = f"data!${col(label_c + 1)}{{d}}:${col(label_c + out_k)}{{d}}"
        loss_col = put(f"=-LN(SUMPRODUCT({ohr},{col(p0)}{{r}}:{col(p1)}{{r}}))", "cross_entropy")
    rows[head] = [book.cell(ws, h, bold=True) for h in header]
    for i in range(N):
        rr, d = first + i, 2 + i
        rows[rr] = [(t if t == "1" else t.format(r=rr, d=d)) for _, t in sorted(cols.items())]
        rows[rr] = [1 if v == "1" else v for v in rows[rr]]
    if loss_col:
        rows[2] = [
            book.cell(ws, "loss", bold=True),
            f"=AVERAGE({col(loss_col)}{first}:{col(loss_col)}{last})",
        ]
    for rr in range(1, last + 1):
        ws.append(rows.get(rr, []))
    pred = absref("model", p0, first, p1, last)
    data_ref = absref("data", 1, 2, label_c if y is not None else ones_c, N + 1)
    if loss_col:
        book.model_names(
            ws,
            objective="model!$B$2",
            params=params,
            predictions=pred,
            labels=absref("data", label_c, 2, label_c, N + 1),
            data=data_ref,
        )
        book.add_settings(
            "model", optimizer="auto", lr=0.1, epochs=50, batch_size=0, device="auto", seed=0, dataset=""
        )
    else:
        for key, text in (("xlmnist_predictions", pred), ("xlmnist_data", data_ref)):
            ws.defined_names[key] = DefinedName(key, attr_text=text)
    book.write_settings()
    book.save(out_path)
    return {"predictions": pred, "objective": "model!$B$2" if loss_col else None, "params": params}


def _desc(m) -> str:
    return f"Linear({m.in_features}, {m.out_features})" if isinstance(m, nn.Linear) else type(m).__name__


def _cmd_import(args) -> int:
    if args.book is not None:
        for flag, given in (
            ("--arch", args.arch),
            ("--data", args.data),
            ("--dataset", args.dataset),
            ("--rows", args.rows),
        ):
            if given is not None:
                raise XlmnistError(
                    f"{flag} builds a new workbook (-o NEW.xlsx); BOOK takes the weights as they are"
                )
        got = import_into(args.model, args.book, args.output, args.module)
        print(
            f"wrote {', '.join(got['params'])} to {got['book']} ({got['form']}-form weights); "
            f"{got['objective_cell']} = {got['objective']!r}"
        )
        for item in got["stale"]:
            print(f"xlmnist: warning: {item['range']}: not recomputed ({item['why']})", file=sys.stderr)
        return 0
    if args.module is not None:
        raise XlmnistError("--module names the module of a state dict written back into BOOK: give BOOK")
    if args.output is None:
        raise XlmnistError(
            "give the workbook: BOOK (the one the module was exported from: its weights go back there) or "
            "-o NEW.xlsx (a new workbook for a Linear/ReLU/Sigmoid/Softmax chain)"
        )
    model = Path(args.model)
    if model.suffix == ".py" and model.is_file() and module_form(parse_module(model)[1]) == "general":
        raise XlmnistError(
            f"{model.name}: a general-form module has no layers to lay out in a new workbook; its "
            f"weights go back into the workbook it was exported from: xlmnist import {model.name} BOOK"
        )
    layers = load_model(args.model, args.arch)
    n_in = next(m.in_features for m in layers if isinstance(m, nn.Linear))
    if args.data is None and args.dataset is None:
        raise XlmnistError("give the sample rows: --data CSV or --dataset titanic|mnist_3v7|mnist")
    X, y, names = sample_rows(
        n_in, args.data, args.dataset, args.rows if args.rows else (None if args.data else 50)
    )
    out = Path(args.output)
    if not out.parent.is_dir():
        raise XlmnistError(f"{out.parent}: no such folder")
    info = build_workbook(layers, X, y, names, out)
    print(
        f"wrote {out} ({len(X)} rows; predictions {info['predictions']}"
        + (f"; loss {info['objective']})" if info["objective"] else ")")
    )
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "import",
        help="write an exported model's weights back into its workbook, or a Linear/ReLU/Sigmoid/Softmax chain as a new one",
    )
    p.add_argument(
        "model",
        help="a model.py written by xlmnist export (parsed, never run), or a state dict saved with "
        "torch.save(model.state_dict(), path) (with BOOK: from an exported module; else with --arch)",
    )
    p.add_argument(
        "book",
        nargs="?",
        default=None,
        help="the workbook the module was exported from: its weights are written back into the trainable "
        "ranges they came from (either export form)",
    )
    p.add_argument(
        "-o",
        "--output",
        default=None,
        help="with BOOK: write to this copy instead of BOOK; without: the new workbook to write (.xlsx)",
    )
    p.add_argument(
        "--module",
        default=None,
        help="with BOOK and a state dict: the exported module it belongs to (default: the .py of the same name beside it)",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--data", default=None, help="CSV of sample rows (header: input columns, optional label)"
    )
    src.add_argument(
        "--dataset", default=None, choices=("titanic", "mnist_3v7", "mnist"), help="built-in rows"
    )
    p.add_argument(
        "--rows", type=int, default=None, help="number of sample rows (default: CSV all, dataset 50)"
    )
    p.add_argument("--arch", default=None, help="architecture of a state dict, e.g. 784-30-relu-1-sigmoid")
    p.set_defaults(func=_cmd_import)


__all__ = ["build_workbook", "import_into", "load_model", "parse_arch", "register", "sample_rows"]
