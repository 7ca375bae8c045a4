"""Train, Step, Export, Reset and Cancel on the open Calc document: what the extension's buttons call.

The model is read live from the document (:func:`xlmnist.calc.live.read_document`: formulas, values,
names, edits included, nothing saved) and trained by the same session as ``xlmnist train`` / ``step``
(:func:`xlmnist.train.session.train_book`), whose results (parameters, gradients, history, confusion
matrix) come back through UNO, one call per block; Calc recalculates the rest. The document is only
modified in memory: the user decides whether to save it.

Progress shows in the status bar; at every step the UI gets to run (``XReschedule``, at most every
POLL_EVERY seconds), so the Cancel button works while Train runs: the run stops at its next step, full
batch and minibatch alike, and the values so far (L-BFGS: the best) are written and Calc recalculates,
as ``xlmnist train`` does on Ctrl-C and the Excel add-in on its Cancel; a message box says so. Errors
become one message box; every action also returns its result as a JSON string (``{"ok": true,
"objective": ...}`` or ``{"ok": false, "error": "..."}``).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from xlmnist.calc import live
from xlmnist.compile.settings import pick_sheet
from xlmnist.errors import TrainingError, WorkbookError, XlmnistError

TITLE = "xlmnist"
STATUS_EVERY = 0.25  # seconds between status bar updates
POLL_EVERY = 0.05  # seconds between UI event processing while training (the Cancel button's latency)
CANCEL = {"requested": False, "running": False}  # the Cancel button's flag; Train or Step in progress


class Status:
    """The document frame's status bar and UI events while Python holds the main thread."""

    def __init__(self, ctx, doc):
        self.last, self.polled, self.ind, self.toolkit = 0.0, 0.0, None, None
        try:
            self.toolkit = ctx.ServiceManager.createInstanceWithContext("com.sun.star.awt.Toolkit", ctx)
            self.ind = doc.CurrentController.StatusIndicator
        except Exception:  # noqa: BLE001 - no view (a document loaded without one)
            pass

    def show(self, text: str) -> None:
        if self.ind is not None:
            try:
                self.ind.start(text, 0)
            except Exception:  # noqa: BLE001 - the status bar is best effort
                self.ind = None
        self.events()

    def events(self) -> None:
        if self.toolkit is not None:
            try:
                self.toolkit.reschedule()
            except Exception:  # noqa: BLE001
                self.toolkit = None

    def __call__(self, done: int, total, loss, accuracy=None, unit: str = "epoch") -> None:
        """The session's ``progress``: "epoch k/N, loss ..., accuracy ..." at most every STATUS_EVERY s."""
        now = time.monotonic()
        if now - self.last >= STATUS_EVERY:
            self.last = now
            of = f"/{total}" if total else ""
            acc = "" if accuracy is None else f", accuracy {float(accuracy):.2%}"
            self.show(f"xlmnist: {unit} {done}{of}, loss {float(loss):.6g}{acc} (Cancel stops)")
        self.events()

    def cancelled(self) -> bool:
        """The session's ``cancel``, polled at every step: first lets the UI run (a pressed Cancel button
        sets the flag), at most every POLL_EVERY seconds."""
        now = time.monotonic()
        if now - self.polled >= POLL_EVERY:
            self.polled = now
            self.events()
        return CANCEL["requested"]

    def end(self, text: str | None = None) -> None:
        if self.ind is not None:
            try:
                self.ind.end()
            except Exception:  # noqa: BLE001
                pass
        if text and self.ind is not None:
            try:
                self.ind.start(text, 0)  # stays until the next action: the last result
            except Exception:  # noqa: BLE001
                pass


def message(ctx, doc, text: str, error: bool = True) -> None:
    """A message box over the document's window (returns at once in a headless office)."""
    try:
        from com.sun.star.awt.MessageBoxType import ERRORBOX, INFOBOX  # deferred: needs uno

        toolkit = ctx.ServiceManager.createInstanceWithContext("com.sun.star.awt.Toolkit", ctx)
        parent = doc.CurrentController.Frame.ContainerWindow
        box = toolkit.createMessageBox(parent, ERRORBOX if error else INFOBOX, 1, TITLE, text)
        box.execute()
        box.dispose()
    except Exception:  # noqa: BLE001 - no window to show it on: the returned JSON carries it
        pass


