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

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from xlmnist.errors import TrainingError, WorkbookError, XlmnistError
from xlmnist.xlsx.refs import split_sheet as split_ref

CHUNK_CELLS = 100_000  # cells per range call when writing a block
STATUS_EVERY = 0.5  # seconds between status bar updates
TITLE = "xlmnist"


# ---------------------------------------------------------------- pure helpers


def to_numbers(ref: str, values) -> np.ndarray:
    """A 2-D float array from an xlwings value block; empty cells are 0 (as Excel reads them)."""
    arr = np.array(values, dtype=object, ndmin=2)
    out = np.zeros(arr.shape, dtype=np.float64)
    for (i, j), v in np.ndenumerate(arr):
        if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
            continue
        if isinstance(v, bool) or not isinstance(v, int | float | np.number):
            from xlmnist.xlsx.refs import col_letters, parse_area

            sheet, addr = split_ref(ref)
            r1, c1, _, _ = parse_area(addr)
            raise WorkbookError(
                f"{sheet}!{col_letters(c1 + j)}{r1 + i}: trainable cell holds {v!r}, not a number"
            )
        out[i, j] = float(v)
    return out


def write_actions_to_values(actions: list[dict], sheet_names: list[str]) -> dict:
    """Turn the remote engine's ``setValues`` actions into ``writeback.write_values`` input."""
    from xlmnist.xlsx.refs import col_letters

    values = {}
    for a in actions:
        if a.get("func") != "setValues":
            continue
        r, c = a["start_row"] + 1, a["start_column"] + 1
        block = np.array(a["values"], dtype=np.float64, ndmin=2)
        end = f"{col_letters(c + block.shape[1] - 1)}{r + block.shape[0] - 1}"
        values[f"{sheet_names[a['sheet_position']]}!{col_letters(c)}{r}:{end}"] = block
    return values


def training_options(model, given: dict) -> dict:
    """train() keyword arguments: explicit options, else the workbook's settings sheet, else defaults."""
    casts = {"optimizer": lambda v: str(v).strip().lower(), "lr": float, "epochs": lambda v: int(float(v)),
             "seed": lambda v: int(float(v)), "device": lambda v: str(v).strip().lower()}  # fmt: skip
    out = {}
    for key, cast in casts.items():
        value = given.get(key)
        if value is None:
            value = (model.settings or {}).get(key)
        if value in (None, ""):
            continue
        try:
            out[key] = cast(value)
        except (TypeError, ValueError):
            raise WorkbookError(f"settings: {key} = {value!r} is not valid") from None
    for key in ("max_seconds",):
        if given.get(key) is not None:
            out[key] = given[key]
    return out


# ---------------------------------------------------------------- reading the live workbook


def _engine(book) -> str:
    try:
        return book.app.engine.name
    except Exception:  # noqa: BLE001 - an engine without a name is not desktop Excel
        return "unknown"


def book_file(book, path=None) -> Path:
    """The saved workbook file the model's formulas are read from."""
    try:
        name = str(path or book.fullname)
    except Exception as exc:  # noqa: BLE001 - COM/AppleScript errors when the book was closed
        raise WorkbookError(f"the workbook is no longer open ({exc})") from None
    p = Path(name)
    if not p.is_file():
        raise WorkbookError(
            f"{name}: the workbook is not saved as a file xlmnist can read; save it as .xlsx/.xlsm and run again"
        )
    return p


def model_sheet(book, sheet=None) -> str:
    if sheet is None:
        return book.sheets.active.name
    return sheet if isinstance(sheet, str) else sheet.name


def read_block(book, ref: str) -> np.ndarray:
    """One range call: the numbers of ``ref`` as a 2-D float array."""
    sheet, addr = split_ref(ref)
    rng = book.sheets[sheet].range(addr)
    return to_numbers(ref, rng.options(np.array, ndim=2, dtype=object).value)


def check_live_formulas(book, sheet: str, path: Path) -> None:
    """Desktop Excel: stop when the model sheet's formula cells differ from the saved file's."""
    if _engine(book) not in ("excel", "macos", "windows"):
        return  # the remote engine sends no formulas; the file is the source
    from xlmnist.xlsx.reader import read_workbook
    from xlmnist.xlsx.refs import col_letters

    used = book.sheets[sheet].used_range
    formulas = np.array(used.formula, dtype=object, ndmin=2)
    live = {
        (used.row + i, used.column + j)
        for (i, j), f in np.ndenumerate(formulas)
        if isinstance(f, str) and f.startswith("=")
    }
    saved = set(read_workbook(path).sheet(sheet).formula_cells())
    diff = sorted(live ^ saved)
    if diff:
        r, c = diff[0]
        raise WorkbookError(
            f"{sheet}!{col_letters(c)}{r}: the formulas differ from the saved file {path.name}; "
            "save the workbook (Ctrl+S) and run again"
        )


