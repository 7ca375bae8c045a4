"""Macro-enabled workbooks and templates in and out: every part byte-identical, extension kept."""

from __future__ import annotations

import zipfile

import openpyxl
import pytest

from xlmnist.errors import WorkbookError
from xlmnist.xlsx.reader import read_workbook
from xlmnist.xlsx.writeback import write_values

XLSM = "application/vnd.ms-excel.sheet.macroEnabled.main+xml"
XLTM = "application/vnd.ms-excel.template.macroEnabled.main+xml"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
PARTS = {  # a VBA project and its signature: opaque binary parts that must travel untouched
    "xl/vbaProject.bin": bytes(range(256)) * 40,
    "xl/vbaProjectSignature.bin": b"\x30\x82" + bytes(range(200)),
}


def macro_book(path, content_type: str):
    plain = path.with_suffix(".tmp.xlsx")
    wb = openpyxl.Workbook()
    wb.active.title = "S"
    wb.active["A1"] = 1
    wb.save(plain)
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "[Content_Types].xml":
                data = data.replace(XLSX.encode(), content_type.encode())
                data = data.replace(
                    b"</Types>",
                    b'<Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/></Types>',
                )
            zout.writestr(info, data)
        for name, data in PARTS.items():
            zout.writestr(name, data)
    plain.unlink()
    return path


def members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


@pytest.mark.parametrize("ext, ct", [(".xlsm", XLSM), (".xltm", XLTM)])
def test_macro_parts_and_kind_survive_a_write(tmp_path, ext, ct):
    book = macro_book(tmp_path / f"m{ext}", ct)
    assert read_workbook(book).sheet("S").values[(1, 1)] == 1
    before = members(book)
    write_values(book, {"S!B2": 2.5})
    out = write_values(book, {"S!B3": 1.0}, out=tmp_path / f"copy{ext}")
    for path in (book, out):
        after = members(path)
        assert list(after) == list(before)
        for name in before:
            if name not in ("xl/worksheets/sheet1.xml", "xl/workbook.xml"):
                assert after[name] == before[name], name
        assert ct.encode() in after["[Content_Types].xml"]
    assert read_workbook(out).sheet("S").values[(2, 2)] == 2.5


def test_macro_book_to_a_plain_extension_is_refused(tmp_path):
    book = macro_book(tmp_path / "m.xlsm", XLSM)
    with pytest.raises(WorkbookError, match=r"plain.xlsx: m.xlsm is a .xlsm workbook .* not .xlsx"):
        write_values(book, {"S!B2": 1.0}, out=tmp_path / "plain.xlsx")
    assert not (tmp_path / "plain.xlsx").exists()
    wb = openpyxl.Workbook()
    wb.save(tmp_path / "p.xlsx")
    with pytest.raises(WorkbookError, match=r"p.xlsm: p.xlsx is a .xlsx workbook"):
        write_values(tmp_path / "p.xlsx", {"Sheet!A1": 1.0}, out=tmp_path / "p.xlsm")
