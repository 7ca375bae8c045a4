"""``xlmnist eval`` and ``xlmnist train``: compile a workbook, evaluate or train it, write results back.

``xlmnist train BOOK`` trains the trainable cells (Solver's ``solver_adj`` or ``xlmnist_params``) to
minimise/maximise the objective cell and writes them into BOOK (or ``--out COPY.xlsx``) with
:func:`xlmnist.writeback.write_values`: only those cells change, and the file recalculates on open.
A run that diverges (NaN/inf) writes nothing. Ctrl-C stops and writes the best parameters seen.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from xlmnist.errors import TrainingError, WorkbookError, XlmnistError
from xlmnist.train import OPTIMIZERS, random_params, resolve_device, train
from xlmnist.writeback import write_values

METRIC_NAMES = {"accuracy": "xlmnist_accuracy"}


def _check_book(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise WorkbookError(f"{path}: no such workbook")
    if not zipfile.is_zipfile(p):
        raise WorkbookError(f"{path}: not an xlsx file (not a zip archive)")
    return p


def _compile(args, device: str = "cpu"):
    from xlmnist.compiler import compile_workbook

    book = _check_book(args.book)
    try:
        return compile_workbook(
            book,
            sheet=args.sheet,
            objective=args.objective,
            params=args.params,
            dtype=torch.float64,
            device=device,
        )
    except XlmnistError:
        raise
    except (zipfile.BadZipFile, KeyError, EOFError, OSError) as exc:
        raise WorkbookError(f"{args.book}: cannot read the workbook ({type(exc).__name__}: {exc})") from exc


def _float(x) -> float:
    return float(x.detach().cpu().reshape(-1)[0]) if hasattr(x, "detach") else float(x)


def metrics(model, params) -> dict:
    """Named metric cells of the sheet (``xlmnist_accuracy`` ...) evaluated at ``params``."""
    out = {}
    for key, name in METRIC_NAMES.items():
        try:
            value = model.evaluate([name], params)[name]
        except XlmnistError:
            continue  # the sheet names no such cell
        out[key] = _float(value)
    return out


def dataset_rows(model, name: str) -> torch.Tensor:
    """The full dataset ``name`` laid out like the sheet's data rows (``xlmnist_data``): X[, Ones], label."""
    from xlmnist.data import dataset_arrays

    visible = model.data_rows() if hasattr(model, "data_rows") else None
    if visible is None:
        raise WorkbookError(
            f"{model.objective_ref}: settings name dataset {name!r} but the sheet has no xlmnist_data rows"
        )
    x, y = dataset_arrays(name, "train")
    ncols, nx = visible.shape[1], x.shape[1]
    cols = (
        [x, y[:, None]]
        if ncols == nx + 1
        else [x, np.ones((len(x), 1)), y[:, None]]
        if ncols == nx + 2
        else None
    )
    if cols is None:
        raise WorkbookError(
            f"{model.data_ref}: {ncols} columns, but dataset {name!r} has {nx} features (+ label, optional Ones)"
        )
    return torch.from_numpy(np.concatenate(cols, axis=1))


def _print(args, payload: dict, text: str) -> None:
    if args.json:
        print(json.dumps(payload))
    else:
        print(text)


def cmd_eval(args) -> int:
    model = _compile(args)
    params = model.initial_params()
    with torch.no_grad():
        obj = _float(model.objective(params))
        mets = metrics(model, params)
    payload = {
        "book": str(args.book),
        "objective_cell": model.objective_ref,
        "objective": obj,
        "sense": model.sense,
        "params": model.param_refs,
        "metrics": mets,
    }
    extra = "".join(f", {k} {v:.6g}" for k, v in mets.items())
    _print(args, payload, f"{model.objective_ref} = {obj!r} ({model.sense}{extra})")
    return 0


def _setting(model, key, given, cast):
    if given is not None:
        return given
    value = (model.settings or {}).get(key)
    if value in (None, ""):
        return None
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise WorkbookError(f"settings: {key} = {value!r} is not valid") from None