def check_protection(book, sheet: str, path: Path) -> None:
    """A protected model sheet cannot take the trained values: stop before training."""
    protected = False
    try:  # desktop Excel (Windows COM); other engines have no such attribute
        protected = bool(book.sheets[sheet].api.ProtectContents)
    except Exception:  # noqa: BLE001
        protected = _file_sheet_protected(path, sheet)
    if protected:
        raise WorkbookError(
            f"{sheet}!A1: the sheet is protected; unprotect it (Review > Unprotect Sheet) and run again"
        )


def _file_sheet_protected(path: Path, sheet: str) -> bool:
    import re
    import zipfile

    from xlmnist.xlsx.package import sheet_members

    with zipfile.ZipFile(path) as zf:
        member = sheet_members(zf, str(path)).get(sheet)
        if member is None:
            return False
        m = re.search(rb"<(?:\w+:)?sheetProtection\b[^>]*>", zf.read(member))
    return bool(m and re.search(rb'\bsheet="(1|true)"', m.group(0)))


def load_model(book, sheet=None, path=None, device: str = "cpu"):
    """(compiled model, live parameter arrays, sheet name, file) for the book's model sheet."""
    from xlmnist.compile import compile_workbook

    file = book_file(book, path)
    name = model_sheet(book, sheet)
    check_live_formulas(book, name, file)
    model = compile_workbook(file, sheet=name, device=device)
    live = [read_block(book, ref) for ref in model.param_refs]
    for ref, arr, p in zip(model.param_refs, live, model.initial_params()):
        if arr.shape != tuple(p.shape):
            raise WorkbookError(
                f"{ref}: the open workbook has {arr.shape} cells there, the file {tuple(p.shape)}"
            )
    for ref in model.param_refs:
        check_protection(book, split_ref(ref)[0], file)
    return model, live, name, file


# ---------------------------------------------------------------- writing back


def write_blocks(book, values: dict[str, np.ndarray], previous: dict[str, np.ndarray] | None = None) -> None:
    """One range call per block (chunked by rows past CHUNK_CELLS); on failure restore what was written."""
    from xlmnist.xlsx.refs import col_letters, parse_area

    done = []
    try:
        for ref, arr in values.items():
            sheet, addr = split_ref(ref)
            r1, c1, _, _ = parse_area(addr)
            arr = np.asarray(arr, dtype=np.float64).reshape(-1, arr.shape[-1] if arr.ndim else 1)
            if not np.isfinite(arr).all():
                raise TrainingError(f"{ref}: refusing to write NaN/inf values")
            rows = max(1, CHUNK_CELLS // arr.shape[1])
            for start in range(0, arr.shape[0], rows):
                part = arr[start : start + rows]
                top = f"{col_letters(c1)}{r1 + start}"
                bottom = f"{col_letters(c1 + part.shape[1] - 1)}{r1 + start + part.shape[0] - 1}"
                book.sheets[sheet].range(f"{top}:{bottom}").value = part
            done.append(ref)
    except XlmnistError:
        raise
    except Exception as exc:  # noqa: BLE001 - Excel went away or refused the write
        for ref in done if previous else []:
            try:
                sheet, addr = split_ref(ref)
                book.sheets[sheet].range(addr).value = previous[ref]
            except Exception:  # noqa: BLE001 - nothing more we can do
                break
        raise WorkbookError(
            f"could not write the results into the workbook ({exc}); nothing was kept"
        ) from None


# ---------------------------------------------------------------- status bar, alerts


class _Status:
    """Progress in Excel's status bar where the engine has one; can be cancelled by ``cancel()``."""

    def __init__(self, book, cancel: Callable[[], bool] | None = None):
        self.book, self.cancel, self.last = book, cancel, 0.0
        self.enabled = _engine(book) not in ("remote", "calamine", "unknown")

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
    from xlmnist.train import optim as trainer

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
    from xlmnist.train.optim import random_params

    def run():
        model, live, _, _ = load_model(book, sheet, path)
        params = random_params(model, seed=seed, scale=scale)
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
        from xlmnist.export.codegen import generate

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
    import xlwings as xw

    if action not in ACTIONS:
        raise XlmnistError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    book = book if book is not None else xw.Book.caller()
    result = ACTIONS[action](book)
    if result.get("ok") and action in ("train", "step", "reset") and _engine(book) != "remote":
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
    import sys

    import xlwings as xw

    xw.Book(os.path.abspath(sys.argv[1])).set_mock_caller()
    print(run(sys.argv[2] if len(sys.argv) > 2 else "train"))
