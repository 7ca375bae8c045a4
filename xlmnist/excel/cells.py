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
EXCEL_ERRORS = {"#DIV/0!", "#N/A", "#NAME?", "#NULL!", "#NUM!", "#REF!", "#VALUE!", "#SPILL!", "#CALC!",
                "#GETTING_DATA", "#FIELD!", "#BLOCKED!", "#CONNECT!", "#BUSY!", "#UNKNOWN!", "#PYTHON!"}  # fmt: skip
SAVE_FIRST = "Save the workbook (Ctrl+S), then press Train"


# ---------------------------------------------------------------- pure helpers


def to_numbers(ref: str, values) -> np.ndarray:
    """A 2-D float array from an xlwings value block; empty cells are 0 (as Excel reads them)."""
    arr = np.array(values, dtype=object, ndmin=2)
    if {float, int}.issuperset(map(type, arr.ravel())):  # plain numbers (the usual block): in bulk
        out = arr.astype(np.float64)
        out[np.isnan(out)] = 0.0  # NaN reads as empty, as below
        return out
    out = np.zeros(arr.shape, dtype=np.float64)
    for (i, j), v in np.ndenumerate(arr):
        if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
            continue
        if isinstance(v, bool) or not isinstance(v, int | float | np.number):
            sheet, addr = split_ref(ref)
            r1, c1, _, _ = parse_area(addr)
            cell = f"{sheet}!{col_letters(c1 + j)}{r1 + i}"
            if isinstance(v, str) and v.strip().upper() in EXCEL_ERRORS:
                raise WorkbookError(
                    f"{cell}: the trainable cell shows the error {v.strip().upper()}; type a number there "
                    "(or press Reset), then press Train"
                )
            raise WorkbookError(f"{cell}: trainable cell holds {v!r}, not a number; type a number there")
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
    return to_numbers(ref, read_cells(rng))


def read_cells(rng) -> list:
    """The range's values as rows, error cells as their text (``#DIV/0!``) rather than empty."""
    try:
        return rng.options(ndim=2, err_to_str=True).value
    except (TypeError, NotImplementedError):  # an engine without err_to_str
        return rng.options(ndim=2).value


def _formula_key(text: str) -> str:
    """Formula text as Excel's ``.formula`` and the file spell it alike (no "=", prefixes, spaces, case)."""
    text = text.strip().lstrip("{").rstrip("}").lstrip("=")
    text = re.sub(r"_xl(?:fn|ws)\.", "", text)
    return re.sub(r"\s+", "", text).upper()


def check_live_formulas(book, sheet: str, path: Path, wb=None, memo: dict | None = None) -> None:
    """Desktop Excel: stop when the model sheet's formulas (which cells, and their text) differ from the
    saved file's. The saved side is kept in ``memo`` for the file's next click (:mod:`xlmnist.excel.warm`)."""
    if engine(book) not in ("excel", "macos", "windows"):
        return  # the remote engine sends no formulas; its values are checked by check_live_inputs
    used = book.sheets[sheet].used_range
    memo = {} if memo is None else memo
    key = f"formulas:{sheet}"
    if key not in memo:
        saved_sheet = (wb or read_workbook(path)).sheet(sheet)
        memo[key] = {c: _formula_key(saved_sheet.formula(c) or "") for c in saved_sheet.formula_cells()}
    diff = formula_differences(used.formula, used.row, used.column, memo[key])
    if diff:
        r, c = diff[0]
        raise WorkbookError(
            f"{sheet}!{col_letters(c)}{r}: the formula differs from the saved file {path.name}; {SAVE_FIRST}"
        )


def formula_differences(formulas, top: int, left: int, saved: dict) -> list[tuple[int, int]]:
    """The cells (row, col), in order, where the live ``.formula`` block at (top, left) and the saved
    formulas (``{(row, col): _formula_key(text)}``) disagree: a formula added, removed or changed."""
    live = {}
    for i, row in enumerate(np.array(formulas, dtype=object, ndmin=2).tolist()):
        for j, f in enumerate(row):
            if type(f) is str and f[:1] == "=":
                live[(top + i, left + j)] = _formula_key(f)
    return sorted(cell for cell in live.keys() | saved.keys() if live.get(cell) != saved.get(cell))


