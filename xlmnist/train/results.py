"""What the learner sees after training: one atomic write of the results into the workbook.

``write_training_results(path, model, params, gradients=, history=, confusion=)`` writes

* the parameters into ``model.param_refs``;
* the gradients into the sheet's ``xlmnist_gradients`` areas (same order and shapes as the params);
* the history (a list of dicts with keys epoch, train_loss, valid_loss, valid_accuracy, seconds) into
  ``xlmnist_history``: one row per epoch; rows beyond the run are cleared. A run longer than the block
  is thinned to evenly spaced epochs (always keeping the last one);
* the K x K confusion matrix into ``xlmnist_confusion``;
* consistent *cached values* of every formula cell that depends on the parameters (the model sheet's
  per-row columns, loss, accuracy, and the views on other sheets such as the weight heatmaps), computed
  by the compiled model from the new parameters, so the file shows the new results in a program that
  does not recalculate on load (LibreOffice's default for xlsx). Formula cells that cannot be computed
  here (text results, unsupported functions) keep their old cached value; ``fullCalcOnLoad`` makes Excel
  recalculate them anyway.

Names the workbook lacks are skipped (the course's titanic.xlsx has none of them: then only the params
and the cached values are written). Non-finite history entries are written as empty cells.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from xlmnist.errors import WorkbookError, XlmnistError
from xlmnist.lessons.learn import fit_chart_rows
from xlmnist.xlsx.package import read_names
from xlmnist.xlsx.refs import area_name, split_ref
from xlmnist.xlsx.refs import split_areas as areas
from xlmnist.xlsx.writeback import write_values

HISTORY_KEYS = ("epoch", "train_loss", "valid_loss", "valid_accuracy", "seconds")


def sheet_names(path, sheet: str) -> dict[str, str]:
    """The defined names scoped to ``sheet`` (lower-case name -> text), read from xl/workbook.xml."""
    _, names = read_names(path)
    return {name.lower(): text for (scope, name), text in names.items() if scope == sheet}


def _shape(ref: str) -> tuple[int, int]:
    _, r1, c1, r2, c2 = split_ref(ref)
    return r2 - r1 + 1, c2 - c1 + 1


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _finite_or_none(a: np.ndarray) -> np.ndarray:
    if np.isfinite(a).all():  # (a float array: the write-back splices it in bulk)
        return a
    out = a.astype(object)
    out[~np.isfinite(a)] = None
    return out


def history_block(history: list[dict], shape: tuple[int, int]) -> np.ndarray:
    """The history block's cells: one row per (kept) epoch, ``None`` (cleared) below and for NaN."""
    rows, cols = shape
    if len(history) > rows:  # thin to evenly spaced epochs, keeping the first and the last
        keep = np.unique(np.linspace(0, len(history) - 1, rows).round().astype(int))
        history = [history[i] for i in keep]
    block = np.full(shape, None, dtype=object)
    for i, h in enumerate(history):
        for j, key in enumerate(HISTORY_KEYS[:cols]):
            v = h.get(key)
            if v is not None and np.isfinite(float(v)):
                block[i, j] = float(v)
    return block


def cached_values(model, params, stale: list | None = None) -> dict[str, np.ndarray]:
    """``{range: values}`` of every parameter-dependent formula block, evaluated on the sheet's visible
    rows. What cannot be recomputed here keeps its old cached value and is reported in ``stale`` (a list
    of ``{"range": ..., "why": ...}``): blocks the compiler cannot evaluate (with the reason) and cells
    whose result is not a number (text, an error value)."""
    stale = [] if stale is None else stale
    refs = [area_name(b.sheet, *b.out) for b in model.dependent_blocks()]
    if not refs:
        return {}
    with torch.no_grad():
        try:
            got = model.evaluate(refs, params)
        except XlmnistError:  # find the blocks the compiler cannot evaluate and leave them out
            good = []
            for ref in refs:
                try:
                    model.evaluate([ref], params)
                    good.append(ref)
                except XlmnistError as exc:
                    stale.append({"range": ref, "why": str(exc)})
            got = model.evaluate(good, params) if good else {}
    out = {}
    for ref, t in got.items():
        block = _finite_or_none(np.broadcast_to(_numpy(t), _shape(ref)))
        missing = sum(v is None for v in np.asarray(block, dtype=object).ravel())
        if missing:
            stale.append(
                {"range": ref, "why": f"{missing} cell(s) give text or an error value, not a number"}
            )
        out[ref] = block
    return out


