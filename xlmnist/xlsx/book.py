"""Shared helpers for the lesson workbooks: write-only workbooks, names, settings, deterministic saving.

Every workbook is written with openpyxl's write-only mode (streaming rows) and saved through a zip
archive whose entries carry a fixed timestamp, with fixed document properties, so the same seed gives
byte-identical files.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import openpyxl.cell._writer as _cell_writer
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.formatting.rule import ColorScaleRule
from openpyxl.styles import Font
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.writer.excel import ExcelWriter

from xlmnist.errors import XlmnistError
from xlmnist.xlsx.atomic import write_file
from xlmnist.xlsx.refs import col_letters as col

FIXED_TIME = datetime.datetime(2024, 1, 1, 0, 0, 0)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

# Excel Solver's options exactly as the course's titanic.xlsx stores them (besides opt/adj/typ).
SOLVER_OPTIONS = {
    "solver_cvg": "0.0001",
    "solver_drv": "1",
    "solver_eng": "1",
    "solver_est": "1",
    "solver_itr": "2147483647",
    "solver_mip": "2147483647",
    "solver_mni": "30",
    "solver_mrt": "0.075",
    "solver_msl": "2",
    "solver_neg": "2",
    "solver_nod": "2147483647",
    "solver_num": "0",
    "solver_nwt": "1",
    "solver_pre": "0.000001",
    "solver_rbv": "1",
    "solver_rlx": "2",
    "solver_rsd": "0",
    "solver_scl": "1",
    "solver_sho": "2",
    "solver_ssz": "100",
    "solver_tim": "2147483647",
    "solver_tol": "0.01",
    "solver_val": "0",
    "solver_ver": "3",
}

SETTING_MEANINGS = {
    "optimizer": "auto, lbfgs, adam or sgd",
    "lr": "learning rate",
    "epochs": "passes over the training data",
    "batch_size": "examples per step (minibatch optimizers)",
    "device": "auto, cpu or cuda",
    "seed": "random seed for shuffling",
    "dataset": "titanic, mnist_3v7, mnist, or empty for the visible rows only",
    "lr_schedule": "constant, or linear: the learning rate decays linearly to 0 over the run",
}

BOLD = Font(bold=True)
DEFAULT_WIDTH = 8.43  # a column's width without a <col> entry (Excel and LibreOffice: characters of "0")
WIDTH_PAD = 2  # characters beside a header's text (bold text is wider)
MAX_WIDTH = 60  # a longer header is cut at this width (or overflows into an empty neighbour)


def absref(sheet: str, c1: int, r1: int, c2: int | None = None, r2: int | None = None) -> str:
    """``sheet!$A$1`` or ``sheet!$A$1:$B$2`` (1-based columns and rows)."""
    ref = f"{sheet}!${col(c1)}${r1}"
    if c2 is not None:
        ref += f":${col(c2)}${r2}"
    return ref


class Book:
    """A write-only workbook plus the bookkeeping for names and the settings sheet."""

    def __init__(self):
        self.wb = Workbook(write_only=True)
        props = self.wb.properties
        props.creator = "xlmnist"
        props.lastModifiedBy = "xlmnist"
        props.created = FIXED_TIME
        props.modified = FIXED_TIME
        self.settings: list[tuple[str, str, object]] = []

    def sheet(self, title: str):
        return self.wb.create_sheet(title)

    def cell(self, ws, value, bold: bool = False):
        c = WriteOnlyCell(ws, value=value)
        if bold:
            c.font = BOLD
        return c

    def model_names(
        self,
        ws,
        *,
        objective: str,
        params: list[str],
        predictions: str,
        labels: str,
        data: str,
        accuracy: str | None = None,
    ) -> None:
        """Excel Solver's hidden names (as the course stores them) plus xlmnist's own, sheet-scoped."""
        names = {"solver_adj": ",".join(params), "solver_opt": objective, "solver_typ": "2"}
        names.update(SOLVER_OPTIONS)
        for key in sorted(names):
            ws.defined_names[key] = DefinedName(key, attr_text=names[key], hidden=True)
        own = {
            "xlmnist_objective": objective,
            "xlmnist_params": ",".join(params),
            "xlmnist_predictions": predictions,
            "xlmnist_labels": labels,
            "xlmnist_data": data,
        }
        if accuracy:
            own["xlmnist_accuracy"] = accuracy
        for key in sorted(own):
            ws.defined_names[key] = DefinedName(key, attr_text=own[key])

    def learner_names(self, ws, **refs: str | list[str] | None) -> None:
        """``xlmnist_history`` / ``xlmnist_confusion`` / ``xlmnist_gradients`` (lists: comma-joined)."""
        for key in sorted(refs):
            ref = refs[key]
            if ref:
                text = ",".join(ref) if isinstance(ref, list) else ref
                ws.defined_names[f"xlmnist_{key}"] = DefinedName(f"xlmnist_{key}", attr_text=text)

    def add_settings(self, sheet: str, **values) -> None:
        for key, value in values.items():
            self.settings.append((sheet, key, value))

    def write_settings(self) -> None:
        ws = self.sheet("settings")
        rows = [[self.cell(ws, h, bold=True) for h in ("sheet", "setting", "value", "meaning")]]
        rows += [[sheet, key, value, SETTING_MEANINGS.get(key, "")] for sheet, key, value in self.settings]
        fit_columns(ws, rows)
        for row in rows:
            ws.append(row)

    def save(self, path: Path) -> None:
        """Write through :func:`xlmnist.xlsx.atomic.write_file` (locked, atomic)."""

        def produce(fh) -> None:
            self.wb.properties.created = FIXED_TIME
            self.wb.properties.modified = FIXED_TIME
            with _FixedTimeZip(fh, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive, exact_floats():
                ExcelWriter(self.wb, archive).save()

        write_file(Path(path), produce)


@contextlib.contextmanager
def exact_floats():
    """openpyxl writes numbers with ``%.16g`` (not round-trip exact); write floats as ``repr`` (shortest
    round-trip form) so every cell holds exactly the float we computed, e.g. pixel/255. Write-only sheets
    serialise rows as they are appended, so builders run entirely inside this (see ``exact``)."""
    original = _cell_writer.safe_string

    def exact(value):
        return repr(value) if type(value) is float and math.isfinite(value) else original(value)

    _cell_writer.safe_string = exact
    try:
        yield
    finally:
        _cell_writer.safe_string = original


def exact(builder):
    """Decorator: run a workbook builder with :func:`exact_floats` active."""

    @functools.wraps(builder)
    def wrapper(*args, **kwargs):
        with exact_floats():
            return builder(*args, **kwargs)

    return wrapper


class _FixedTimeZip(zipfile.ZipFile):
    """A ZipFile whose entries all carry one fixed timestamp (reproducible files)."""

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o600 << 16
        return info

    def writestr(self, zinfo_or_arcname, data, *args, **kwargs):
        if not isinstance(zinfo_or_arcname, zipfile.ZipInfo):
            zinfo_or_arcname = self._info(zinfo_or_arcname)
        return super().writestr(zinfo_or_arcname, data, *args, **kwargs)

    def write(self, filename, arcname=None, *args, **kwargs):
        info = self._info(arcname or os.path.basename(filename))
        with open(filename, "rb") as src, self.open(info, "w", force_zip64=True) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def text_length(value) -> int:
    """Characters of a cell's shown text when it is a constant text (a value or a write-only cell); 0 for
    numbers, formulas and empty cells (their width is the spreadsheet's business)."""
    v = getattr(value, "value", value)
    return len(v) if isinstance(v, str) and not v.startswith("=") else 0


def fit_columns(ws, rows, first: int = 1, cap: float = MAX_WIDTH) -> None:
    """Columns of the write-only sheet ``ws`` wide enough for the text in ``rows`` (header and label rows:
    lists of values or cells, the first in column ``first``): width = text length + WIDTH_PAD, at most
    ``cap``; a column only ever widens (never below DEFAULT_WIDTH, never narrower than it was set). The
    one place the lesson workbooks size their columns to their headers; call it before the sheet's first
    row (a write-only sheet writes its column widths before its rows)."""
    if getattr(ws, "_writer", None) is not None:  # openpyxl: set once the first row is appended
        raise RuntimeError(f"{ws.title}: fit_columns after the first row has no effect")
    for row in rows:
        for i, value in enumerate(row):
            n = text_length(value)
            if not n:
                continue
            want, letter = min(n + WIDTH_PAD, cap), col(first + i)
            have = ws.column_dimensions[letter].width if letter in ws.column_dimensions else DEFAULT_WIDTH
            if want > have:
                ws.column_dimensions[letter].width = want


def one_page(ws, orientation: str = "landscape") -> None:
    """Print (and render) the sheet on one page, scaled to fit."""
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.page_setup.orientation, ws.page_setup.fitToWidth, ws.page_setup.fitToHeight = orientation, 1, 1


def color_scale(ws, ref: str, kind: str = "diverging") -> None:
    """A colour-scale conditional format: blue-white-red around 0, white-black for pixels, white-green
    for counts."""
    if kind == "counts":
        rule = ColorScaleRule(start_type="min", start_color="FFFFFFFF", end_type="max", end_color="FF63BE7B")
    elif kind == "diverging":
        rule = ColorScaleRule(
            start_type="min",
            start_color="FF5A8AC6",
            mid_type="num",
            mid_value=0,
            mid_color="FFFFFFFF",
            end_type="max",
            end_color="FFF8696B",
        )
    else:
        rule = ColorScaleRule(
            start_type="num",
            start_value=0,
            start_color="FFFFFFFF",
            end_type="num",
            end_value=1,
            end_color="FF000000",
        )
    ws.conditional_formatting.add(ref, rule)


def check_out_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` if needed and make sure a file can be written there (one-line error if not)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise XlmnistError(f"{out_dir}: cannot create the output folder ({exc.strerror or exc})") from None
    if not out_dir.is_dir():
        raise XlmnistError(f"{out_dir}: not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".xlmnist-probe-", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise XlmnistError(f"{out_dir}: the output folder is not writable ({exc.strerror or exc})") from None
    return out_dir