def training_values(wb, model, params, grads=None, history=None, confusion=None) -> dict:
    """``{range: values}`` of one run: parameters, and where the sheet names them (``xlmnist_gradients``,
    ``xlmnist_history``, ``xlmnist_confusion``) the gradients, history and confusion matrix, laid out
    as :func:`xlmnist.train.results.write_training_results` lays them out in a file."""
    from xlmnist.train.results import (  # deferred: torch (LibreOffice loads the macros)
        _finite_or_none,
        _numpy,
        _shape,
        areas,
        history_block,
    )

    values: dict[str, object] = {ref: _numpy(p) for ref, p in zip(model.param_refs, params)}
    sheet = model.objective_ref.rpartition("!")[0]
    sheet = sheet[1:-1].replace("''", "'") if sheet.startswith("'") else sheet
    names = {key.lower(): text for (scope, key), text in wb.names.items() if scope == sheet}
    if grads is not None and "xlmnist_gradients" in names:
        for ref, g in zip(areas(names["xlmnist_gradients"]), grads):
            values[ref] = _finite_or_none(_numpy(g).reshape(_shape(ref)))
    if history is not None and "xlmnist_history" in names:
        ref = areas(names["xlmnist_history"])[0]
        values[ref] = history_block(list(history), _shape(ref))
    if confusion is not None and "xlmnist_confusion" in names:
        ref = areas(names["xlmnist_confusion"])[0]
        values[ref] = _numpy(confusion).reshape(_shape(ref))
    return values


def _fit_history_charts(doc, wb, model, values) -> None:
    """The history charts' x axes cover exactly the epochs just written (rewritten on every run)."""
    from xlmnist.train.results import areas  # deferred: torch (LibreOffice loads the macros)

    sheet = model.objective_ref.rpartition("!")[0].strip("'")
    text = wb.name(sheet, "xlmnist_history")
    if not text:
        return
    ref = areas(text)[0]
    block = np.asarray(values[ref], dtype=object)
    filled = [i for i in range(block.shape[0]) if block[i, 0] is not None]
    hist_sheet, (r1, _, r2, _) = live._split(ref)
    live.fit_charts(doc, hist_sheet, r1, r2, r1 + (filled[-1] if filled else 0))


def _writer(doc):
    def write(wb, model, params, *, grads=None, history=None, confusion=None, out=None):
        values = training_values(wb, model, params, grads, history, confusion)
        for ref, block in values.items():
            arr = np.asarray(block, dtype=object)
            if any(v is not None and not math.isfinite(float(v)) for v in arr.ravel()):
                raise TrainingError(f"{ref}: refusing to write NaN/inf values")
        live.write_values(doc, values)
        if history is not None:
            _fit_history_charts(doc, wb, model, values)
        return wb.path

    return write


def _sheet(wb) -> str:
    """The model sheet: the active sheet when it has an objective, else the first one that has."""
    return pick_sheet(wb, None)


def _run(ctx, doc, action: str, **options) -> dict:
    from xlmnist.train.session import compile_sheet, run_session, run_step  # deferred: torch

    status = Status(ctx, doc)
    CANCEL.update(requested=False, running=True)
    sheet = "the document"
    try:
        status.show(f"xlmnist: reading the document for {action}...")
        wb = live.read_document(doc)
        sheet = _sheet(wb)
        live.check_protection(doc, sheet)
        status.show(f"xlmnist: {action} on {sheet}...")
        where = "set device to cpu (or auto) in the settings sheet"
        model = compile_sheet(wb, sheet)
        if action == "train":  # the CLI's session: the same settings, dataset, minibatches, history
            run = run_session(model, progress=status, cancel=status.cancelled, where=where, **options)
        else:
            run = run_step(model, where=where, **options)
        _writer(doc)(wb, run.model, run.params, grads=run.grads, history=run.history, confusion=run.confusion)
        res = run.payload
    except KeyboardInterrupt:  # a cancel before the first step had values to keep
        raise TrainingError(f"{sheet}: cancelled before the first step ended; nothing written") from None
    finally:
        CANCEL["running"] = False
        status.end()
    msg = f"{res['objective_cell']}: {res['initial_objective']:.6g} -> {res['objective']:.6g}"
    msg += f" in {res['steps']} steps"
    if res.get("epochs"):
        msg += f" ({res['epochs']} epochs)"
    if res.get("interrupted"):  # the Cancel button: the values so far are in the cells now
        msg += ": cancelled; the values so far were written"
        message(ctx, doc, msg, error=False)
    status.end(f"xlmnist: {msg}")
    keep = ("objective_cell", "objective", "initial_objective", "steps", "epochs", "optimizer", "lr",
            "interrupted", "params", "metrics", "dataset", "rows")  # fmt: skip
    return {"ok": True, "action": action, "message": msg, **{k: res.get(k) for k in keep if k in res}}


