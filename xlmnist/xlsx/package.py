"""The workbook package: relationships, sheet order, worksheet parts and defined names.

The one place that reads ``xl/workbook.xml`` for the sheet list and the defined names, and resolves
``_rels`` targets to zip member names.
"""

from __future__ import annotations

import posixpath
import zipfile
from xml.etree import ElementTree as ET

from xlmnist.errors import WorkbookError

M = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
R_ID = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
PKG = "{http://schemas.openxmlformats.org/package/2006/relationships}"
WORKBOOK = "xl/workbook.xml"


def rels(z: zipfile.ZipFile, part: str, names=None) -> dict[str, tuple[str, str]]:
    """``{rId: (member, type)}`` of ``part``'s internal relationships (targets resolved to members)."""
    folder, base = posixpath.split(part)
    rel_path = posixpath.join(folder, "_rels", base + ".rels")
    if rel_path not in (names if names is not None else set(z.namelist())):
        return {}
    out = {}
    for r in ET.fromstring(z.read(rel_path)).iter(PKG + "Relationship"):
        if r.get("TargetMode") == "External":
            continue
        target = r.get("Target", "")
        target = (
            target.lstrip("/")
            if target.startswith("/")
            else posixpath.normpath(posixpath.join(folder, target))
        )
        out[r.get("Id")] = (target, r.get("Type", ""))
    return out


def workbook_root(z: zipfile.ZipFile, label: str) -> ET.Element:
    try:
        return ET.fromstring(z.read(WORKBOOK))
    except (KeyError, ET.ParseError) as exc:
        raise WorkbookError(f"{label}: not an xlsx workbook (no readable {WORKBOOK})") from exc


def sheet_order(root: ET.Element) -> list[str]:
    return [s.get("name") for s in root.iter(M + "sheet")]


def defined_names(root: ET.Element, order: list[str]) -> dict[tuple[str | None, str], str]:
    """``{(sheet scope or None, UPPER name): text}`` of the workbook's defined names."""
    out: dict[tuple[str | None, str], str] = {}
    for dn in root.iter(M + "definedName"):
        local = dn.get("localSheetId")
        scope = (
            order[int(local)] if local is not None and local.isdigit() and int(local) < len(order) else None
        )
        out[(scope, dn.get("name", "").upper())] = (dn.text or "").strip()
    return out


def read_names(path) -> tuple[list[str], dict[tuple[str | None, str], str]]:
    """(sheet order, defined names) of the workbook at ``path``, without reading its sheets."""
    try:
        with zipfile.ZipFile(path) as zf:
            root = workbook_root(zf, str(path))
    except (OSError, zipfile.BadZipFile) as exc:
        raise WorkbookError(f"{path}: not an xlsx workbook ({exc})") from None
    order = sheet_order(root)
    return order, defined_names(root, order)


def sheet_members(zf: zipfile.ZipFile, label: str) -> dict[str, str]:
    """Map sheet name -> zip member of its worksheet XML (chart and dialog sheets left out)."""
    root = workbook_root(zf, label)
    targets = rels(zf, WORKBOOK)
    out = {}
    for sh in root.iter(M + "sheet"):
        target, kind = targets.get(sh.get(R_ID), (None, ""))
        if target and kind.endswith("/worksheet"):
            out[sh.get("name")] = target
    return out


_KINDS = {  # the workbook part's content type -> the file extension of that kind
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml": ".xlsx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.template.main+xml": ".xltx",
    "application/vnd.ms-excel.sheet.macroEnabled.main+xml": ".xlsm",
    "application/vnd.ms-excel.template.macroEnabled.main+xml": ".xltm",
}
EXTENSIONS = tuple(_KINDS.values())
_CT = "{http://schemas.openxmlformats.org/package/2006/content-types}"


def kind(z) -> str | None:
    """The extension the package's workbook content type calls for (``.xlsx``, ``.xlsm``, ...), or None."""
    try:
        root = ET.fromstring(z.read("[Content_Types].xml"))
    except (KeyError, ET.ParseError):
        return None
    for o in root.iter(_CT + "Override"):
        if o.get("PartName", "").lstrip("/") == WORKBOOK:
            return _KINDS.get(o.get("ContentType", ""))
    return None
