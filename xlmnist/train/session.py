"""Train (or step) one model sheet of a workbook and write the results back; the engine of ``xlmnist
train``, ``xlmnist step``, ``xlmnist demo`` and ``bench/bench_mnist.py`` (one code path for all of them).

* Settings: a flag wins, else the ``settings`` sheet's row for the model sheet, else the defaults.
* A sheet whose settings name a dataset is trained on that dataset's *train* split: its rows replace the
  sheet's ``xlmnist_data`` rows (the per-row formulas are applied to every row). With sgd/adam and a
  ``batch_size`` below the number of rows this is minibatch training (:func:`xlmnist.train.minibatch.train_epochs`)
  in float32 (a second compile of the sheet), validated after each epoch on the *valid* split by the
  sheet's own loss and correct/prediction cells (:mod:`xlmnist.train.metrics`). Otherwise: full-batch training
  (L-BFGS etc.) with :func:`xlmnist.train.train`.
* Reported numbers are float64, recomputed from exactly the values written: ``objective`` is what the
  objective cell shows (the visible rows), ``metrics`` the visible accuracy cell and, over the full
  dataset, ``train_loss``, ``train_accuracy``, ``valid_loss``, ``valid_accuracy``.
* Written back (one atomic write, :func:`xlmnist.learner.write_training_results` when that module
  exists): the parameters; the gradient of the objective cell (the visible rows' objective, float64) at the
  written parameters, i.e. *after* the last step; the per-epoch history (at most 200 rows); the confusion
  matrix of the valid split (rows = true class, columns = predicted; 3 vs 7 in the order 3, 7).
"""

from __future__ import annotations

import math
import os
import sys
import time
import zipfile
from pathlib import Path

import torch

from xlmnist.compile import compile_workbook
from xlmnist.compile.model import _compile
from xlmnist.errors import DataError, TrainingError, WorkbookError, XlmnistError
from xlmnist.train.metrics import SheetView
from xlmnist.train.minibatch import train_epochs
from xlmnist.train.optim import (
    DEFAULT_LR,
    choose_optimizer,
    loss_fn,
    random_params,
    resolve_device,
    train,
)
from xlmnist.train.results import write_training_results
from xlmnist.train.settings import check_book, dataset_rows, metrics, setting

HISTORY_ROWS = 200


def _live(book) -> bool:
    """``book`` is an already read ``Workbook`` (e.g. xlmnist.calc's open Calc document), not a file."""
    return hasattr(book, "sheets") and hasattr(book, "names")


def compile_sheet(book, sheet=None, objective=None, params=None, device="cpu", dtype=torch.float64):
    if _live(book):  # a Workbook read from a live document (LibreOffice Calc), not a file
        model = _compile(book, None, sheet, objective, params, dtype, device, None)
        check_params_used(model)
        return model
    try:
        model = compile_workbook(
            book, sheet=sheet, objective=objective, params=params, dtype=dtype, device=device
        )
    except XlmnistError:
        raise
    except (zipfile.BadZipFile, KeyError, EOFError, OSError) as exc:
        raise WorkbookError(f"{book}: cannot read the workbook ({type(exc).__name__}: {exc})") from exc
    check_params_used(model)
    return model


def check_params_used(model) -> None:
    """Stop before training when a trainable range does not reach the objective (empty cells, another
    sheet): its gradient would not exist and nothing could be written for it."""
    ps = [p.detach().clone().requires_grad_(True) for p in model.initial_params()]
    obj = model.objective(ps)
    grads = torch.autograd.grad(obj, ps, allow_unused=True) if obj.requires_grad else [None] * len(ps)
    for ref, grad in zip(model.param_refs, grads):
        if grad is None:
            raise WorkbookError(
                f"{ref}: the objective {model.objective_ref} does not depend on these trainable cells "
                "(empty cells, or cells no formula of the model reads); leave them out of the parameters"
            )


def _text(v) -> str:
    return str(v).strip().lower()