def _reset(ctx, doc, seed: int = 0, scale: float = 0.1) -> dict:
    import torch  # deferred: heavy

    # deferred: torch (LibreOffice loads the macros without it)
    from xlmnist.train.optim import random_params
    from xlmnist.train.session import compile_sheet

    wb = live.read_document(doc)
    sheet = _sheet(wb)
    live.check_protection(doc, sheet)
    model = compile_sheet(wb, sheet)
    params = random_params(model, seed=seed, scale=scale)
    live.write_values(doc, {ref: p.numpy() for ref, p in zip(model.param_refs, params)})
    with torch.no_grad():
        obj = float(model.objective(params))
    msg = f"{model.objective_ref}: reset to random values (seed {seed}), objective {obj:.6g}"
    Status(ctx, doc).end(f"xlmnist: {msg}")
    return {"ok": True, "action": "reset", "objective_cell": model.objective_ref, "objective": obj,
            "params": model.param_refs, "message": msg}  # fmt: skip


def _export(ctx, doc, out: str | None = None) -> dict:
    """The active model sheet as a PyTorch module, from a copy of the document as it is now (the
    document itself keeps its file and its modified state)."""
    import uno  # deferred: only inside LibreOffice

    # deferred: torch and the exporter, only for Export
    from xlmnist.calc.office import _pv
    from xlmnist.export.codegen import generate

    wb_path = live.document_path(doc)
    sheet = _sheet(live.read_document(doc))
    folder = Path(wb_path).parent if Path(wb_path).is_absolute() else Path.home()
    target = Path(out) if out else folder / f"{Path(wb_path).stem}_{sheet}.py"
    with tempfile.TemporaryDirectory(prefix="xlmnist-export-") as tmp:
        copy = Path(tmp) / f"{Path(wb_path).stem or 'book'}.xlsx"
        doc.storeToURL(uno.systemPathToFileUrl(str(copy)), (_pv("FilterName", "Calc MS Excel 2007 XML"),))
        written = generate(copy, sheet=sheet, out_path=target)
    msg = f"{sheet}: PyTorch module written to {written or target}"
    message(ctx, doc, msg, error=False)
    return {"ok": True, "action": "export", "path": str(written or target), "message": msg}


def run(ctx, doc, action: str, show_errors: bool = True, **options) -> str:
    """Do ``action`` (train, step, reset, export) on ``doc``; the result as a JSON string."""
    try:
        if doc is None or not doc.supportsService("com.sun.star.sheet.SpreadsheetDocument"):
            raise WorkbookError("xlmnist works on a Calc spreadsheet: open one and press the button there")
        if action in ("train", "step"):
            result = _run(ctx, doc, action, **options)
        elif action == "reset":
            result = _reset(ctx, doc, **options)
        elif action == "export":
            result = _export(ctx, doc, **options)
        else:
            raise XlmnistError(f"unknown action {action!r}; use train, step, reset or export")
    except XlmnistError as exc:
        result = {"ok": False, "action": action, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a macro must not die silently: say what happened
        result = {"ok": False, "action": action, "error": f"{type(exc).__name__}: {exc}"}
    if not result["ok"]:
        Status(ctx, doc).end(f"xlmnist: {result['error']}")
        if show_errors:
            message(ctx, doc, result["error"])
    return json.dumps(result, default=float)


def cancel(ctx=None, doc=None) -> str:
    """The Cancel button: the training run in progress stops at its next step and writes the values so
    far; with none in progress, says so (in ``doc``'s status bar)."""
    if not CANCEL["running"]:
        error = "no training run is in progress"
        if doc is not None:
            Status(ctx, doc).end(f"xlmnist: {error}")
        return json.dumps({"ok": False, "action": "cancel", "error": error})
    CANCEL["requested"] = True
    return json.dumps(
        {"ok": True, "action": "cancel", "message": "cancel requested: the run stops at its next step"}
    )
