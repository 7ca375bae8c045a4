"""Train (or step) one model sheet of a workbook and write the results back; the engine of ``xlmnist
train``, ``xlmnist step``, ``xlmnist demo``, ``bench/bench_mnist.py`` and the Excel add-in's Train/Step
(one code path for all of them): :func:`run_session` / :func:`run_step` take a compiled model and
(optionally) the live cell values and return an :class:`Outcome`; :func:`train_book` / :func:`step_book`
write it into the file, :mod:`xlmnist.excel.book` into the open workbook.

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
from dataclasses import dataclass
from pathlib import Path

import torch

from xlmnist.compile import compile_workbook
from xlmnist.compile.model import _compile
from xlmnist.errors import DataError, TrainingError, WorkbookError, XlmnistError
from xlmnist.train import torchopt
from xlmnist.train.metrics import SheetView
from xlmnist.train.minibatch import train_epochs
from xlmnist.train.optim import (
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    choose_optimizer,
    loss_fn,
    random_params,
    resolve_device,
    train,
)
from xlmnist.train.progress import epoch_printer as _epoch_printer
from xlmnist.train.progress import progress_hooks as _progress_hooks
from xlmnist.train.results import write_training_results
from xlmnist.train.settings import check_book, dataset_rows, metrics, setting

HISTORY_ROWS = 200


def _live(book) -> bool:
    """``book`` is an already read ``Workbook`` (e.g. xlmnist.calc's open Calc document), not a file."""
    return hasattr(book, "sheets") and hasattr(book, "names")


def compile_sheet(book, sheet=None, objective=None, params=None, device="cpu", dtype=torch.float64):
    """The model of ``sheet`` from a workbook file or from an already read ``Workbook`` (a live document)."""
    if _live(book):
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


def write_results(
    book, model, params, *, grads=None, history=None, confusion=None, out=None, stale=None, release=False
) -> Path:
    """One atomic write of the parameters, their gradients, the history and the confusion matrix; a full
    disk or a refused write is a one-line WorkbookError (the workbook is left as it was). Dependent
    formula cells that could not be recomputed are appended to ``stale``. ``release``: the model is not used
    afterwards (its memory goes to the write)."""
    try:
        written = write_training_results(
            book, model, [p.detach().cpu() for p in params], gradients=grads, history=history,
            confusion=confusion, out=out, stale=stale, release=release,
        )  # fmt: skip
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise WorkbookError(
            f"{out or book}: cannot write the workbook ({reason}); nothing was changed"
        ) from None
    return Path(written)


def training_device(model, given=None, where: str = "--device"):
    """``(model, device)``: the device a flag/option gives, else the settings sheet's, else cpu; the model
    recompiled there when it was compiled elsewhere (a CPU-compiled model never trains on CUDA).
    ``where`` names what to change when CUDA is asked for and absent (a flag, or the settings sheet)."""
    wanted = given or setting(model, "device", None, _text) or "cpu"
    try:
        device = resolve_device(wanted)
    except TrainingError as exc:
        if where == "--device":
            raise
        raise TrainingError(str(exc).split("; use --device")[0] + f"; {where}") from None
    if str(model.device) != device:
        model = model.recompile(device=device)
    return model, device


@dataclass
class Outcome:
    """What a session leaves to write: on the file (:func:`write_results`) or into the open workbook."""

    model: object  # the float64 model on the training device
    params: list  # the parameters to write (float64, on the device)
    grads: list  # d(objective cell)/d(params) at ``params``
    history: list  # one row per epoch (minibatch) or step (full batch), at most HISTORY_ROWS
    confusion: object  # K x K tensor of the valid split, or None
    payload: dict  # the ``train --json`` payload (without "book")


def run_session(
    model, *, cells=None, optimizer=None, lr=None, epochs=None, seed=None, device=None, init="cells",
    init_scale=0.1, max_seconds=None, dataset=None, batch_size=None, force=False, dtype=None, verbose=False,
    max_epochs=None, progress=None, cancel=None, where="--device",
) -> Outcome:  # fmt: skip
    """The training session on a compiled ``model``: starting values ``cells`` (the live workbook's) or the
    file's, settings from the arguments else the settings sheet; returns what to write (module docstring).
    ``progress(done, total, loss, accuracy, unit=...)`` after each step/epoch; ``cancel()`` True stops at the next
    step and keeps the values so far (``payload["interrupted"]``)."""
    model, device = training_device(model, device, where)
    seed = setting(model, "seed", seed, lambda v: int(float(v)))
    seed = 0 if seed is None else seed
    if model.random:
        model.reseed(seed)  # --seed fixes the samples of RAND() & co. too (recompile keeps the seed)
    start = None if cells is None else [torch.as_tensor(c, dtype=torch.float64).to(device) for c in cells]
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
    max_seconds = setting(model, "max_seconds", max_seconds, float)
    ds = _dataset(model, dataset)
    rows = valid = None
    if ds:
        rows, valid = _splits(model, ds, explicit=bool(dataset))
        ds = ds if rows is not None else ""
    batch_size = setting(model, "batch_size", batch_size, lambda v: int(float(v)))
    minibatch = rows is not None and name in ("sgd", "adam") and bool(batch_size) and batch_size < len(rows)
    if minibatch and max_epochs is not None:
        epochs = min(epochs or 1, max_epochs)
    total = (epochs or 1) if minibatch else (epochs if epochs is not None else DEFAULT_EPOCHS[name])
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
    on_step, on_epoch = _progress_hooks(progress, cancel, total)
    printer = _epoch_printer(epochs or 1) if verbose else None
    diagnosis, loop = None, model
    try:
        if minibatch:
            if (dtype or "float32") == "float32":
                loop = model.recompile(dtype=torch.float32, device=device)
            result = train_epochs(
                loop, rows, valid=valid, view=SheetView(loop, ds), optimizer=name, lr=lr, epochs=epochs,
                batch_size=batch_size, seed=seed, device=device, max_seconds=max_seconds, params=start,
                progress=lambda e, r: [f(e, r) for f in (printer, on_epoch) if f], cancel=cancel,
                lr_schedule=setting(model, "lr_schedule", None, _text) or "constant",
            )  # fmt: skip
        else:
            quiet = progress is None and cancel is None
            result = train(
                model, optimizer=name, lr=lr, epochs=epochs, seed=seed, device=device,
                progress=(None if verbose else False) if quiet else on_step, max_seconds=max_seconds,
                params=start, data=rows,
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
    payload = {
        "sheet": model.objective_ref.rsplit("!", 1)[0], "objective_cell": model.objective_ref,
        "objective": obj, "initial_objective": initial, "steps": result.steps,
        "epochs": len(result.epochs) if minibatch else None, "seconds": result.seconds,
        "cpu_seconds": result.cpu_seconds, "device": result.device,
        "program": loop.program_kind,  # "lowered" | "closures" (XLMNIST_DEBUG: why)
        "optimizer": result.optimizer, "lr": result.lr, "batch_size": batch_size if minibatch else None,
        "sense": model.sense, "params": model.param_refs, "n_params": sum(p.numel() for p in written),
        "converged": result.converged, "interrupted": result.interrupted, "metrics": mets,
        "dataset": ds or None, "dataset_rows": None if rows is None else len(rows),
        "rows": len(rows) if rows is not None else (None if model.data_rows() is None else len(model.data_rows())),
        "valid_rows": None if valid is None else len(valid), "dataset_objective": mets.get("train_loss"),
        "history": history, "confusion": None if confusion is None else confusion.tolist(),
        "diagnosis": diagnosis, "max_seconds": max_seconds,
    }  # fmt: skip
    return Outcome(model, written, gradients(model, written), _thin(history), confusion, payload)


def train_book(
    book, *, sheet=None, objective=None, params=None, device=None, out=None, **options
) -> dict:  # fmt: skip
    """Train one model sheet of the file ``book`` and write it back (one atomic write); returns the
    ``train --json`` payload. ``options``: those of :func:`run_session`; ``max_epochs`` caps the epochs of
    minibatch training only (``xlmnist demo --quick``)."""
    t_start = time.perf_counter()
    book = check_book(book)
    device = resolve_device(device) if device else None  # --device cuda without CUDA: before any work
    if out and Path(out).resolve() != book.resolve() and Path(out).suffix.lower() != ".xlsx":
        raise WorkbookError(f"{out}: --out must be an .xlsx file")
    model = compile_sheet(book, sheet, objective, params, device=device or "cpu")
    run = run_session(model, device=device, **options)
    stale: list = []
    path = write_results(
        book, run.model, run.params, grads=run.grads, history=run.history, confusion=run.confusion, out=out,
        stale=stale, release=True,  # (this model was compiled here and is not used again)
    )  # fmt: skip
    return {"book": str(path), **run.payload, "stale": stale, "total_seconds": time.perf_counter() - t_start}


def run_step(
    model, *, cells=None, lr=None, optimizer=None, seed=None, batch_size=None, dataset=None, device=None,
    where="--device",
) -> Outcome:  # fmt: skip
    """Exactly one optimisation step from ``cells`` (else the file's values): on one seeded minibatch of
    the dataset's train split (the first batch ``train --epochs 1 --seed S`` would take) or, without a
    dataset, on the visible rows (full batch). Adam starts from fresh moments (no optimizer state is kept)."""
    model, _ = training_device(model, device, where)
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
        batch = rows[idx].to(model.device)
    start = model.initial_params() if cells is None else cells
    ps = [
        torch.as_tensor(p, dtype=torch.float64).to(model.device).clone().requires_grad_(True) for p in start
    ]
    with torch.no_grad():
        before = float(model.objective(ps))
    opt = torchopt.make(name, ps, lr=lr)
    loss = loss_fn(model)(model.objective(ps, data=batch) if batch is not None else model.objective(ps))
    loss.backward()
    if not math.isfinite(float(loss.detach())) or not all(bool(torch.isfinite(p.grad).all()) for p in ps):
        raise TrainingError(f"{model.objective_ref}: the loss or its gradient is NaN/inf; nothing written")
    torchopt.step(opt)
    written = [p.detach() for p in ps]
    if not all(bool(torch.isfinite(p).all()) for p in written):
        raise TrainingError(
            f"{model.objective_ref}: the step gave NaN/inf parameters (lr {lr:g}); nothing written"
        )
    with torch.no_grad():
        after = float(model.objective(written))
    visible = model.data_rows()
    payload = {
        "objective_cell": model.objective_ref, "initial_objective": before, "objective": after,
        "optimizer": name, "lr": lr, "params": model.param_refs, "dataset": ds or None,
        "batch_rows": len(batch) if batch is not None else (None if visible is None else len(visible)),
        "seed": seed if ds else None, "step_loss": float(loss.detach()), "steps": 1,
        "metrics": metrics(model, written),
    }  # fmt: skip
    return Outcome(model, written, gradients(model, written), None, None, payload)


def step_book(book, *, sheet=None, objective=None, params=None, out=None, **options) -> dict:
    """:func:`run_step` on the file ``book``; writes the new parameters and the gradient at them."""
    book = check_book(book)
    run = run_step(compile_sheet(book, sheet, objective, params), **options)
    stale: list = []
    path = write_results(book, run.model, run.params, grads=run.grads, out=out, stale=stale, release=True)
    return {"book": str(path), **run.payload, "stale": stale}
