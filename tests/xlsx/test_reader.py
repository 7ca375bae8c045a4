"""Reading xlsx zip XML: the course workbook and bad files."""

from __future__ import annotations

import time
import zipfile

import pytest
from testenv import COURSE_TITANIC as COURSE
from testenv import needs_course

from xlmnist.errors import WorkbookError
from xlmnist.xlsx.reader import XLError, read_workbook


@needs_course
def test_course_workbook_fast_and_complete():
    t = time.perf_counter()
    wb = read_workbook(COURSE)
    assert time.perf_counter() - t < 2.0
    assert wb.order == ["mmult", "nnet", "linear", "all_rows"]
    assert wb.active == "nnet"
    nnet = wb.sheets["nnet"]
    assert nnet.values[(1, 34)] == 0.14315209641714463
    assert nnet.formula((1, 34)) == "AVERAGE(AH4:AH715)"
    assert nnet.formula((10, 31)) == "IF(AC10<0,0,AC10)"  # a shared formula, translated
    assert wb.sheets["mmult"].arrays[(4, 22)] == (4, 22, 715, 23)
    assert wb.sheets["mmult"].formula((4, 22)) == "MMULT(G4:P715,S4:T13)"
    t13 = wb.tables["TABLE13"]
    assert (t13.sheet, t13.ref, t13.header_rows, t13.totals_rows) == ("linear", (3, 1, 715, 16), 1, 0)
    assert t13.columns[:3] == ["Survived", "Embarked", "Pclass"] and t13.columns[-1] == "Ones"
    assert wb.name("nnet", "solver_adj") == "nnet!$R$4:$AA$5"
    assert wb.name("linear", "solver_opt") == "linear!$AA$7"
    assert wb.name("nnet", "solver_typ") == "2"
    assert nnet.values[(4, 4)] == "male"


def test_values_of_every_type(tmp_path):
    import openpyxl

    book = openpyxl.Workbook()
    ws = book.active
    ws["A1"], ws["A2"], ws["A3"], ws["A4"] = 1.5, "text", True, "=1/0"
    path = tmp_path / "v.xlsx"
    book.save(path)
    # openpyxl writes no cached value for formulas; put an error value in by hand
    with zipfile.ZipFile(path) as z:
        items = {i.filename: z.read(i.filename) for i in z.infolist()}
    sheet = items["xl/worksheets/sheet1.xml"].decode()
    sheet = sheet.replace("<f>1/0</f><v />", "<f>1/0</f><v>#DIV/0!</v>").replace(
        '<c r="A4"', '<c r="A4" t="e"'
    )
    items["xl/worksheets/sheet1.xml"] = sheet.encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in items.items():
            z.writestr(name, data)
    wb = read_workbook(path)
    v = wb.sheets["Sheet"].values
    assert v[(1, 1)] == 1.5 and v[(2, 1)] == "text" and v[(3, 1)] is True
    assert isinstance(v[(4, 1)], XLError) and v[(4, 1)] == "#DIV/0!"
    assert wb.sheets["Sheet"].formula((4, 1)) == "1/0"


@pytest.mark.parametrize(
    "content,pattern",
    [
        (b"hello, this is not a workbook", "not an xlsx"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512, "OLE2"),
        (b"PK\x03\x04garbage", "not an xlsx|corrupt"),
    ],
)
def test_bad_files(tmp_path, content, pattern):
    path = tmp_path / "bad.xlsx"
    path.write_bytes(content)
    with pytest.raises(WorkbookError, match=pattern) as info:
        read_workbook(path)
    assert "bad.xlsx" in str(info.value) and "\n" not in str(info.value)


def test_zip_without_workbook(tmp_path):
    path = tmp_path / "empty.xlsx"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(WorkbookError, match="empty.xlsx"):
        read_workbook(path)


def test_missing_file(tmp_path):
    with pytest.raises(WorkbookError, match="nope.xlsx"):
        read_workbook(tmp_path / "nope.xlsx")
