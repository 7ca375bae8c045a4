"""Surgical, atomic write-back of cell values into an xlsx file.

``write_values(path, {"nnet!R4:AA5": array, "linear!A1": 0.5}, out=None)`` writes numbers into the
given cells and changes nothing else:

* every zip member other than the edited worksheets and ``xl/workbook.xml`` is copied with the same
  name, date, attributes, compression method and identical bytes: its *compressed* bytes are copied as
  they are (no inflate/deflate; :func:`_copy_raw`), so the write costs what the edited sheets cost;
* in an edited worksheet only the written cells change: their ``<v>`` text (``repr(float)``, the
  shortest string that round-trips), a dropped ``t`` attribute where the cell held a string/bool, and
  newly inserted ``<c>`` (and ``<row>``) elements for cells that did not exist yet (then the
  ``<dimension>`` is widened if needed). The XML is edited as bytes: no DOM of the whole sheet;
* ``xl/workbook.xml`` gets ``fullCalcOnLoad="1"`` on its ``<calcPr>`` (inserted if absent). This is how
  the written file shows the new results: the cached ``<v>`` of formula cells is left as it was (stale)
  and Excel/LibreOffice recalculate every formula when they open the file.

A target cell that holds a formula (or lies inside an array formula's range) is refused with an error
naming it, and so is a value that is NaN or infinite. ``None`` in a value array *clears* that cell (its
``<v>`` and type go, the ``<c>`` and its style stay; used for history rows beyond a shorter run).

``write_values(path, {}, cached={"linear!B10:F209": array})`` (or :func:`write_cached_values`) writes
the *cached results* of formula cells: the ``<f>`` element stays as it is and the ``<v>`` is replaced
or inserted, so a program that shows cached values without recalculating (LibreOffice's default for
xlsx) shows the new results. Every target must hold a formula or lie inside an array formula's range;
``None`` in a cached array leaves that cell as it is. The file is replaced through
:func:`xlmnist.xlsx.atomic.replace_file` (locked, re-read inside the lock, atomic): a failure at any
point leaves the original untouched and no temporary file behind.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from xlmnist import timing
from xlmnist.errors import WorkbookError
from xlmnist.xlsx.atomic import replace_file
from xlmnist.xlsx.edits import SheetEdit, set_full_calc_on_load
from xlmnist.xlsx.limits import LimitedZip
from xlmnist.xlsx.package import EXTENSIONS, kind, sheet_members
from xlmnist.xlsx.refs import col_letters, split_ref
from xlmnist.xlsx.splice import splice_blocks

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature ... file name length, extra field length
_KEEP_FLAGS = 0x0806  # deflate level bits, UTF-8 names; not encryption (1) nor a data descriptor (8)


def _cells_of(ref: str, value, op: str = "v") -> tuple[str, dict[tuple[int, int], tuple]]:
    """``{(row, col): (op, x)}``: op ``v`` value, ``f`` cached formula result, ``x`` clear (value None)."""
    sheet, r1, c1, r2, c2 = split_ref(ref)
    shape = (r2 - r1 + 1, c2 - c1 + 1)
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
        if arr.dtype != object:
            arr = arr.astype(np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or (arr.dtype == object and not all(v is None or _is_number(v) for v in arr.flat)):
        raise WorkbookError(f"{ref}: value is not a number or an array of numbers")  # None: clear/leave
    if arr.size != shape[0] * shape[1] or (arr.ndim == 2 and arr.shape != shape) or arr.ndim > 2:
        raise WorkbookError(f"{ref}: {arr.shape} values do not fit a range of {shape[0]}x{shape[1]} cells")
    arr = arr.reshape(shape)
    cells = {}
    for i in range(shape[0]):
        for j, v in enumerate(arr[i].tolist()):
            if v is None:
                if op == "v":
                    cells[(r1 + i, c1 + j)] = ("x", None)
                continue
            x = float(v)
            if not math.isfinite(x):
                raise WorkbookError(
                    f"{sheet}!{col_letters(c1 + j)}{r1 + i}: value {x} is not finite; not written"
                )
            cells[(r1 + i, c1 + j)] = (op, x)
    return sheet, cells


def _block_of(ref: str, value):
    """``(sheet, r1, c1, array)`` when ``value`` is an array of finite numbers (no None, no bool) that
    fits ``ref``: the bulk path (:mod:`xlmnist.xlsx.splice`); else None, and :func:`_cells_of` takes it
    (and raises its errors)."""
    sheet, r1, c1, r2, c2 = split_ref(ref)
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    raw = np.asarray(value)
    if raw.dtype == object and all(_is_number(v) for v in raw.flat):
        raw = raw.astype(np.float64)
    shape = (r2 - r1 + 1, c2 - c1 + 1)
    if raw.dtype.kind not in "fiu" or raw.ndim > 2 or raw.size != shape[0] * shape[1]:
        return None
    arr = raw.astype(np.float64)
    if (arr.ndim == 2 and arr.shape != shape) or not np.isfinite(arr).all():
        return None
    return sheet, r1, c1, arr.reshape(shape)


def _edit_sheet(data: bytes, sheet: str, blocks: list, cells: dict) -> bytes:
    """The blocks spliced in bulk, then the rest cell by cell (clears, cells that are missing or hold text,
    a formula where a value goes ...: :class:`SheetEdit` adds them or refuses them with its errors)."""
    if blocks:
        data, leftover = splice_blocks(data, sheet, blocks)
        values = [(r1, c1, r1 + a.shape[0] - 1, c1 + a.shape[1] - 1) for op, r1, c1, a in blocks if op == "v"]
        rest = {  # a cached result under a value written in bulk: the value wins
            k: v for k, v in cells.items()
            if v[0] != "f" or not any(r1 <= k[0] <= r2 and c1 <= k[1] <= c2 for r1, c1, r2, c2 in values)
        }  # fmt: skip
        cells = {k: v for k, v in leftover.items() if v[0] == "f"}  # values win over cached results
        cells.update(rest)
        cells.update((k, v) for k, v in leftover.items() if v[0] != "f")
    return SheetEdit(data, sheet).write(cells) if cells else data


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


# ----------------------------------------------------------------------------------------- write
def _copy_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    new = zipfile.ZipInfo(info.filename, info.date_time)
    new.compress_type = info.compress_type
    new.comment = info.comment
    new.create_system = info.create_system
    new.external_attr = info.external_attr
    new.internal_attr = info.internal_attr
    return new


def _raw_member(src, info: zipfile.ZipInfo) -> bytes:
    """The compressed bytes of ``info`` read from the open source file ``src`` (its local header skipped)."""
    src.seek(info.header_offset)
    header = src.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile("bad local file header")
    name_len, extra_len = _LOCAL_HEADER.unpack(header)[-2:]
    src.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
    data = src.read(info.compress_size)
    if len(data) != info.compress_size:
        raise zipfile.BadZipFile("truncated member")
    return data


def _copy_raw(zout: zipfile.ZipFile, info: zipfile.ZipInfo, data: bytes) -> None:
    """Append a member to ``zout`` from its already-compressed ``data`` (same method, CRC and sizes).

    zipfile has no public call for this; it is what ``ZipFile.writestr`` does around the compressor
    (Python 3.9-3.13): a local header at ``start_dir``, the bytes, then the entry in ``filelist``.
    """
    new = _copy_info(info)
    new.flag_bits = info.flag_bits & _KEEP_FLAGS  # sizes are known: no data descriptor
    new.CRC, new.compress_size, new.file_size = info.CRC, info.compress_size, info.file_size
    with zout._lock:
        zout._writecheck(new)
        zout.fp.seek(zout.start_dir)
        new.header_offset = zout.fp.tell()
        zout.fp.write(new.FileHeader(None))
        zout.fp.write(data)
        zout.start_dir = zout.fp.tell()
        zout.filelist.append(new)
        zout.NameToInfo[new.filename] = new
        zout._didModify = True


def write_values(
    path: str | os.PathLike,
    values: dict,
    out: str | os.PathLike | None = None,
    *,
    cached: dict | None = None,
    transform=None,
) -> Path:
    """Write ``{"sheet!A1": float, "sheet!R4:AA5": 2-D array}`` into the workbook; return the path written.

    ``None`` in an array clears that cell. ``cached``: ``{ref: array}`` of cached formula results (the
    formulas stay; ``None`` leaves a cell as it is). Writes into ``path`` itself, or into the copy
    ``out`` (``path`` is then left untouched). ``transform(member, data) -> data`` may rewrite the other
    members (e.g. the history charts' ranges); ``transform.wants(member)``, if set, names the members it
    may change (the rest are copied as their compressed bytes). All in one atomic write.
    """
    src = Path(path)
    dest = Path(out) if out is not None else src
    if not src.is_file():
        raise WorkbookError(f"{src}: no such workbook")
    per_sheet: dict[str, dict[tuple[int, int], tuple]] = {}
    blocks: dict[str, list] = {}  # sheet -> [(op, r1, c1, finite float64 2-D array)]: spliced in bulk
    for op, group in (("f", cached or {}), ("v", values)):  # values win over cached on the same cell
        for ref, value in group.items():
            block = _block_of(ref, value)
            if block is not None:
                blocks.setdefault(block[0], []).append((op, *block[1:]))
                continue
            sheet, cells = _cells_of(ref, value, op)
            per_sheet.setdefault(sheet, {}).update(cells)
    for sheet in blocks:
        per_sheet.setdefault(sheet, {})

    def produce(zin: zipfile.ZipFile, fh) -> None:
        limited = LimitedZip(zin, str(src))
        ext = kind(limited)
        if ext and dest.suffix.lower() in EXTENSIONS and dest.suffix.lower() != ext:
            raise WorkbookError(
                f"{dest}: {src.name} is a {ext} workbook (macros, template flag); write it to a {ext} file, "
                f"not {dest.suffix}"
            )
        members = sheet_members(limited, str(src))
        edits = {}
        for sheet in per_sheet:
            if sheet not in members:
                raise WorkbookError(f"{src}: no worksheet named {sheet!r} (sheets: {', '.join(members)})")
            edits[members[sheet]] = sheet
        names = set(zin.namelist())
        for member in edits:
            if member not in names:
                raise WorkbookError(f"{src}: worksheet member {member} is missing")
        with zipfile.ZipFile(fh, "w", allowZip64=True) as zout, open(zin.filename, "rb") as raw:
            zout.comment = zin.comment
            wants = getattr(transform, "wants", lambda name: True) if transform is not None else None
            for info in zin.infolist():
                changed = info.filename in edits or info.filename == "xl/workbook.xml"
                changed = changed or (wants is not None and wants(info.filename))
                try:
                    if not changed and not info.flag_bits & 1:  # unchanged (and not encrypted): as is
                        _copy_raw(zout, info, _raw_member(raw, info))
                        continue
                    data = limited.read(info)
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                    raise WorkbookError(f"{src}: member {info.filename} is corrupt ({exc})") from exc
                level = None
                if info.filename in edits:
                    sheet = edits[info.filename]
                    data = _edit_sheet(data, sheet, blocks.get(sheet, []), per_sheet[sheet])
                    level = (
                        1  # the one big member rewritten: zlib's fastest level (6: 3x the time, 10 % smaller)
                    )
                elif info.filename == "xl/workbook.xml":
                    data = set_full_calc_on_load(data)
                elif transform is not None:
                    data = transform(info.filename, data)
                zout.writestr(_copy_info(info), data, compresslevel=level)

    with timing.stage("write"):
        return replace_file(src, dest, produce)


def write_cached_values(path: str | os.PathLike, cached: dict, out: str | os.PathLike | None = None) -> Path:
    """Only cached formula results: ``write_values(path, {}, out, cached=cached)``."""
    return write_values(path, {}, out, cached=cached)
