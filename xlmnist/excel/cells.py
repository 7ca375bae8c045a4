"""The live workbook's cells through xlwings: reading a trainable block (one range call), checking that the
open workbook still matches its saved file (formulas, sheet protection), and writing result blocks back
(one range call per block, chunked, restored on failure)."""

from __future__ import annotations

import math
import re
import zipfile
from pathlib import Path

import numpy as np

from xlmnist.errors import TrainingError, WorkbookError, XlmnistError
from xlmnist.xlsx.package import sheet_members
from xlmnist.xlsx.reader import read_workbook
from xlmnist.xlsx.refs import col_letters, parse_area
from xlmnist.xlsx.refs import split_sheet as split_ref

CHUNK_CELLS = 100_000  # cells per range call when writing a block


# ---------------------------------------------------------------- pure helpers


def to_numbers(ref: str, values) -> np.ndarray:
    """A 2-D float array from an xlwings value block; empty cells are 0 (as Excel reads them)."""
    arr = np.array(values, dtype=object, ndmin=2)
    out = np.zeros(arr.shape, dtype=np.float64)
    for (i, j), v in np.ndenumerate(arr):
        if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
            continue
        if isinstance(v, bool) or not isinstance(v, int | float | np.number):
            sheet, addr = split_ref(ref)
            r1, c1, _, _ = parse_area(addr)
            raise WorkbookError(
                f"{sheet}!{col_letters(c1 + j)}{r1 + i}: trainable cell holds {v!r}, not a number"
            )
        out[i, j] = float(v)
    return out


def write_actions_to_values(actions: list[dict], sheet_names: list[str]) -> dict:
    """Turn the remote engine's ``setValues`` actions into ``writeback.write_values`` input."""
    values = {}
    for a in actions:
        if a.get("func") != "setValues":
            continue
        r, c = a["start_row"] + 1, a["start_column"] + 1
        block = np.array(a["values"], dtype=np.float64, ndmin=2)
        end = f"{col_letters(c + block.shape[1] - 1)}{r + block.shape[0] - 1}"
        values[f"{sheet_names[a['sheet_position']]}!{col_letters(c)}{r}:{end}"] = block
    return values


# ---------------------------------------------------------------- reading the live workbook


def engine(book) -> str:
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
    if engine(book) not in ("excel", "macos", "windows"):
        return  # the remote engine sends no formulas; the file is the source
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
        protected = file_sheet_protected(path, sheet)
    if protected:
        raise WorkbookError(
            f"{sheet}!A1: the sheet is protected; unprotect it (Review > Unprotect Sheet) and run again"
        )


def file_sheet_protected(path: Path, sheet: str) -> bool:
    with zipfile.ZipFile(path) as zf:
        member = sheet_members(zf, str(path)).get(sheet)
        if member is None:
            return False
        m = re.search(rb"<(?:\w+:)?sheetProtection\b[^>]*>", zf.read(member))
    return bool(m and re.search(rb'\bsheet="(1|true)"', m.group(0)))


# ---------------------------------------------------------------- writing back


def write_blocks(book, values: dict[str, np.ndarray], previous: dict[str, np.ndarray] | None = None) -> None:
    """One range call per block (chunked by rows past CHUNK_CELLS); on failure restore what was written."""
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
