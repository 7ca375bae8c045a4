"""Store a sheet's objective and trainable ranges as its ``xlmnist_objective`` / ``xlmnist_params`` names.

``xlmnist train --objective ... --params ... --save-names`` calls :func:`save_names` so later commands
(eval, export, the add-in) find them without the flags. Only ``xl/workbook.xml`` changes (its
``<definedNames>``: an existing sheet-local name of the same name is replaced); every other member is
copied byte for byte, in one atomic write (:func:`xlmnist.xlsx.atomic.replace_file`).
"""

from __future__ import annotations

import html
import re
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

from xlmnist.errors import WorkbookError
from xlmnist.xlsx.atomic import replace_file
from xlmnist.xlsx.limits import LimitedZip


def _sheet_index(xml: bytes, sheet: str) -> int:
    names = [
        html.unescape(m.group(1).decode())
        for m in re.finditer(rb'<(?:\w+:)?sheet\b[^>]*?\bname="([^"]*)"', xml)
    ]
    if sheet not in names:
        raise WorkbookError(f"xl/workbook.xml: no sheet named {sheet!r}")
    return names.index(sheet)


def set_names(xml: bytes, sheet: str, names: dict[str, str]) -> bytes:
    """``xl/workbook.xml`` with the sheet-local defined names ``{name: formula text}`` set."""
    local = str(_sheet_index(xml, sheet)).encode()
    prefix = (re.search(rb"<(\w+:)?workbook\b", xml).group(1) or b"") if b"workbook" in xml else b""
    for name in names:  # drop the old definitions of these names on this sheet
        pat = (
            rb"<(?:\w+:)?definedName\b(?=[^>]*\bname=\"" + re.escape(name.encode()) + rb"\")"
            rb"(?=[^>]*\blocalSheetId=\"" + local + rb"\")[^>]*>.*?</(?:\w+:)?definedName>"
        )
        xml = re.sub(pat, b"", xml, flags=re.IGNORECASE | re.DOTALL)
    new = b"".join(
        b"<" + prefix + b'definedName name="' + k.encode() + b'" localSheetId="' + local + b'">'
        + xml_escape(v).encode() + b"</" + prefix + b"definedName>"
        for k, v in names.items()
    )  # fmt: skip
    m = re.search(rb"</(?:\w+:)?definedNames>", xml)
    if m:
        return xml[: m.start()] + new + xml[m.start() :]
    empty = re.search(rb"<(?:\w+:)?definedNames\s*/>", xml)
    block = b"<" + prefix + b"definedNames>" + new + b"</" + prefix + b"definedNames>"
    if empty:
        return xml[: empty.start()] + block + xml[empty.end() :]
    after = 0  # schema order: sheets, functionGroups, externalReferences, definedNames
    for tag in (b"sheets", b"functionGroups", b"externalReferences"):
        for t in re.finditer(rb"</(?:\w+:)?" + tag + rb">|<(?:\w+:)?" + tag + rb"\b[^>]*/>", xml):
            after = max(after, t.end())
    if not after:
        raise WorkbookError("xl/workbook.xml: no <sheets> element")
    return xml[:after] + block + xml[after:]


def save_names(path, sheet: str, objective: str, params: str) -> Path:
    """Write ``xlmnist_objective`` = ``objective`` and ``xlmnist_params`` = ``params`` into ``sheet`` of BOOK."""
    path = Path(path)
    names = {"xlmnist_objective": objective, "xlmnist_params": params}

    def produce(zin: zipfile.ZipFile, fh) -> None:
        limited = LimitedZip(zin, str(path))
        with zipfile.ZipFile(fh, "w", allowZip64=True) as zout:
            zout.comment = zin.comment
            for info in zin.infolist():
                data = limited.read(info)
                if info.filename == "xl/workbook.xml":
                    data = set_names(data, sheet, names)
                zout.writestr(info, data)

    return replace_file(path, path, produce)
