"""xlwings entry points of the xlmnist Excel add-in: Train, Step, Cancel, Export, Reset on an open workbook.

Each takes an ``xlwings.Book`` (desktop Excel, or xlwings' remote engine ``xw.Book(json=...)``). Train and
Step run the same training session as ``xlmnist train``/``step`` (:mod:`xlmnist.train.session`) on the
model compiled from the saved file ``book.fullname`` (or ``path=``), starting from the trainable cells'
live values (one range call per block). The open workbook must match the saved file: formulas (desktop
Excel), names, data rows and the settings sheet are compared, and a difference stops the run with "Save
the workbook (Ctrl+S), then press Train". Results (parameters, gradient row, history, confusion matrix)
go back with one range call per block, only after training finished, then ``calculate()``.

Errors are shown in Excel (``book.app.alert``, also on the remote engine where it becomes an action), in
Excel's words (:func:`excel_words`), and returned as ``{"ok": False, "error": "..."}``; successful runs
return ``{"ok": True, ...}`` (for Train the ``xlmnist train --json`` fields).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from xlmnist.errors import XlmnistError
from xlmnist.excel import background, warm
from xlmnist.excel.cells import (
    book_file,
    check_live_formulas,
    check_live_inputs,
    check_live_names,
    check_protection,
    engine,
    model_sheet,
    read_block,
    split_ref,
    write_blocks,
)
from xlmnist.excel.runs import Run, request_cancel
from xlmnist.excel.runs import busy as busy_error
from xlmnist.export.codegen import generate
from xlmnist.train import optim as trainer
from xlmnist.train import session
from xlmnist.train.results import result_blocks
from xlmnist.xlsx.writeback import write_values

STATUS_EVERY = 0.5  # seconds between status bar updates
TITLE = "xlmnist"
SETTINGS_DEVICE = "set device to cpu (or auto) in the settings sheet"
# CLI wording in messages shared with `xlmnist train` -> what an Excel user changes instead
EXCEL_WORDS = (
    ("pass --objective and --params", "define the names xlmnist_objective and xlmnist_params, or Solver's "
     "objective and variable cells (Data > Solver), on the model sheet"),
    ("use --device cpu", SETTINGS_DEVICE),
    ("--dtype float64 goes further", "dtype float64 in the settings sheet goes further"),
    ("--force", "force"),
    ("(try --lr ", "(try a smaller lr in the settings sheet, e.g. "),
    ("--", ""),
)  # fmt: skip


def excel_words(message: str) -> str:
    for cli, excel in EXCEL_WORDS:
        message = message.replace(cli, excel)
    return message


def load_model(book, sheet=None, path=None, device="cpu"):
    """(compiled model, live parameter arrays, sheet name, file) for the book's model sheet; refuses a
    workbook whose model (formulas, data, labels, settings) differs from the saved file. The compile is
    kept for the next click while the saved file is unchanged (:mod:`xlmnist.excel.warm`); the checks and
    the trainable values are live on every click. ``device``: where Train/Step will run the model (None:
    the settings sheet's device)."""
    file = book_file(book, path)
    name = model_sheet(book, sheet)
    saved = warm.compiled(file, name)
    check_live_formulas(book, name, file, saved.wb, memo=saved.memo)
    check_live_names(book, name, file, saved.wb)
    model = saved.model
    check_live_inputs(book, model, file, saved.wb, memo=saved.memo)
    live = [read_block(book, ref) for ref in model.param_refs]
    for ref, arr, p in zip(model.param_refs, live, model.initial_params()):
        if arr.shape != tuple(p.shape):
            raise XlmnistError(
                f"{ref}: the open workbook has {arr.shape} cells there, the file {tuple(p.shape)}"
            )
    for ref in model.param_refs:
        check_protection(book, split_ref(ref)[0], file, memo=saved.memo)
    return saved.on_device(device, SETTINGS_DEVICE), live, name, file


# ---------------------------------------------------------------- status bar, alerts


class _Status:
    """Progress in Excel's status bar where the engine has one: epoch k/N, loss, accuracy, time left."""

    def __init__(self, book, shown: list | None = None):
        self.book, self.last, self.t0 = book, 0.0, time.monotonic()
        self.enabled = engine(book) not in ("remote", "calamine", "unknown")
        self.shown: list[str] = [] if shown is None else shown  # every text shown (the last one is on screen)

    def show(self, text: str | None) -> None:
        if text is not None:
            self.shown.append(text)
        if not self.enabled:
            return
        try:
            self.book.app.status_bar = text if text is not None else False
        except Exception:  # noqa: BLE001 - status bar is best effort
            self.enabled = False

    def __call__(self, done: int, total: int, loss: float, accuracy: float | None, unit="epoch") -> None:
        now = time.monotonic()
        if now - self.last < STATUS_EVERY and done < total:
            return
        self.last = now
        left = (now - self.t0) / max(done, 1) * max(total - done, 0)
        acc = f", accuracy {accuracy:.2%}" if accuracy is not None else ""
        self.show(f"xlmnist: {unit} {done}/{total}, loss {loss:.6g}{acc}, about {left:.0f} s left")


def alert(book, message: str) -> None:
    try:
        book.app.alert(message, title=TITLE)
    except Exception:  # noqa: BLE001 - no alert on this engine: the returned dict carries it
        pass


def _guard(book, fn):
    try:
        return fn()
    except XlmnistError as exc:
        msg = excel_words(str(exc))
        alert(book, msg)
        return {"ok": False, "error": msg}


def calculate(book) -> None:
    """Recalculate after writing, so a workbook in manual calculation mode shows the new predictions."""
    try:
        book.app.calculate()
    except Exception:  # noqa: BLE001 - an engine without calculate: Excel recalculates on its own
        pass


# ---------------------------------------------------------------- entry points


def _write(book, file, run, live) -> dict:
    """The session's results into the open workbook: one range call per block, then calculate()."""
    blocks = result_blocks(
        file, run.model, run.params, gradients=run.grads, history=run.history, confusion=run.confusion
    )
    write_blocks(book, blocks, previous=dict(zip(run.model.param_refs, live)))
    calculate(book)
    return {ref: blocks[ref] for ref in run.model.param_refs}


def train(
    book,
    sheet=None,
    path=None,
    cancel: Callable[[], bool] | None = None,
    shown: list | None = None,
    **options,
) -> dict:
    """Train the trainable cells of ``sheet`` (default: the active sheet) exactly as ``xlmnist train`` does
    on the saved file (:func:`xlmnist.train.session.run_session`: the settings sheet's dataset, minibatches,
    lr schedule, validation), from the values now in the cells; writes the parameters, the gradient row,
    the history and the confusion matrix back, then recalculates.

    ``options``: optimizer, lr, epochs, seed, device, max_seconds, dataset, batch_size (a given option wins
    over the settings sheet). ``cancel()`` returning True, or the Cancel button, stops at the next step and
    keeps the values so far. ``shown`` collects the status bar's texts (a background run's progress).
    """

    def run():
        status = _Status(book, shown)
        model, live, _, file = load_model(book, sheet, path, device=options.get("device"))
        with Run(file) as lock:
            stop = (lambda: lock.cancelled() or cancel()) if cancel is not None else lock.cancelled
            status.show("xlmnist: training...")
            try:
                out = session.run_session(
                    model, cells=live, progress=status, cancel=stop, where=SETTINGS_DEVICE, **options
                )
            finally:
                status.show(None)
            values = _write(book, file, out, live)
        p = out.payload
        msg = (
            f"{p['objective_cell']}: {p['initial_objective']:.6g} -> {p['objective']:.6g} in {p['steps']} steps "
            f"({p['optimizer']}, {p['seconds']:.1f} s)"
        )
        if p["dataset"]:
            va = p["metrics"].get("valid_accuracy")
            msg += f" on {p['dataset_rows']} {p['dataset']} rows" + (
                f", valid accuracy {va:.2%}" if va else ""
            )
        if p["interrupted"]:
            msg += ": cancelled; the values so far were written"
            alert(book, msg)
        return {"ok": True, **p, "values": values, "message": msg, "status": status.shown}

    return _guard(book, run)


def step(book, sheet=None, path=None, **options) -> dict:
    """Exactly one update from the live values (:func:`xlmnist.train.session.run_step`, as ``xlmnist
    step``): options lr, optimizer, seed, batch_size, dataset, device."""

    def run():
        model, live, _, file = load_model(book, sheet, path, device=options.get("device"))
        out = session.run_step(model, cells=live, where=SETTINGS_DEVICE, **options)
        values = _write(book, file, out, live)
        p = out.payload
        msg = f"{p['objective_cell']}: {p['initial_objective']:.6g} -> {p['objective']:.6g} after one {p['optimizer']} step"
        return {"ok": True, **p, "values": values, "message": msg}

    return _guard(book, run)


def reset(book, sheet=None, path=None, seed: int = 0, scale: float = 0.1) -> dict:
    """Re-initialise the trainable cells with seeded N(0, scale^2) values."""

    def run():
        model, live, _, _ = load_model(book, sheet, path)
        params = trainer.random_params(model, seed=seed, scale=scale)
        values = {ref: p.numpy() for ref, p in zip(model.param_refs, params)}
        write_blocks(book, values, previous=dict(zip(model.param_refs, live)))
        calculate(book)
        with torch.no_grad():
            obj = float(model.objective(params))
        return {"ok": True, "objective_cell": model.objective_ref, "objective": obj, "params": model.param_refs,
                "values": values, "message": f"{model.objective_ref}: reset to random values (seed {seed})"}  # fmt: skip

    return _guard(book, run)


def free_name(target: Path) -> Path:
    """``target``, else ``<stem>_2<suffix>``, ``_3``, ...: the first name not taken."""
    k, out = 2, target
    while out.exists():
        out, k = target.with_name(f"{target.stem}_{k}{target.suffix}"), k + 1
    return out


def export(book, sheet=None, path=None, out=None) -> dict:
    """Write the sheet's model with the *live* weights as a PyTorch module next to the workbook; an
    existing file is never overwritten (the next free name ``_2``, ``_3`` ... is used, and said)."""

    def run():
        model, live, name, file = load_model(book, sheet, path)
        wanted = Path(out) if out else file.with_name(f"{file.stem}_{name}.py")
        target = free_name(wanted)
        with tempfile.TemporaryDirectory(prefix="xlmnist-export-") as tmp:
            copy = write_values(file, dict(zip(model.param_refs, live)), out=Path(tmp) / file.name)
            written = generate(copy, sheet=name, out_path=target)
        msg = f"{name}: PyTorch module with the weights now in the cells written to {written or target}"
        if target != wanted:
            msg += f" ({wanted.name} exists and was kept)"
        alert(book, msg)
        return {"ok": True, "path": str(written or target), "message": msg}

    return _guard(book, run)


def cancel(book, sheet=None, path=None) -> dict:
    """The Cancel button: ask the run on this workbook to stop at its next step."""

    def run():
        file = book_file(book, path)
        if request_cancel(file):
            return {"ok": True, "message": "cancel requested: the run stops at its next step"}
        alert(book, "no training run is in progress on this workbook")
        return {"ok": False, "error": "no training run is in progress on this workbook"}

    return _guard(book, run)


def train_in_background(book, sheet=None, path=None, **options) -> dict:
    """Train (as :func:`train`) on a worker thread of this process and return at once: the ribbon's Train
    where the process outlives the click (:mod:`xlmnist.excel.background`). Excel stays responsive, the
    status bar shows the progress, Cancel stops the run; errors and the end come as alerts / status bar
    text from the worker. The worker re-opens the workbook from its full name on desktop Excel (COM
    objects belong to the thread that got them); ``background.job(file).wait()`` gives the result."""
    import xlwings as xw  # deferred: xlwings is only needed inside Excel / the server

    def run():
        file = book_file(book, path)
        name = model_sheet(book, sheet)  # the sheet active at the click, whatever the user opens next
        fullname, com = str(book.fullname), engine(book) not in ("remote", "calamine", "unknown")

        def work(job):
            target = xw.Book(fullname) if com else book
            result = train(target, sheet=name, path=path, shown=job.shown, **options)
            _show_result(target, "train", result)
            return result

        background.start(file, name, work)
        msg = f"{name}: training started; the status bar shows its progress, Cancel stops it"
        return {"ok": True, "background": True, "message": msg}

    return _guard(book, run)


ACTIONS = {"train": train, "step": step, "reset": reset, "export": export, "cancel": cancel}


def _show_result(book, action: str, result: dict) -> None:
    if result.get("ok") and action in ("train", "step", "reset") and engine(book) != "remote":
        try:
            book.app.status_bar = result["message"]
        except Exception:  # noqa: BLE001
            pass


def _refuse_during_background_run(book) -> dict | None:
    """Train, Step and Reset write the cells a background run is training: refused until it ends."""
    try:
        file = book_file(book)
    except XlmnistError:
        return None  # not saved: the action itself says so
    if not background.busy(file):
        return None

    def refuse():
        raise busy_error(file)

    return _guard(book, refuse)


def run(action: str, book=None, in_background: bool | None = None) -> dict:
    """What the add-in's buttons call: ``action`` on the active sheet of the calling workbook. Train runs
    in the background where the Python process outlives the click (``in_background`` None: xlwings' UDF
    server, :func:`xlmnist.excel.background.persistent`), else synchronously."""
    import xlwings as xw  # deferred: xlwings is only needed inside Excel / the server

    if action not in ACTIONS:
        raise XlmnistError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    book = book if book is not None else xw.Book.caller()
    if action in ("train", "step", "reset"):
        refused = _refuse_during_background_run(book)
        if refused is not None:
            return refused
    if action == "train" and (background.persistent() if in_background is None else in_background):
        return train_in_background(book)
    result = ACTIONS[action](book)
    _show_result(book, action, result)
    return result


def main() -> dict:
    """Train the active sheet of ``xw.Book.caller()`` (the xlwings ribbon template's ``<name>.main()``)."""
    return run("train")


def _debug_main() -> None:
    """``python -m xlmnist.excel BOOK.xlsx [action]``: debugging outside Excel (xlwings' mock caller)."""
    import xlwings as xw  # deferred: xlwings is only needed inside Excel / the server

    xw.Book(os.path.abspath(sys.argv[1])).set_mock_caller()
    print(run(sys.argv[2] if len(sys.argv) > 2 else "train"))