def _same(live, saved) -> bool:
    if live in (None, "") and saved in (None, ""):
        return True
    if isinstance(live, int | float | np.number) and not isinstance(live, bool):
        if isinstance(saved, bool) or not isinstance(saved, int | float | np.number):
            return False
        return math.isclose(float(live), float(saved), rel_tol=1e-12, abs_tol=1e-300) or (
            math.isnan(float(live)) and math.isnan(float(saved))
        )
    return str(live).strip() == str(saved).strip()


MODEL_NAMES = ("XLMNIST_", "SOLVER_OPT", "SOLVER_ADJ")  # the names that define a model sheet


def _name_key(text: str) -> str:
    return re.sub(r"[\s$']", "", str(text)).lstrip("=").upper()


def check_live_names(book, sheet: str, path: Path, wb) -> None:
    """Stop when the model sheet's names (objective, trainable cells, data, ... as Solver or xlmnist_*
    define them) differ between the open workbook and the saved file: every such name the engine reports
    must be in the file with the same reference (desktop Excel reports all, hidden Solver names too)."""
    try:
        names = list(book.names)
    except Exception:  # noqa: BLE001 - an engine without names
        return
    live = {}
    for n in names:
        try:
            full, ref = n.name, n.refers_to
        except Exception:  # noqa: BLE001 - a broken name: Excel shows it as #REF!, the file check decides
            continue
        scope, _, bare = str(full).rpartition("!")
        if scope.strip("'").replace("''", "'") == sheet and bare.upper().startswith(MODEL_NAMES):
            live[bare.upper()] = _name_key(ref)
    if not live:
        return
    saved = {k: v for (s, k), v in wb.names.items() if s == sheet and k.startswith(MODEL_NAMES)}
    for key in sorted(live):  # names the engine did not send (hidden ones on some clients) are not compared
        if live[key] != _name_key(saved.get(key, "")):
            where = str(saved.get(key) or f"{sheet}!A1").replace("$", "")
            raise WorkbookError(
                f"{where.split(',')[0]}: the name {key.lower()} in the open workbook differs from the saved file "
                f"{path.name}; {SAVE_FIRST}"
            )


def not_sent(book, sheet: str) -> bool:
    """The remote engine's payload left this sheet's values out (xlwings' ``include``/``exclude``)."""
    if engine(book) != "remote":
        return False
    try:
        values = book.sheets[sheet].api["values"]
    except Exception:  # noqa: BLE001 - no such sheet: not "left out", the caller says what is wrong
        return False
    return not values or values == [[]]


def check_live_inputs(book, model, path: Path, wb=None, memo: dict | None = None) -> None:
    """Stop when the open workbook's data rows (features and labels) or its ``settings`` sheet differ from
    the saved file: the formulas, data and settings are read from the file, so an unsaved edit would be
    silently ignored. One range call per block; ``memo`` keeps the saved side of each block between clicks
    (:mod:`xlmnist.excel.warm`), so a warm click only reads the live block and compares it in bulk."""
    wb = wb or read_workbook(path)
    blocks = []
    if getattr(model, "data_ref", None):
        blocks.append((model.data_ref, "the data"))
    settings = next((s for s in wb.order if s.lower() == "settings"), None)
    if settings is not None and wb.sheets[settings].values:
        st = wb.sheets[settings]
        blocks.append(
            (f"{settings}!A1:{col_letters(max(c for _, c in st.values))}{st.max_row or 1}", "a setting")
        )
    memo = {} if memo is None else memo
    for ref, what in blocks:
        sheet, addr = split_ref(ref)
        r1, c1, _, _ = parse_area(addr)
        if not_sent(book, sheet):
            continue  # Excel on the web sent only the model sheet: the server's copy is the source
        try:
            rng = book.sheets[sheet].range(addr)
            if ref not in memo:
                memo[ref] = saved_block(wb.sheets[sheet].values, addr)
            if same_block(raw_cells(rng), memo[ref]):
                continue
            live = np.array(read_cells(rng), dtype=object, ndmin=2)
        except Exception as exc:  # noqa: BLE001 - the sheet was deleted or renamed in the open workbook
            raise WorkbookError(f"{sheet}!A1: not in the open workbook ({exc}); {SAVE_FIRST}") from None
        saved = wb.sheets[sheet].values
        for (i, j), v in np.ndenumerate(live):
            if not _same(v, saved.get((r1 + i, c1 + j))):
                raise WorkbookError(
                    f"{sheet}!{col_letters(c1 + j)}{r1 + i}: {what} in the open workbook differs from the saved "
                    f"file {path.name}; {SAVE_FIRST}"
                )


