"""Where a run's inputs come from, in one place: the workbook file checked before reading, each training
setting from a flag, else the workbook's ``settings`` sheet, else the caller's default (``setting``), the
dataset rows laid out like the sheet's data rows, and the sheet's named metric cells."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from xlmnist.data import dataset_arrays
from xlmnist.errors import WorkbookError, XlmnistError

METRIC_NAMES = {"accuracy": "xlmnist_accuracy"}


def check_book(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise WorkbookError(f"{path}: no such workbook")
    if not zipfile.is_zipfile(p):
        with open(p, "rb") as fh:
            ole2 = fh.read(8) == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
        if ole2:  # what Excel writes for a password-protected workbook (or a legacy .xls)
            raise WorkbookError(
                f"{path}: encrypted (password-protected) or legacy .xls file; save it as an unencrypted .xlsx"
            )
        raise WorkbookError(f"{path}: not an xlsx file (not a zip archive)")
    return p


def to_float(x) -> float:
    return float(x.detach().cpu().reshape(-1)[0]) if hasattr(x, "detach") else float(x)


def metrics(model, params) -> dict:
    """Named metric cells of the sheet (``xlmnist_accuracy`` ...) evaluated at ``params``."""
    out = {}
    for key, name in METRIC_NAMES.items():
        try:
            value = model.evaluate([name], params)[name]
        except XlmnistError:
            continue  # the sheet names no such cell
        out[key] = to_float(value)
    return out


def dataset_rows(model, name: str, split: str = "train") -> torch.Tensor:
    """The ``split`` of dataset ``name`` laid out like the sheet's data rows (``xlmnist_data``):
    X[, Ones], label (float64). Kept on the model, so a model kept between clicks (the Excel add-in's
    warm process, :mod:`xlmnist.excel.warm`) loads its dataset once; callers do not modify the rows."""
    memo = model.__dict__.setdefault("_dataset_rows", {})
    key = (name, split, os.environ.get("XLMNIST_DATA"))
    if key not in memo:
        memo[key] = _dataset_rows(model, name, split)
    return memo[key]


def _dataset_rows(model, name: str, split: str) -> torch.Tensor:
    visible = model.data_rows() if hasattr(model, "data_rows") else None
    if visible is None:
        raise WorkbookError(
            f"{model.objective_ref}: settings name dataset {name!r} but the sheet has no xlmnist_data rows"
        )
    x, y = dataset_arrays(name, split)
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


def setting(model, key, given, cast):
    if given is not None:
        return given
    value = (model.settings or {}).get(key)
    if value in (None, ""):
        return None
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise WorkbookError(f"settings: {key} = {value!r} is not valid") from None