def _dataset(model, given) -> str:
    name = given if given is not None else str((model.settings or {}).get("dataset") or "")
    return "" if name.strip().lower() in ("", "none") else name.strip()


def _splits(model, name: str, explicit: bool):
    """(train rows, valid rows or None) of dataset ``name``; a settings-named dataset that is not
    available falls back to the visible rows with a warning (an explicit --dataset is an error)."""
    try:
        rows = dataset_rows(model, name, "train")
    except XlmnistError as exc:
        if explicit:
            raise
        print(f"xlmnist: warning: {exc}; training on the visible rows", file=sys.stderr)
        return None, None
    try:
        valid = dataset_rows(model, name, "valid")
    except DataError:
        valid = None  # e.g. titanic: only a train split
    return rows, valid


def _thin(rows: list[dict], k: int = HISTORY_ROWS) -> list[dict]:
    if len(rows) <= k:
        return rows
    idx = sorted({round(i * (len(rows) - 1) / (k - 1)) for i in range(k)})
    return [rows[i] for i in idx]


def gradients(model, params) -> list[torch.Tensor]:
    """d(objective cell)/d(each trainable range) at ``params`` (float64, the visible rows)."""
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    model.objective(ps).backward()
    return [p.grad.detach().cpu() for p in ps]


def write_results(book, model, params, *, grads=None, history=None, confusion=None, out=None) -> Path:
    """One atomic write of the parameters, their gradients, the history and the confusion matrix; a full
    disk or a refused write is a one-line WorkbookError (the workbook is left as it was)."""
    try:
        written = write_training_results(
            book, model, [p.detach().cpu() for p in params], gradients=grads, history=history,
            confusion=confusion, out=out,
        )  # fmt: skip
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise WorkbookError(
            f"{out or book}: cannot write the workbook ({reason}); nothing was changed"
        ) from None
    return Path(written)


def _epoch_printer(epochs: int):
    def show(epoch: int, row: dict) -> None:
        va = row.get("valid_accuracy")
        vl = row.get("valid_loss")
        extra = f" valid_loss {vl:.6g}" if vl is not None else ""
        extra += f" valid_accuracy {va:.4f}" if va is not None else ""
        print(
            f"epoch {epoch}/{epochs} train_loss {row['train_loss']:.6g}{extra} {row['seconds']:.1f}s",
            file=sys.stderr,
            flush=True,
        )

    return show