def saved_block(values, addr: str) -> np.ndarray:
    """The saved cells of ``addr`` as an object array (None where empty), built in bulk from the reader's
    dense number grid (:class:`xlmnist.xlsx.sheetxml.CellValues`) where it has one."""
    r1, c1, r2, c2 = parse_area(addr)
    out = np.full((r2 - r1 + 1, c2 - c1 + 1), None, dtype=object)
    num, has, other = (getattr(values, k, None) for k in ("num", "has", "other"))
    if num is None or has is None or other is None:
        for (r, c), v in values.items():
            if r1 <= r <= r2 and c1 <= c <= c2:
                out[r - r1, c - c1] = ("bool", v) if isinstance(v, bool) else v
        return out
    part = has[r1 : r2 + 1, c1 : c2 + 1]
    sub = out[: part.shape[0], : part.shape[1]]
    sub[part] = num[r1 : r2 + 1, c1 : c2 + 1][part].tolist()
    for (r, c), v in other.items():
        if r1 <= r <= r2 and c1 <= c <= c2:
            out[r - r1, c - c1] = ("bool", v) if isinstance(v, bool) else v  # never equal: see same_block
    return out


def raw_cells(rng):
    """The range's values as the engine holds them, without xlwings' per-cell conversion (None when the
    engine cannot say): the fast read of the live checks."""
    try:
        return rng.raw_value
    except Exception:  # noqa: BLE001 - an engine without raw values: the converted read decides
        return None


NUMBERS = {float, int, str, type(None)}  # the live types same_block compares in bulk


def same_block(raw, saved: np.ndarray) -> bool:
    """True when every live cell equals the saved one exactly (empty = empty); False means "compare cell
    by cell" (a difference, or a value such as a date or an error that only the converted read shows)."""
    if raw is None:
        return False
    try:
        live = np.array(raw, dtype=object, ndmin=2)
    except ValueError:  # ragged rows
        return False
    if live.shape != saved.shape or not NUMBERS.issuperset(map(type, live.ravel())):
        return False  # booleans (True == 1.0 in Python), dates, ...: cell by cell
    live[np.equal(live, "")] = None
    return bool(np.asarray(np.equal(live, saved), dtype=bool).all())


def check_protection(book, sheet: str, path: Path, memo: dict | None = None) -> None:
    """A protected model sheet cannot take the trained values: stop before training. Engines without the
    live flag fall back to the saved file's (kept in ``memo`` for the file's next click)."""
    protected = False
    try:  # desktop Excel (Windows COM); other engines have no such attribute
        protected = bool(book.sheets[sheet].api.ProtectContents)
    except Exception:  # noqa: BLE001
        memo = {} if memo is None else memo
        key = f"protected:{sheet}"
        if key not in memo:
            memo[key] = file_sheet_protected(path, sheet)
        protected = memo[key]
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
            arr = np.asarray(arr)
            arr = arr.reshape(-1, arr.shape[-1] if arr.ndim else 1)
            if arr.dtype != object and not np.isfinite(arr).all():
                raise TrainingError(f"{ref}: refusing to write NaN/inf values")
            rows = max(1, CHUNK_CELLS // arr.shape[1])
            for start in range(0, arr.shape[0], rows):
                part = arr[start : start + rows]
                top = f"{col_letters(c1)}{r1 + start}"
                bottom = f"{col_letters(c1 + part.shape[1] - 1)}{r1 + start + part.shape[0] - 1}"
                book.sheets[sheet].range(f"{top}:{bottom}").value = (
                    part.tolist() if part.dtype == object else part
                )
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
