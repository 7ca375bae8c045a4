"""Resource limits on untrusted workbooks: zip bombs, huge used ranges, NUL sheets, deep formulas."""

from __future__ import annotations

import tracemalloc
import zipfile

import pytest

from xlmnist.compile.model import compile_workbook
from xlmnist.errors import FormulaError, WorkbookError
from xlmnist.formula.parser import parse
from xlmnist.xlsx import limits
from xlmnist.xlsx.reader import read_workbook
from xlmnist.xlsx.writeback import write_values

NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
R_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def book(path, sheet: bytes, extra: dict[str, bytes] | None = None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(
            "xl/workbook.xml",
            f'<workbook {NS} xmlns:r="{R_NS}"><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>',
        )
        z.writestr(
            "xl/_rels/workbook.xml.rels",
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="x/worksheet" Target="worksheets/sheet1.xml"/></Relationships>',
        )
        z.writestr("xl/worksheets/sheet1.xml", sheet)
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return path


def sheet(cells: str, prefix: str = "") -> bytes:
    p = prefix
    ns = NS.replace("xmlns=", f"xmlns:{p[:-1]}=") if p else NS
    return f"<{p}worksheet {ns}><{p}sheetData>{cells}</{p}sheetData></{p}worksheet>".encode()


def test_zip_bomb_member_refused_before_inflating(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_MEMBER_MB", 4)
    big = sheet("") + b" " * (64 << 20)  # 64 MB of spaces: ~64 KB deflated
    path = book(tmp_path / "bomb.xlsx", big)
    assert path.stat().st_size < 200_000
    with pytest.raises(WorkbookError, match=r"bomb.xlsx: xl/worksheets/sheet1.xml .*XLMNIST_MAX_MEMBER_MB"):
        read_workbook(path)
    with pytest.raises(WorkbookError, match="XLMNIST_MAX_MEMBER_MB"):
        write_values(path, {"S!A1": 1.0})


def test_total_unzipped_size_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_UNZIPPED_MB", 2)
    pad = {f"xl/media/pad{i}.bin": b"\0" * (1 << 20) for i in range(3)}
    path = book(tmp_path / "many.xlsx", sheet(""), {"xl/sharedStrings.xml": f"<sst {NS}/>".encode(), **pad})
    read_workbook(path)  # the pads are never read
    strings = f"<sst {NS}>".encode() + b"<si><t>x</t></si>" * 200_000 + b"</sst>"  # 3.4 MB
    path = book(tmp_path / "strings.xlsx", sheet(""), {"xl/sharedStrings.xml": strings})
    budget = limits.Budget("strings.xlsx")
    with zipfile.ZipFile(path) as z:
        budget.read(z, "xl/worksheets/sheet1.xml")
        with pytest.raises(
            WorkbookError, match="strings.xlsx: xl/sharedStrings.xml .*XLMNIST_MAX_UNZIPPED_MB"
        ):
            budget.read(z, "xl/sharedStrings.xml")


def test_counter_stops_a_member_that_lies_about_its_size(tmp_path, monkeypatch):
    path = book(tmp_path / "lie.xlsx", sheet("") + b" " * (3 << 20))
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("xl/worksheets/sheet1.xml")
    monkeypatch.setattr(limits, "MAX_MEMBER_MB", 1)
    budget = limits.Budget("lie.xlsx")
    budget.check = lambda info: None  # a header that claims a small size: only the counter is left
    with zipfile.ZipFile(path) as z, pytest.raises(WorkbookError, match="per-member limit of 1 MB"):
        budget.read(z, info)


FAR = [  # stray cells far from the model: none of them may size a grid
    '<row r="20000"><c r="XFD20000"><f>1+1</f><v>2</v></c></row>',
    '<row r="500000"><c r="Z500000" t="inlineStr"><is><t>a note</t></is></c><c r="AA500000" s="3"/></row>',
    '<row r="1048576"><c r="XFD1048576"><v>7</v></c></row>',
]
MODEL = (  # A1:A3 data, B1:B3 trainable, C1 the objective
    '<row r="1"><c r="A1"><v>1</v></c><c r="B1"><v>0.5</v></c><c r="C1"><f>SUMPRODUCT(A1:A3,B1:B3)^2</f></c></row>'
    '<row r="2"><c r="A2"><v>2</v></c><c r="B2"><v>-1</v></c></row>'
    '<row r="3"><c r="A3"><v>3</v></c><c r="B3"><v>0.25</v></c></row>'
)


@pytest.mark.parametrize("prefix", ["", "x:"], ids=["fast", "iterparse"])
@pytest.mark.parametrize("far", range(len(FAR)), ids=["formula-XFD20000", "text-Z500000", "value-XFD1048576"])
def test_far_cell_costs_no_grid_and_the_model_still_works(tmp_path, prefix, far):
    """A stray cell far away (a formula, a note, a value, a formatted empty cell) sizes no dense grid: the
    workbook reads and compiles in a few MB and the model beside A1 evaluates and trains as usual."""
    cells = MODEL + FAR[far]
    if prefix:
        cells = cells.replace("<", "<" + prefix).replace("<" + prefix + "/", "</" + prefix)
    path = book(tmp_path / "far.xlsx", sheet(cells, prefix))
    assert path.stat().st_size < 2048
    tracemalloc.start()
    try:
        wb = read_workbook(path)
        model = compile_workbook(path, objective="S!C1", params="S!B1:B3")
        p = [t.clone().requires_grad_(True) for t in model.initial_params()]
        loss = model.objective(p)
        loss.backward()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20, f"{peak / 2**20:.0f} MB for a 2 KB workbook"
    sh = wb.sheets["S"]
    assert (sh.max_row, sh.max_col) == {0: (20000, 16384), 1: (500000, 26), 2: (1048576, 16384)}[far]
    s = 1 * 0.5 + 2 * -1 + 3 * 0.25
    assert float(loss.detach()) == pytest.approx(s * s, rel=1e-15)
    assert p[0].grad.flatten().tolist() == pytest.approx([2 * s * 1, 2 * s * 2, 2 * s * 3], rel=1e-15)


def test_model_reading_a_far_cell_is_refused_by_the_grid_limit(tmp_path):
    """Reading a far cell into the model would size the grid from A1 to it: refused in one line."""
    cells = MODEL.replace("SUMPRODUCT(A1:A3,B1:B3)^2", "SUMPRODUCT(A1:A3,B1:B3)^2+XFD20000") + FAR[0]
    path = book(tmp_path / "far.xlsx", sheet(cells))
    with pytest.raises(
        WorkbookError, match=r"S!XFD20000: the formula block reaches far beyond .*XLMNIST_MAX_CELLS"
    ):
        compile_workbook(path, objective="S!C1", params="S!B1:B3")


def test_nul_sheet_is_an_error_not_empty(tmp_path):
    path = book(tmp_path / "nul.xlsx", b"\0" * 4096)
    with pytest.raises(WorkbookError, match="nul.xlsx: corrupt xlsx workbook"):
        read_workbook(path)


def test_long_and_deep_formulas_give_one_line_errors():
    with pytest.raises(FormulaError, match=r"S!A1: formula of 9,001 characters, more than 8,192"):
        parse("A1&" * 3000 + "1", "S!A1")
    for text in ("ABS(" * 300 + "1" + ")" * 300, "+".join(f"A{i}" for i in range(1, 1000)), "-" * 500 + "1"):
        with pytest.raises(FormulaError, match=r"S!A1: formula nested \d+ deep, more than 200"):
            parse(text, "S!A1")
    assert parse("ABS(" * 150 + "1" + ")" * 150, "S!A1") is not None
    assert parse("+".join(f"A{i}" for i in range(1, 150)), "S!A1") is not None