def train_book(
    book, *, sheet=None, objective=None, params=None, optimizer=None, lr=None, epochs=None, seed=None,
    device=None, init="cells", init_scale=0.1, max_seconds=None, dataset=None, batch_size=None, out=None,
    force=False, dtype=None, verbose=False, max_epochs=None, write=None, progress=None,
) -> dict:  # fmt: skip
    """Train one model sheet and write it back; returns the ``train --json`` payload (module docstring).
    ``max_epochs`` caps the epochs of minibatch training only (``xlmnist demo --quick``). ``book`` may be a
    read ``Workbook`` with ``write`` (called like :func:`write_results`) taking the results; ``progress``
    is called with (step, objective) or, per epoch, (epoch, history row)."""
    t_start = time.perf_counter()
    book = book if _live(book) else check_book(book)
    device = resolve_device(device) if device else None  # --device cuda without CUDA: before any work
    if out and Path(out).resolve() != book.resolve() and Path(out).suffix.lower() != ".xlsx":
        raise WorkbookError(f"{out}: --out must be an .xlsx file")
    model = compile_sheet(book, sheet, objective, params, device=device or "cpu")
    if device is None:
        device = resolve_device(setting(model, "device", None, _text) or "cpu")
        if device != "cpu":
            model = model.recompile(device=device)
    seed = setting(model, "seed", seed, lambda v: int(float(v)))
    seed = 0 if seed is None else seed
    start = None
    if init == "zeros":
        start = [torch.zeros_like(p) for p in model.initial_params()]
    elif init == "random":
        start = random_params(model, seed=seed, scale=init_scale)
    name = choose_optimizer(
        optimizer or setting(model, "optimizer", None, _text) or "auto",
        sum(p.numel() for p in model.initial_params()),
    )
    lr = setting(model, "lr", lr, float)
    epochs = setting(model, "epochs", epochs, lambda v: int(float(v)))
    ds = _dataset(model, dataset)
    rows = valid = None
    if ds:
        rows, valid = _splits(model, ds, explicit=bool(dataset))
        ds = ds if rows is not None else ""
    batch_size = setting(model, "batch_size", batch_size, lambda v: int(float(v)))
    minibatch = rows is not None and name in ("sgd", "adam") and bool(batch_size) and batch_size < len(rows)
    if minibatch and max_epochs is not None:
        epochs = min(epochs or 1, max_epochs)
    if verbose:
        n = sum(p.numel() for p in model.initial_params())
        goal = {"min": "minimise", "max": "maximise"}.get(model.sense, f"bring to {model.target!r}")
        on = f" on {len(rows)} {ds} rows" if rows is not None else ""
        print(
            f"xlmnist: training {', '.join(model.param_refs)} ({n} cells) to {goal} {model.objective_ref}"
            f"{on}; Ctrl-C stops and keeps the best values",
            file=sys.stderr,
            flush=True,
        )
    with torch.no_grad():
        initial = float(model.objective(model.initial_params() if start is None else start))
    diagnosis = None
    try:
        if minibatch:
            loop = model
            if (dtype or "float32") == "float32":
                loop = model.recompile(dtype=torch.float32, device=device)
            result = train_epochs(
                loop, rows, valid=valid, view=SheetView(loop, ds), optimizer=name, lr=lr, epochs=epochs,
                batch_size=batch_size, seed=seed, device=device, max_seconds=max_seconds, params=start,
                progress=progress or (_epoch_printer(epochs or 1) if verbose else None),
                lr_schedule=setting(model, "lr_schedule", None, _text) or "constant",
            )  # fmt: skip
        else:
            result = train(
                model, optimizer=name, lr=lr, epochs=epochs, seed=seed, device=device,
                progress=progress or (None if verbose else False), max_seconds=max_seconds, params=start, data=rows,
            )  # fmt: skip
    except TrainingError as exc:
        res = getattr(exc, "result", None)
        usable = res is not None and res.diagnosis and res.params
        if not (force and usable and all(bool(torch.isfinite(p).all()) for p in res.params)):
            raise
        result, diagnosis = res, str(exc)
    if not result.params:
        raise TrainingError("training produced no parameters; nothing written")
    written = [p.detach().to(device=device, dtype=torch.float64) for p in result.params]
    view = SheetView(model, ds or None)
    with torch.no_grad():
        obj = float(model.objective(written))
        mets = metrics(model, written)
    if not math.isfinite(obj):
        raise TrainingError(f"{model.objective_ref}: objective {obj} after training; nothing written")
    confusion = None
    if rows is not None:
        tr = view.measure(written, rows.to(device))
        mets["train_loss"], mets["train_accuracy"] = tr["loss"], tr["accuracy"]
        if valid is not None:
            va = view.measure(written, valid.to(device))
            mets["valid_loss"], mets["valid_accuracy"] = va["loss"], va["accuracy"]
            confusion = view.confusion(va)
    if result.epochs:
        history = result.epochs
    else:  # full-batch training: one row per step, the objective being trained
        history = [
            {"epoch": i, "train_loss": v, "valid_loss": None, "valid_accuracy": None, "seconds": None}
            for i, v in enumerate(result.history)
        ]
    grads = gradients(model, written)
    path = (write or write_results)(
        book, model, written, grads=grads, history=_thin(history), confusion=confusion, out=out
    )
    return {
        "book": str(path),
        "sheet": model.objective_ref.rsplit("!", 1)[0],
        "objective_cell": model.objective_ref,
        "objective": obj,
        "initial_objective": initial,
        "steps": result.steps,
        "epochs": len(result.epochs) if minibatch else None,
        "seconds": result.seconds,
        "cpu_seconds": result.cpu_seconds,
        "total_seconds": time.perf_counter() - t_start,
        "device": result.device,
        "program": (loop if minibatch else model).program_kind,  # "lowered" | "closures" (XLMNIST_DEBUG: why)
        "optimizer": result.optimizer,
        "lr": result.lr,
        "batch_size": batch_size if minibatch else None,
        "sense": model.sense,
        "params": model.param_refs,
        "n_params": sum(p.numel() for p in written),
        "converged": result.converged,
        "interrupted": result.interrupted,
        "metrics": mets,
        "dataset": ds or None,
        "dataset_rows": None if rows is None else len(rows),
        "rows": len(rows)
        if rows is not None
        else (None if model.data_rows() is None else len(model.data_rows())),
        "valid_rows": None if valid is None else len(valid),
        "dataset_objective": mets.get("train_loss"),
        "history": history,
        "confusion": None if confusion is None else confusion.tolist(),
        "diagnosis": diagnosis,
    }


