"""xlwings entry points of the xlmnist Excel add-in: Train, Step, Export, Reset on an open workbook.

Each takes an ``xlwings.Book`` (desktop Excel, or xlwings' remote engine ``xw.Book(json=...)``). The
model is read live: the trainable cells' values through xlwings (one range call per block), the formulas
from the workbook file ``book.fullname`` names (or ``path=``), which must therefore be saved. On desktop
Excel the live formulas of the model sheet are read too (one ``.formula`` call on the used range) and the
run stops if they no longer match the saved file. Results go back with one range call per block (chunked
for very large blocks), only after training finished, so a failed run writes nothing.

Errors are shown in Excel (``book.app.alert``, also on the remote engine where it becomes an action)
and returned as ``{"ok": False, "error": "..."}``; successful runs return ``{"ok": True, ...}``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from xlmnist.compile import compile_workbook
from xlmnist.errors import TrainingError, WorkbookError, XlmnistError
from xlmnist.excel.cells import (
    book_file,
    check_live_formulas,
    check_protection,
    engine,
    model_sheet,
    read_block,
    split_ref,
    write_blocks,
)
from xlmnist.export.codegen import generate
from xlmnist.train import optim as trainer
from xlmnist.train.session import check_params_used
from xlmnist.train.settings import setting

STATUS_EVERY = 0.5  # seconds between status bar updates
TITLE = "xlmnist"


def training_options(model, given: dict) -> dict:
    """train() keyword arguments: each option given, else the workbook's settings sheet, else left out
    (train()'s default); max_seconds is never a workbook setting."""
    casts = {"optimizer": lambda v: str(v).strip().lower(), "lr": float, "epochs": lambda v: int(float(v)),
             "seed": lambda v: int(float(v)), "device": lambda v: str(v).strip().lower()}  # fmt: skip
    out = {key: setting(model, key, given.get(key), cast) for key, cast in casts.items()}
    out["max_seconds"] = given.get("max_seconds")
    return {key: value for key, value in out.items() if value is not None}


def load_model(book, sheet=None, path=None, device: str = "cpu"):
    """(compiled model, live parameter arrays, sheet name, file) for the book's model sheet."""
    file = book_file(book, path)
    name = model_sheet(book, sheet)
    check_live_formulas(book, name, file)
    model = compile_workbook(file, sheet=name, device=device)
    check_params_used(model)
    live = [read_block(book, ref) for ref in model.param_refs]
    for ref, arr, p in zip(model.param_refs, live, model.initial_params()):
        if arr.shape != tuple(p.shape):
            raise WorkbookError(
                f"{ref}: the open workbook has {arr.shape} cells there, the file {tuple(p.shape)}"
            )
    for ref in model.param_refs:
        check_protection(book, split_ref(ref)[0], file)
    return model, live, name, file


# ---------------------------------------------------------------- status bar, alerts


class _Status:
    """Progress in Excel's status bar where the engine has one; can be cancelled by ``cancel()``."""

    def __init__(self, book, cancel: Callable[[], bool] | None = None):
        self.book, self.cancel, self.last = book, cancel, 0.0
        self.enabled = engine(book) not in ("remote", "calamine", "unknown")

    def show(self, text: str | None) -> None:
        if not self.enabled:
            return
        try:
            self.book.app.status_bar = text if text is not None else False
        except Exception:  # noqa: BLE001 - status bar is best effort
            self.enabled = False

    def __call__(self, step: int, objective: float) -> None:
        now = time.monotonic()
        if now - self.last >= STATUS_EVERY:
            self.last = now
            self.show(f"xlmnist: step {step}, objective {objective:.6g}")
        if self.cancel is not None and self.cancel():
            raise KeyboardInterrupt


def alert(book, message: str) -> None:
    try:
        book.app.alert(message, title=TITLE)
    except Exception:  # noqa: BLE001 - no alert on this engine: the returned dict carries it
        pass


def _guard(book, fn):
    try:
        return fn()
    except XlmnistError as exc:
        alert(book, str(exc))
        return {"ok": False, "error": str(exc)}


# ---------------------------------------------------------------- entry points


def _finish(book, model, live, result, status, note: str) -> dict:
    if not result.params:
        raise TrainingError("training produced no parameters; nothing written")
    values = {ref: p.detach().cpu().numpy() for ref, p in zip(model.param_refs, result.params)}
    write_blocks(book, values, previous=dict(zip(model.param_refs, live)))
    status.show(None)
    msg = (
        f"{model.objective_ref}: {result.initial_objective:.6g} -> {result.objective:.6g} "
        f"in {result.steps} steps ({result.optimizer}, {result.seconds:.1f} s){note}"
    )
    if result.interrupted:
        alert(book, f"{msg}: cancelled; the best values so far were written")
    return {
        "ok": True, "sheet": model.objective_ref.split("!")[0], "objective_cell": model.objective_ref,
        "objective": result.objective, "initial_objective": result.initial_objective, "steps": result.steps,
        "optimizer": result.optimizer, "interrupted": result.interrupted, "params": model.param_refs,
        "values": values, "message": msg,
    }  # fmt: skip


def train(
    book, sheet=None, path=None, cancel: Callable[[], bool] | None = None, epochs=None, **options
) -> dict:
    """Train the trainable cells of ``sheet`` (default: the active sheet) and write them back.

    ``options``: optimizer, lr, seed, device, max_seconds (as ``xlmnist train``; the workbook's
    settings sheet fills in what is not given). ``cancel()`` returning True stops the run and keeps the
    best values (so does Ctrl-C in the Python console).
    """

    def run():
        status = _Status(book, cancel)
        model, live, _, _ = load_model(book, sheet, path)
        opts = training_options(model, {**options, "epochs": epochs})
        opts["device"] = trainer.resolve_device(opts.get("device", "cpu"))
        start = [torch.tensor(a, dtype=torch.float64) for a in live]
        status.show("xlmnist: training...")
        try:
            result = trainer.train(model, progress=status, params=start, **opts)
        finally:
            status.show(None)
        return _finish(book, model, live, result, status, "")

    return _guard(book, run)


def step(book, sheet=None, path=None, **options) -> dict:
    """One optimisation step from the live values (Solver's "one iteration")."""
    return train(book, sheet=sheet, path=path, epochs=1, **options)


def reset(book, sheet=None, path=None, seed: int = 0, scale: float = 0.1) -> dict:
    """Re-initialise the trainable cells with seeded N(0, scale^2) values."""

    def run():
        model, live, _, _ = load_model(book, sheet, path)
        params = trainer.random_params(model, seed=seed, scale=scale)
        values = {ref: p.numpy() for ref, p in zip(model.param_refs, params)}
        write_blocks(book, values, previous=dict(zip(model.param_refs, live)))
        with torch.no_grad():
            obj = float(model.objective(params))
        return {"ok": True, "objective_cell": model.objective_ref, "objective": obj, "params": model.param_refs,
                "values": values, "message": f"{model.objective_ref}: reset to random values (seed {seed})"}  # fmt: skip

    return _guard(book, run)


def export(book, sheet=None, path=None, out=None) -> dict:
    """Write the sheet's model as a PyTorch module next to the workbook (needs ``xlmnist.export.module``)."""

    def run():
        file = book_file(book, path)
        name = model_sheet(book, sheet)
        target = Path(out) if out else file.with_name(f"{file.stem}_{name}.py")
        written = generate(file, sheet=name, out_path=target)
        msg = f"{name}: PyTorch module written to {written or target}"
        alert(book, msg)
        return {"ok": True, "path": str(written or target), "message": msg}

    return _guard(book, run)


ACTIONS = {"train": train, "step": step, "reset": reset, "export": export}


def run(action: str, book=None) -> dict:
    """What the add-in's buttons call: ``action`` on the active sheet of the calling workbook."""
    import xlwings as xw  # deferred: xlwings is only needed inside Excel / the server

    if action not in ACTIONS:
        raise XlmnistError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    book = book if book is not None else xw.Book.caller()
    result = ACTIONS[action](book)
    if result.get("ok") and action in ("train", "step", "reset") and engine(book) != "remote":
        try:
            book.app.status_bar = result["message"]
        except Exception:  # noqa: BLE001
            pass
    return result


def main() -> dict:
    """Train the active sheet of ``xw.Book.caller()`` (the xlwings ribbon template's ``<name>.main()``)."""
    return run("train")


def _debug_main() -> None:
    """``python -m xlmnist.excel BOOK.xlsx [action]``: debugging outside Excel (xlwings' mock caller)."""
    import xlwings as xw  # deferred: xlwings is only needed inside Excel / the server

    xw.Book(os.path.abspath(sys.argv[1])).set_mock_caller()
    print(run(sys.argv[2] if len(sys.argv) > 2 else "train"))