def cmd_train(args) -> int:
    book = _check_book(args.book)
    # before any work: --device cuda without CUDA is an error; else the settings sheet may name one
    device = resolve_device(args.device) if args.device else None
    if args.out and Path(args.out).resolve() != book.resolve() and Path(args.out).suffix.lower() != ".xlsx":
        raise WorkbookError(f"{args.out}: --out must be an .xlsx file")
    model = _compile(args, device=device or "cpu")
    if device is None:
        device = resolve_device(_setting(model, "device", None, lambda v: str(v).strip().lower()) or "cpu")
        if device != "cpu":
            model = _compile(args, device=device)
    optimizer = (
        args.optimizer or _setting(model, "optimizer", None, lambda v: str(v).strip().lower()) or "auto"
    )
    lr = _setting(model, "lr", args.lr, float)
    epochs = _setting(model, "epochs", args.epochs, lambda v: int(float(v)))
    seed = _setting(model, "seed", args.seed, lambda v: int(float(v)))
    seed = 0 if seed is None else seed
    start = None
    if args.init == "zeros":
        start = [torch.zeros_like(p) for p in model.initial_params()]
    elif args.init == "random":
        start = random_params(model, seed=seed, scale=args.init_scale)
    dataset = args.dataset if args.dataset is not None else str((model.settings or {}).get("dataset") or "")
    dataset = "" if dataset.lower() in ("", "none") else dataset.strip()
    data = None
    if dataset:
        try:
            data = dataset_rows(model, dataset)
        except XlmnistError as exc:
            if args.dataset:  # asked for on the command line: an error
                raise
            print(f"xlmnist: warning: {exc}; training on the visible rows", file=sys.stderr)
            dataset = ""
    batch_size = _setting(model, "batch_size", args.batch_size, lambda v: int(float(v)))
    progress = False if args.json or args.quiet else None
    if not (args.quiet or args.json):
        n = sum(p.numel() for p in model.initial_params())
        goal = {"min": "minimise", "max": "maximise"}.get(model.sense, f"bring to {model.target!r}")
        print(
            f"xlmnist: training {', '.join(model.param_refs)} ({n} cells) to {goal} {model.objective_ref}; "
            "Ctrl-C stops and keeps the best values",
            file=sys.stderr,
            flush=True,
        )
    result = train(
        model,
        optimizer=optimizer,
        lr=lr,
        epochs=epochs,
        seed=seed,
        device=device,
        progress=progress,
        max_seconds=args.max_seconds,
        params=start,
        data=data,
        batch_size=batch_size,
    )
    if not result.params:
        raise TrainingError("training produced no parameters; nothing written")
    values = {ref: p.numpy() for ref, p in zip(model.param_refs, result.params)}
    out = write_values(book, values, out=args.out)
    # the objective the written file shows: recomputed in float64 from exactly the values written
    written = [torch.tensor(v, dtype=torch.float64, device=device) for v in values.values()]
    with torch.no_grad():
        obj = _float(model.objective(written))
        mets = metrics(model, written)
    if not math.isfinite(obj):
        raise TrainingError(f"{model.objective_ref}: objective {obj} after training")
    payload = {
        "book": str(out),
        "objective_cell": model.objective_ref,
        "objective": obj,
        "initial_objective": result.initial_objective,
        "steps": result.steps,
        "seconds": result.seconds,
        "device": result.device,
        "optimizer": result.optimizer,
        "lr": result.lr,
        "sense": model.sense,
        "params": model.param_refs,
        "converged": result.converged,
        "interrupted": result.interrupted,
        "metrics": mets,
        "dataset": dataset or None,
        "dataset_rows": None if data is None else len(data),
        "dataset_objective": result.objective if data is not None else None,
    }
    note = " (interrupted: best parameters so far)" if result.interrupted else ""
    extra = "".join(f", {k} {v:.6g}" for k, v in mets.items())
    _print(
        args,
        payload,
        f"{model.objective_ref}: {result.initial_objective!r} -> {obj!r}{extra}; {result.optimizer} "
        f"{result.steps} steps, {result.seconds:.2f}s on {result.device}{note}; wrote {', '.join(model.param_refs)} to {out}",
    )
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("book", help="the .xlsx workbook")
    p.add_argument("--sheet", help="model sheet (default: the active sheet with Solver/xlmnist names)")
    p.add_argument(
        "--objective", help="objective cell, e.g. nnet!AH1 (default: solver_opt / xlmnist_objective)"
    )
    p.add_argument(
        "--params", help="trainable ranges, e.g. nnet!R4:AA5 (default: solver_adj / xlmnist_params)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def register(sub) -> None:
    p = sub.add_parser("eval", help="print the compiled objective for the current cell values")
    _common(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "train", help="train the trainable cells and write them back (Excel Solver, but PyTorch)"
    )
    _common(p)
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        help="default: settings sheet, else auto (L-BFGS up to 50k parameters, else Adam)",
    )
    p.add_argument("--lr", type=float, help="learning rate (default: settings sheet, else per optimizer)")
    p.add_argument("--epochs", type=int, help="maximum steps (default: settings sheet, else per optimizer)")
    p.add_argument("--seed", type=int, help="random seed (default: settings sheet, else 0)")
    p.add_argument("--device", help="cpu, cuda or auto (default: settings sheet, else cpu)")
    p.add_argument(
        "--init",
        choices=("cells", "zeros", "random"),
        default="cells",
        help="start from the cells' current values (default), zeros, or seeded random N(0, scale^2)",
    )
    p.add_argument("--init-scale", type=float, default=0.1, help="scale of --init random (default 0.1)")
    p.add_argument("--max-seconds", type=float, help="stop after this many seconds")
    p.add_argument(
        "--dataset",
        help="train on this full dataset (titanic, mnist_3v7, mnist; none = the visible rows); "
        "default: the settings sheet",
    )
    p.add_argument(
        "--batch-size", type=int, help="minibatch size for adam/sgd on a dataset (default: settings)"
    )
    p.add_argument("--out", help="write the trained workbook to this copy instead of BOOK")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)