def step_book(
    book, *, sheet=None, objective=None, params=None, lr=None, optimizer=None, seed=None, batch_size=None,
    dataset=None, out=None, write=None,
) -> dict:  # fmt: skip
    """Exactly one optimisation step from the cells' values: on one seeded minibatch of the dataset's train
    split (the first batch ``train --epochs 1 --seed S`` would take) or, without a dataset, on the visible
    rows (full batch). Adam starts from fresh moments (the file holds no optimizer state). Writes the new
    parameters and the gradient of the objective cell at them (``write``: as in :func:`train_book`)."""
    book = book if _live(book) else check_book(book)
    model = compile_sheet(book, sheet, objective, params)
    given = optimizer or setting(model, "optimizer", None, _text)
    name = given if given in ("sgd", "adam") else "sgd"
    lr = setting(model, "lr", lr, float)
    lr = float(lr) if lr is not None else DEFAULT_LR[name]
    if not (lr > 0 and math.isfinite(lr)):
        raise TrainingError(f"learning rate {lr}: must be a positive number")
    ds = _dataset(model, dataset)
    batch = None
    if ds:
        rows, _ = _splits(model, ds, explicit=bool(dataset))
        ds = ds if rows is not None else ""
    if ds:
        bs = setting(model, "batch_size", batch_size, lambda v: int(float(v)))
        bs = len(rows) if not bs or bs <= 0 else min(bs, len(rows))
        seed = int.from_bytes(os.urandom(4), "little") if seed is None else seed
        idx = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:bs]
        batch = rows[idx]
    ps = [p.clone().requires_grad_(True) for p in model.initial_params()]
    with torch.no_grad():
        before = float(model.objective(ps))
    opt = torch.optim.Adam(ps, lr=lr) if name == "adam" else torch.optim.SGD(ps, lr=lr)
    loss = loss_fn(model)(model.objective(ps, data=batch) if batch is not None else model.objective(ps))
    loss.backward()
    if not math.isfinite(float(loss.detach())) or not all(bool(torch.isfinite(p.grad).all()) for p in ps):
        raise TrainingError(f"{model.objective_ref}: the loss or its gradient is NaN/inf; nothing written")
    opt.step()
    written = [p.detach() for p in ps]
    if not all(bool(torch.isfinite(p).all()) for p in written):
        raise TrainingError(
            f"{model.objective_ref}: the step gave NaN/inf parameters (lr {lr:g}); nothing written"
        )
    grads = gradients(model, written)
    with torch.no_grad():
        after = float(model.objective(written))
    path = (write or write_results)(book, model, written, grads=grads, out=out)
    visible = model.data_rows()
    return {
        "book": str(path),
        "objective_cell": model.objective_ref,
        "initial_objective": before,
        "objective": after,
        "optimizer": name,
        "lr": lr,
        "params": model.param_refs,
        "dataset": ds or None,
        "batch_rows": len(batch) if batch is not None else (None if visible is None else len(visible)),
        "seed": seed if ds else None,
        "step_loss": float(loss.detach()),
        "metrics": metrics(model, written),
    }