def result_blocks(path, model, params, *, gradients=None, history=None, confusion=None) -> dict:
    """``{range: block}`` of everything a run writes besides cached values: the parameters, and where the
    model sheet names them (in the file ``path``) the gradients, the history and the confusion matrix.
    The one layout for the file writer and the open workbook (:mod:`xlmnist.excel.book`)."""
    params = [_numpy(p) for p in params]
    if len(params) != len(model.param_refs):
        raise WorkbookError(f"expected {len(model.param_refs)} parameter arrays, got {len(params)}")
    values: dict[str, object] = dict(zip(model.param_refs, params))
    sheet = model.objective_ref.rpartition("!")[0]
    sheet = sheet[1:-1].replace("''", "'") if sheet.startswith("'") else sheet
    names = sheet_names(path, sheet)
    if gradients is not None and "xlmnist_gradients" in names:
        targets = areas(names["xlmnist_gradients"])
        if len(targets) != len(gradients):
            raise WorkbookError(
                f"{sheet}: xlmnist_gradients has {len(targets)} areas but {len(gradients)} gradients were given"
            )
        for ref, g in zip(targets, gradients):
            values[ref] = _finite_or_none(_numpy(g).reshape(_shape(ref)))
    if history is not None and "xlmnist_history" in names:
        ref = areas(names["xlmnist_history"])[0]
        values[ref] = history_block(list(history), _shape(ref))
    if confusion is not None and "xlmnist_confusion" in names:
        ref = areas(names["xlmnist_confusion"])[0]
        cm = _numpy(confusion)
        if cm.shape != _shape(ref):
            raise WorkbookError(f"{ref}: confusion matrix {cm.shape} does not fit {_shape(ref)}")
        values[ref] = cm
    return values


def write_training_results(
    path, model, params, *, gradients=None, history=None, confusion=None, out=None, stale=None, release=False
) -> Path:
    """ONE atomic write of params, gradients, history, confusion and consistent cached formula values
    (see the module docstring). Returns the path written (``out`` if given, else ``path``); the formula
    cells that depend on the parameters but could not be recomputed are appended to ``stale``. ``release``:
    the model is not used afterwards; its memory is freed (:meth:`CompiledModel.release`) before the write."""
    path = Path(path)
    values = result_blocks(path, model, params, gradients=gradients, history=history, confusion=confusion)
    params = [values[ref] for ref in model.param_refs]
    sheet = model.objective_ref.rpartition("!")[0]
    sheet = sheet[1:-1].replace("''", "'") if sheet.startswith("'") else sheet
    calc = model
    if getattr(model, "dtype", torch.float64) != torch.float64:  # cached values must match Excel's doubles
        # the float64 CPU twin its program was validated against, or the same graph compiled again (no re-read)
        calc = model.__dict__.get("_twin") or model.recompile(dtype=torch.float64, device="cpu")
    p64 = [torch.tensor(p, dtype=torch.float64, device=calc.device) for p in params]
    cached = cached_values(calc, p64, stale)
    if release:
        del calc, p64
        model.release()
    transform = None  # the history charts' x axes end at the last epoch written
    names = sheet_names(path, sheet)
    if "xlmnist_history" in names:
        ref = areas(names["xlmnist_history"])[0]
        if ref in values:
            transform = _history_charts(ref, np.asarray(values[ref], dtype=object))
    return write_values(path, values, out=out, cached=cached, transform=transform)


def _history_charts(ref: str, block: np.ndarray):
    """The charts' ranges over the history block end at its last written row (xlmnist.lessons.learn)."""
    sheet, r1, _, r2, _ = split_ref(ref)
    rows = [i for i in range(block.shape[0]) if block[i, 0] is not None]
    filled = r1 + (rows[-1] if rows else 0)

    def transform(member: str, data: bytes) -> bytes:
        if not (member.startswith("xl/charts/chart") and member.endswith(".xml")):
            return data
        return fit_chart_rows(data, sheet, r1, r2, filled)

    transform.wants = lambda member: member.startswith("xl/charts/chart") and member.endswith(".xml")
    return transform
