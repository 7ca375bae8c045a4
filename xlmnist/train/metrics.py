"""What a model sheet says about any rows: loss, accuracy, predicted classes, confusion, dead ReLUs.

Everything is computed by the sheet's own compiled formulas (``model.evaluate(..., data=rows)``), in
chunks, so the numbers over 10,000 validation rows are exactly what the sheet would show if it held them:

* loss = the objective cell (an ``AVERAGE`` of per-row losses) per chunk, weighted by the chunk's rows;
* accuracy = the per-row ``correct`` cells the ``xlmnist_accuracy`` cell averages (``AVERAGE(F10:F1009)``),
  or, when that cell is not a plain ``AVERAGE(range)``, the accuracy cell per chunk, weighted;
* predicted class of a row: the ``xlmnist_predictions`` cell when it holds a class (ten digits: the
  ``MATCH(MAX(..))-1`` column), the arg-max when it spans one column per class, and for a one-column
  probability (3 vs 7) the label when the row's ``correct`` cell is 1, else the other class;
* the confusion matrix: rows = true class, columns = predicted class, classes in :meth:`SheetView.classes`
  order (3 vs 7: ``3, 7``, i.e. label 1 then label 0; otherwise the sorted labels);
* dead ReLUs: the cells of the sheet whose formula is ``IF(x<0,0,x)`` or ``MAX(0,x)`` form the hidden
  block (one column per hidden unit); a unit is dead when it is 0 on every row.

The label of a data row is its last column (the layout of ``xlmnist_data``: features[, Ones], label).
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from xlmnist.errors import XlmnistError
from xlmnist.formula.patterns import is_relu_formula
from xlmnist.xlsx.reader import read_workbook
from xlmnist.xlsx.refs import area_name, split_ref

CHUNK = 4096
_AVG = re.compile(r"^\s*=?\s*AVERAGE\(\s*([^(),]+)\s*\)\s*$", re.I)


def _workbook(model, path=None):
    wb = getattr(model, "workbook", None)
    if wb is None:
        if path is None:
            raise XlmnistError(f"{model.objective_ref}: cannot read the sheet's names (no workbook path)")
        wb = read_workbook(path)
    return wb


def _rect_ref(sheet: str, cells) -> str | None:
    """``sheet!A1:B9`` when ``cells`` fill a rectangle exactly, else None."""
    rows = [r for r, _ in cells]
    cols = [c for _, c in cells]
    r1, r2, c1, c2 = min(rows), max(rows), min(cols), max(cols)
    if (r2 - r1 + 1) * (c2 - c1 + 1) != len(set(cells)):
        return None
    return area_name(sheet, r1, c1, r2, c2)


class SheetView:
    """The named cells of one model sheet that training reports on (see the module docstring)."""

    def __init__(self, model, dataset: str | None = None, path=None):
        self.model, self.dataset = model, dataset
        self.sheet = split_ref(model.objective_ref)[0]
        wb = _workbook(model, path)
        self._wb = wb
        self.accuracy_ref = self._name(wb, "XLMNIST_ACCURACY")
        self.pred_ref = self._name(wb, "XLMNIST_PREDICTIONS")
        self.correct_ref = None
        if self.accuracy_ref:
            sheet, row, col, _, _ = split_ref(self.accuracy_ref)
            text = wb.sheet(sheet).formula((row, col))
            m = _AVG.match(text or "")
            if m:
                inner = m.group(1).replace("$", "")
                prefix = self.accuracy_ref.rsplit("!", 1)[0]
                self.correct_ref = inner if "!" in inner else f"{prefix}!{inner}"
        self._relu = False

    def _name(self, wb, key: str) -> str | None:
        text = wb.names.get((self.sheet, key))
        if not text:
            return None
        text = text.lstrip("=").replace("$", "")
        return text if "!" in text else f"{self.sheet}!{text}"

    @property
    def relu_ref(self) -> str | None:
        """The rectangle of ReLU cells (``IF(x<0,0,x)`` / ``MAX(0,x)``) on the model sheet, if any."""
        if self._relu is False:
            sh = self._wb.sheet(self.sheet)
            cells, seen = [], {}
            for cell in sh.formula_cells():
                origin, text = sh.master_text(cell) or (cell, "")
                ok = seen.get(origin)
                if ok is None:
                    ok = seen[origin] = is_relu_formula(text)
                if ok:
                    cells.append(cell)
            self._relu = _rect_ref(self.sheet, cells) if cells else None
        return self._relu

    def classes(self, labels: torch.Tensor) -> list[float]:
        """Class labels in confusion-matrix order: 3 vs 7 -> [1, 0] (a 3, a 7); else sorted labels."""
        if self.dataset == "mnist_3v7":
            return [1.0, 0.0]
        return sorted({float(v) for v in labels.unique().tolist()})

    def class_names(self, classes) -> list[str]:
        if self.dataset == "mnist_3v7":
            return ["3", "7"]
        return [f"{c:g}" for c in classes]

    def _chunks(self, rows: torch.Tensor | None):
        if rows is None:
            yield None
            return
        for start in range(0, len(rows), CHUNK):
            yield rows[start : start + CHUNK]

    def measure(self, params, rows: torch.Tensor | None = None, *, relu: bool = False) -> dict:
        """loss, accuracy (or None), per-row predicted class and label (or None), dead-ReLU share."""
        m = self.model
        refs = [m.objective_ref]
        for ref in (self.correct_ref or self.accuracy_ref, self.pred_ref):
            if ref and ref not in refs:
                refs.append(ref)
        relu_ref = self.relu_ref if relu else None
        if relu_ref:
            refs.append(relu_ref)
        n_total = len(rows) if rows is not None else None
        loss_sum = acc_sum = 0.0
        preds, labels, correct_all, active = [], [], [], None
        n_seen = 0
        with torch.no_grad():
            for chunk in self._chunks(rows):
                try:
                    out = m.evaluate(refs, params, data=chunk)
                except XlmnistError:
                    raise
                n = len(chunk) if chunk is not None else 1
                n_seen += n
                loss_sum += float(out[m.objective_ref].reshape(-1)[0]) * n
                y = chunk if chunk is not None else m.data_rows()
                y = None if y is None else y[:, -1]
                corr = out.get(self.correct_ref) if self.correct_ref else None
                if corr is not None and y is not None and corr.shape[0] == len(y):
                    correct_all.append(corr.reshape(len(y), -1)[:, 0].double().cpu())
                elif self.accuracy_ref in out:
                    acc_sum += float(out[self.accuracy_ref].reshape(-1)[0]) * n
                if y is not None:
                    labels.append(y.double().cpu())
                    p = out.get(self.pred_ref) if self.pred_ref else None
                    preds.append(None if p is None or p.shape[0] != len(y) else p.double().cpu())
                if relu_ref:
                    a = (out[relu_ref] > 0).any(dim=0).cpu()
                    active = a if active is None else active | a
        loss = loss_sum / n_seen
        res = {"loss": loss, "accuracy": None, "rows": n_total, "pred": None, "label": None}
        if correct_all:
            corr = torch.cat(correct_all)
            res["accuracy"] = float(corr.mean())
        elif self.accuracy_ref:
            res["accuracy"] = acc_sum / n_seen
        if labels:
            y = torch.cat(labels)
            res["label"] = y
            res["pred"] = self._classes_of(preds, y, torch.cat(correct_all) if correct_all else None)
        if active is not None:
            res["relu_units"] = int(active.numel())
            res["dead_relu"] = int((~active).sum())
        return res

    def _classes_of(self, preds, y, correct) -> torch.Tensor | None:
        """Per-row predicted class labels (see the module docstring), or None when the sheet cannot say."""
        if preds and all(p is not None for p in preds):
            p = torch.cat(preds)
            if p.shape[1] > 1:  # one column per class (probabilities): the arg-max
                labels = sorted({float(v) for v in y.unique().tolist()})
                if p.shape[1] == len(labels):
                    return torch.tensor(labels, dtype=torch.float64)[p.argmax(1)]
                return None
            col = p[:, 0]
            if torch.isfinite(col).all() and torch.equal(col, col.round()):
                return col
        if correct is not None:
            classes = self.classes(y)
            if len(classes) == 2:
                other = classes[0] + classes[1] - y
                return torch.where(correct > 0.5, y, other)
        return None

    def confusion(self, res: dict) -> np.ndarray | None:
        """K x K counts (rows = true, columns = predicted) in :meth:`classes` order."""
        if res.get("pred") is None or res.get("label") is None:
            return None
        classes = self.classes(res["label"])
        index = {c: i for i, c in enumerate(classes)}
        k = len(classes)
        out = np.zeros((k, k))
        for t, p in zip(res["label"].tolist(), res["pred"].tolist()):
            i, j = index.get(float(t)), index.get(float(p))
            if i is not None and j is not None:
                out[i, j] += 1
        return out


def collapsed(view: SheetView, res: dict) -> str | None:
    """A one-line description when every row is predicted as one class or the loss is not finite."""
    if not math.isfinite(res["loss"]):
        return f"the loss became {res['loss']}"
    pred = res.get("pred")
    if pred is None or len(pred) < 2 or len(res["label"].unique()) < 2:
        return None
    values = pred.unique()
    if len(values) == 1:
        v = float(values[0])
        name = ("3" if v == 1.0 else "7") if view.dataset == "mnist_3v7" else f"{v:g}"
        acc = res.get("accuracy")
        acc_text = f", accuracy {acc:.1%}" if acc is not None else ""
        return f"every one of the {len(pred)} rows is predicted as {name}{acc_text}"
    return None


def diagnose(view, ps, valid, epoch: int, what: str, name: str, lr: float) -> str:
    """The one-line diagnosis of a collapsed run: when, what, and the likely causes."""
    if "loss became" in what:
        return f"epoch {epoch}: the validation {what} ({name}, lr {lr:g}); likely cause: the learning rate is too high (try --lr {lr / 10:g}); parameters not written (--force writes them)"
    causes = [f"the learning rate {lr:g} is too high for {name} (try --lr {lr / 10:g})"]
    if view.relu_ref:
        res = view.measure(ps, valid, relu=True)
        dead, units = res.get("dead_relu", 0), res.get("relu_units", 0)
        if units:
            causes.append(
                f"dead ReLUs: {dead} of {units} hidden units ({dead / units:.0%}) in {view.relu_ref} are never "
                f"active on the {len(valid)} validation rows"
            )
    return (
        f"epoch {epoch}: validation accuracy collapsed to one class ({what}); likely cause: "
        + "; ".join(causes)
        + "; parameters not written (--force writes them)"
    )
