"""LibreOffice as the independent formula oracle.

``recalc(path)`` opens a workbook in headless LibreOffice under a fresh profile that forces a full
recalculation on load (``OOXMLRecalcMode``/``ODFRecalcMode`` = 0, "always"), saves it as xlsx and reads
every cell's value back from the sheet XML (openpyxl cannot reopen LibreOffice's output). A plain
``--convert-to`` would keep the cached values and prove nothing.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from xlmnist.errors import XlmnistError
from xlmnist.xlsx.refs import XLError, col_letters

_PROFILE_XCU = """<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry" xmlns:xs="http://www.w3.org/2001/XMLSchema"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<item oor:path="/org.openoffice.Office.Calc/Formula/Load"><prop oor:name="OOXMLRecalcMode" oor:op="fuse"><value>0</value></prop></item>
<item oor:path="/org.openoffice.Office.Calc/Formula/Load"><prop oor:name="ODFRecalcMode" oor:op="fuse"><value>0</value></prop></item>
</oor:items>
"""

ERROR_STRINGS = {"#DIV/0!", "#N/A", "#NAME?", "#NULL!", "#NUM!", "#REF!", "#VALUE!", "Err:502", "Err:504"}


CellError = XLError  # an error value read from a sheet (``#DIV/0!`` ...)


def soffice_binary() -> str | None:
    for name in ("soffice", "libreoffice"):
        found = shutil.which(name)
        if found:
            return found
    return None


def available() -> bool:
    return soffice_binary() is not None


def recalc_file(path: str | os.PathLike, out_dir: str | os.PathLike, timeout: float = 600) -> Path:
    """Recalculate ``path`` in LibreOffice and write ``out_dir/<name>.xlsx``; return that path."""
    soffice = soffice_binary()
    if soffice is None:
        raise XlmnistError(
            "LibreOffice (soffice) is not installed: apt-get install -y libreoffice-calc-nogui"
        )
    src = Path(path).resolve()
    if not src.is_file():
        raise XlmnistError(f"{src}: no such workbook")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xlmnist-lo-") as tmp:
        profile = Path(tmp) / "profile"
        (profile / "user").mkdir(parents=True)
        (profile / "user" / "registrymodifications.xcu").write_text(_PROFILE_XCU)
        work = Path(tmp) / "work"
        work.mkdir()
        # a copy with a plain name: LibreOffice writes <stem>.xlsx
        inp = work / ("in" + src.suffix.lower())
        shutil.copyfile(src, inp)
        outd = Path(tmp) / "out"
        cmd = [
            soffice,
            f"-env:UserInstallation={profile.as_uri()}",
            "--headless",
            "--norestore",
            "--convert-to",
            "xlsx:Calc MS Excel 2007 XML",
            "--outdir",
            str(outd),
            str(inp),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        produced = outd / "in.xlsx"
        if proc.returncode != 0 or not produced.is_file():
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise XlmnistError(f"LibreOffice failed on {src.name}: {msg[-1] if msg else 'no output'}")
        dest = out_dir / (src.stem + ".xlsx")
        shutil.move(str(produced), dest)
    return dest


def read_values(path: str | os.PathLike) -> dict[str, dict[str, object]]:
    """Every cell's cached value, per sheet: ``{sheet: {"A1": value}}``, in reading order.

    Numbers are floats, booleans bools, strings str, error values :class:`CellError`.
    Empty cells are absent.
    """
    # deferred: numpy; xlmnist.calc drives LibreOffice from the UNO Python, which has only the stdlib
    from xlmnist.xlsx.reader import read_workbook

    wb = read_workbook(path)
    return {
        name: {f"{col_letters(c)}{r}": v for (r, c), v in sorted(wb.sheets[name].values.items())}
        for name in wb.order
    }


def recalc(path: str | os.PathLike, keep: str | os.PathLike | None = None) -> dict[str, dict[str, object]]:
    """Recalculate ``path`` with LibreOffice and return every cell's value (see :func:`read_values`).

    ``keep``: a folder to leave the recalculated xlsx in (default: a temporary one, removed).
    """
    if keep is not None:
        return read_values(recalc_file(path, keep))
    with tempfile.TemporaryDirectory(prefix="xlmnist-oracle-") as tmp:
        return read_values(recalc_file(path, tmp))


def error_cells(values: dict[str, dict[str, object]]) -> list[str]:
    """``sheet!A1`` of every error value (``#DIV/0!``, ``Err:502`` ...) or non-finite number."""
    bad = []
    for sheet, cells in values.items():
        for ref, v in cells.items():
            if isinstance(v, CellError) or (isinstance(v, str) and v in ERROR_STRINGS):
                bad.append(f"{sheet}!{ref}")
            elif isinstance(v, float) and not math.isfinite(v):
                bad.append(f"{sheet}!{ref}")
    return bad


def _cmd_check(args) -> int:

    t0 = time.perf_counter()
    values = recalc(args.book)
    secs = time.perf_counter() - t0
    bad = error_cells(values)
    for sheet, cells in values.items():
        print(f"{sheet}: {len(cells)} cells")
    print(f"recalculated by LibreOffice in {secs:.1f} s; {len(bad)} error cells")
    for ref in bad[:20]:
        print(f"  error: {ref}")
    return 1 if bad else 0


def register(sub) -> None:
    p = sub.add_parser("check", help="recalculate a workbook with LibreOffice and report error cells")
    p.add_argument("book")
    p.set_defaults(func=_cmd_check)
