"""Write-back: surgical (only the written cells change), atomic, refuses formulas and NaN/inf."""

from __future__ import annotations

import math
import re
import shutil
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import openpyxl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl.chart import BarChart, Reference
from openpyxl.drawing.image import Image
from testenv import COURSE_TITANIC as TITANIC
from testenv import HAVE_COURSE, needs_course

from xlmnist import oracle
from xlmnist.errors import WorkbookError
from xlmnist.xlsx.edits import format_number, set_full_calc_on_load
from xlmnist.xlsx.refs import col_letters
from xlmnist.xlsx.writeback import write_values

CELL_RE = re.compile(rb'<c\b[^>]*?\br="([A-Z]+\d+)"[^>]*?(?:/>|>.*?</c>)', re.S)


def members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def cells_xml(xml: bytes) -> dict[str, bytes]:
    return {m.group(1).decode(): m.group(0) for m in CELL_RE.finditer(xml)}


def sheet_member(path, sheet: str) -> str:
    from xlmnist.xlsx.package import sheet_members

    with zipfile.ZipFile(path) as zf:
        return sheet_members(zf, str(path))[sheet]


def assert_only_changed(before: Path, after: Path, sheet_cells: dict[str, set[str]]):
    """Every member equal except the edited sheets (only the listed cells differ) and workbook.xml."""
    a, b = members(before), members(after)
    assert list(a) == list(b)
    edited = {sheet_member(before, s): cells for s, cells in sheet_cells.items()}
    for name in a:
        if name in edited:
            ca, cb = cells_xml(a[name]), cells_xml(b[name])
            changed = {r for r in set(ca) | set(cb) if ca.get(r) != cb.get(r)}
            assert changed == edited[name], name
            # outside <sheetData> and the cells, the XML is the same
            if all(r in ca for r in edited[name]):  # no new cells/rows: the rest of the XML is identical
                assert CELL_RE.sub(b"", a[name]) == CELL_RE.sub(b"", b[name])
        elif name == "xl/workbook.xml":
            assert b[name] == set_full_calc_on_load(a[name])
            assert b'fullCalcOnLoad="1"' in b[name]
        else:
            assert a[name] == b[name], name
    with zipfile.ZipFile(before) as za, zipfile.ZipFile(after) as zb:
        for ia, ib in zip(za.infolist(), zb.infolist()):
            assert (ia.filename, ia.date_time, ia.compress_type) == (
                ib.filename,
                ib.date_time,
                ib.compress_type,
            )
            assert ia.external_attr in (0, ib.external_attr)  # zipfile gives 0 the default 0o600 mode


@pytest.fixture
def titanic(tmp_path, request) -> Path:
    """A copy of the course workbook; without ../shared the tests' course-style one (same cells)."""
    dst = tmp_path / "titanic.xlsx"
    shutil.copyfile(TITANIC if HAVE_COURSE else request.getfixturevalue("coursebook"), dst)
    return dst


@needs_course
def test_titanic_params_written_nothing_else_changes(titanic, tmp_path):
    orig = tmp_path / "orig.xlsx"
    shutil.copyfile(titanic, orig)
    w = np.random.default_rng(0).normal(size=(2, 10))
    write_values(titanic, {"nnet!R4:AA5": w, "linear!AA4": -0.0})
    nnet = {f"{col_letters(c)}{r}" for r in (4, 5) for c in range(18, 28)}
    assert_only_changed(orig, titanic, {"nnet": nnet, "linear": {"AA4"}})
    xml = members(titanic)[sheet_member(titanic, "nnet")]
    got = cells_xml(xml)
    assert got["R4"] == f'<c r="R4" s="6"><v>{float(w[0, 0])!r}</v></c>'.encode()
    wb = openpyxl.load_workbook(titanic)  # openpyxl still loads it, values are exact
    ws = wb["nnet"]
    assert [[ws.cell(r, c).value for c in range(18, 28)] for r in (4, 5)] == w.tolist()
    assert wb["linear"]["AA4"].value == 0
    assert ws["AH1"].value == "=AVERAGE(AH4:AH715)"


@pytest.mark.libreoffice
@needs_course
def test_titanic_libreoffice_recalculates_written_optimum(titanic):
    """Write the least-squares optimum of `linear`; LibreOffice's recalculation shows its loss."""
    ws = openpyxl.load_workbook(titanic, data_only=True)["linear"]
    rows = list(ws.iter_rows(min_row=4, max_row=715, min_col=1, max_col=16, values_only=True))
    x = np.array([r[6:16] for r in rows], dtype=float)
    y = np.array([r[0] for r in rows], dtype=float)
    w, *_ = np.linalg.lstsq(x, y, rcond=None)
    write_values(titanic, {"linear!R4:AA4": w.reshape(1, 10)})
    values = oracle.recalc(titanic)
    assert values["linear"]["AA7"] == pytest.approx(0.1442271493073191, rel=1e-9)
    # LibreOffice saves 15 significant digits
    assert [values["linear"][f"{col_letters(c)}4"] for c in range(18, 28)] == pytest.approx(
        w.tolist(), rel=1e-14
    )


@pytest.mark.parametrize(
    "target, expect",
    [
        ("linear!E1", "linear!E1: holds a formula"),  # MAX(Table13[Age])
        ("nnet!AH4", "nnet!AH4: holds a formula"),
        ("mmult!V4", "mmult!V4: is part of an array formula"),  # the anchor
        ("mmult!W9", "mmult!W9: is part of an array formula"),  # inside V4:W715, no <f>
        ("nosuch!A1", "no worksheet named 'nosuch'"),
        ("A1", "must name its sheet"),
        ("nnet!R4:ZZZZ5", "not a cell or range reference"),
    ],
)
def test_refused_targets_leave_file_unchanged(titanic, target, expect):
    before = titanic.read_bytes()
    with pytest.raises(WorkbookError, match=re.escape(expect)):
        write_values(titanic, {"linear!R4": 1.0, target: 2.0})
    assert titanic.read_bytes() == before
    assert list(titanic.parent.iterdir()) == [titanic]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_inf_never_written(titanic, bad):
    before = titanic.read_bytes()
    w = np.ones((2, 10))
    w[1, 3] = bad
    with pytest.raises(WorkbookError, match=r"nnet!U5: value .* is not finite"):
        write_values(titanic, {"nnet!R4:AA5": w})
    assert titanic.read_bytes() == before


def test_failure_midway_leaves_original_and_no_temp(titanic):
    """mmult (sheet1.xml) is written into the temp zip before linear (sheet3.xml) fails."""
    before = titanic.read_bytes()
    out = titanic.parent / "copy.xlsx"
    for dest in (None, out):
        with pytest.raises(WorkbookError, match=r"linear!AD7: holds a formula"):
            write_values(titanic, {"mmult!S4:T13": np.zeros((10, 2)), "linear!AD7": 1.0}, out=dest)
        assert titanic.read_bytes() == before
        assert sorted(p.name for p in titanic.parent.iterdir()) == ["titanic.xlsx"]


def test_out_copy_leaves_source(titanic, tmp_path):
    before = titanic.read_bytes()
    out = tmp_path / "sub" / "trained.xlsx"
    assert write_values(titanic, {"mmult!S4:T13": np.full((10, 2), 0.25)}, out=out) == out
    assert titanic.read_bytes() == before
    assert openpyxl.load_workbook(out)["mmult"]["T13"].value == 0.25


@pytest.mark.parametrize(
    "content, error",
    [
        (None, "no such workbook"),
        (b"hello, not a zip", "not an xlsx file"),
        pytest.param("corrupt", "corrupt", marks=needs_course),
        (b"PK\x05\x06" + b"\0" * 18, "not an xlsx workbook"),
    ],
)
def test_bad_files(tmp_path, content, error):
    path = tmp_path / "bad.xlsx"
    if content == "corrupt":  # a real xlsx with a damaged sheet member
        data = bytearray(TITANIC.read_bytes())
        i = data.index(b"worksheets/sheet2.xml") + 200
        data[i : i + 400] = bytes(400)
        content = bytes(data)
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WorkbookError, match=error):
        write_values(path, {"nnet!R4": 1.0})
    if content is not None:
        assert path.read_bytes() == content
        assert [p.name for p in tmp_path.iterdir()] == ["bad.xlsx"]


def small_book(path: Path, cells: dict[str, object], sheet="My 'data'") -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = sheet
    for ref, v in cells.items():
        ws[ref] = v
    wb.save(path)
    return path


def read_all(path, sheet):
    ws = openpyxl.load_workbook(path)[sheet]
    return {c.coordinate: c.value for row in ws.iter_rows() for c in row if c.value is not None}


@pytest.mark.parametrize(
    "existing, target",
    [
        ({"A1": 1, "C1": 3}, "B1"),  # missing cell between two
        ({"B2": 1}, "A2"),  # before the first cell of a row
        ({"A1": 1, "A5": 5}, "D3"),  # missing row in the middle
        ({"A1": 1}, "A9"),  # after the last row
        ({}, "C4"),  # empty sheet: <sheetData/>
        ({"B2": "text"}, "B2"),  # a string becomes a number
        ({"B2": True}, "B2"),  # a bool too
        ({"A1": 1, "B1": 2, "C1": 3}, "B1"),  # overwrite
    ],
)
def test_insert_and_overwrite_cells(tmp_path, existing, target):
    path = small_book(tmp_path / "s.xlsx", existing)
    sheet = "My 'data'"
    write_values(path, {f"'My ''data'''!{target}": 0.1 + 0.2})
    got = read_all(path, sheet)
    expect = {**existing, target: 0.1 + 0.2}
    assert got == expect
    xml = members(path)[sheet_member(path, sheet)]
    assert f'r="{target}"><v>0.30000000000000004</v></c>'.encode() in xml
    assert b"t=" not in cells_xml(xml)[target]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    existing=st.dictionaries(
        st.tuples(st.integers(1, 8), st.integers(1, 8)), st.integers(-5, 5), max_size=20
    ),
    targets=st.dictionaries(
        st.tuples(st.integers(1, 9), st.integers(1, 9)),
        st.floats(allow_nan=False, allow_infinity=False, width=64),
        min_size=1,
        max_size=15,
    ),
)
def test_property_roundtrip(tmp_path_factory, existing, targets):
    path = small_book(
        tmp_path_factory.mktemp("p") / "p.xlsx",
        {f"{col_letters(c)}{r}": v for (r, c), v in existing.items()},
        sheet="S",
    )
    write_values(path, {f"S!{col_letters(c)}{r}": v for (r, c), v in targets.items()})
    got = read_all(path, "S")
    expect = {f"{col_letters(c)}{r}": v for (r, c), v in existing.items()}
    expect.update({f"{col_letters(c)}{r}": v for (r, c), v in targets.items()})
    assert {k: v for k, v in got.items()} == {k: v for k, v in expect.items() if v is not None}


def tiny_png() -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\0" + b"\xff\x00\x00" * 4 for _ in range(4))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


class PngImage(Image):
    """openpyxl's Image without Pillow: the PNG bytes are given."""

    def __init__(self, data: bytes):
        self.ref, self._png, self.width, self.height, self.format = None, data, 4, 4, "png"

    def _data(self):
        return self._png


def test_chart_and_image_members_untouched(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "data"
    for i in range(1, 6):
        ws.append([i, i * i])
    chart = BarChart()
    chart.add_data(Reference(ws, min_col=2, min_row=1, max_row=5))
    ws.add_chart(chart, "D2")
    ws.add_image(PngImage(tiny_png()), "D20")
    path = tmp_path / "chart.xlsx"
    wb.save(path)
    orig = tmp_path / "orig.xlsx"
    shutil.copyfile(path, orig)
    names = list(members(path))
    assert any("charts/chart" in n for n in names) and any("media/image" in n for n in names)
    assert any("drawings/drawing" in n for n in names)
    write_values(path, {"data!B2:B3": [[7.5], [8.5]]})
    assert_only_changed(orig, path, {"data": {"B2", "B3"}})
    wb2 = openpyxl.load_workbook(path)
    assert [wb2["data"]["B2"].value, wb2["data"]["B3"].value] == [7.5, 8.5]


def test_format_number_roundtrips():
    for x in [0.1, -2.5e-300, 1e22, 123456789.0, 5e-324, -0.0, 1.0, 0.14315209641014892]:
        text = format_number(x)
        assert float(text) == x and b"inf" not in text and b"nan" not in text


def test_million_cell_sheet_is_fast(tmp_path):
    """785 x 30 values into a sheet of 1000 x 1000 cells."""
    rows = []
    for r in range(1, 1001):
        cells = "".join(f'<c r="{col_letters(c)}{r}"><v>{r + c}</v></c>' for c in range(1, 1001))
        rows.append(f'<row r="{r}">{cells}</row>')
    big = small_book(tmp_path / "big.xlsx", {"A1": 1}, sheet="big")
    data = members(big)
    member = sheet_member(big, "big")
    data[member] = re.sub(
        rb"<sheetData>.*</sheetData>",
        lambda m: ("<sheetData>" + "".join(rows) + "</sheetData>").encode(),
        data[member],
        flags=re.S,
    )
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, b in data.items():
            zf.writestr(name, b)
    w = np.random.default_rng(1).normal(size=(785, 30))
    t = time.perf_counter()
    write_values(big, {"big!B101:AE885": w})
    seconds = time.perf_counter() - t
    print(f"writeback 785x30 into 1e6 cells: {seconds:.2f}s")
    assert seconds < 4
    xml = members(big)[member]
    got = cells_xml(xml[: xml.index(b'<row r="890"')])
    assert float(re.search(rb"<v>(.*?)</v>", got["AE885"]).group(1)) == w[-1, -1]
    assert got["A101"] == b'<c r="A101"><v>102</v></c>'


def test_failure_at_the_final_rename_cleans_up(titanic):
    """The temp file is complete but cannot be moved into place (the target is a folder)."""
    before = titanic.read_bytes()
    blocked = titanic.parent / "blocked.xlsx"
    blocked.mkdir()
    with pytest.raises(WorkbookError, match="blocked.xlsx: cannot replace the file"):
        write_values(titanic, {"nnet!R4": 1.0}, out=blocked)
    assert titanic.read_bytes() == before
    assert sorted(p.name for p in titanic.parent.iterdir()) == ["blocked.xlsx", "titanic.xlsx"]
    assert list(blocked.iterdir()) == []


# ------------------------------------------------------------------ cached formula values, clearing
@needs_course
def test_cached_values_keep_formulas_and_array_ranges(titanic, tmp_path):
    """Cached <v> of formula cells (shared formulas and an array formula's range too); the <f> stays."""
    out = tmp_path / "cached.xlsx"
    write_values(
        titanic,
        {},
        out=out,
        cached={"nnet!AH1": 0.25, "nnet!AC4:AC5": [[1.5], [None]], "mmult!V4:W5": [[1.0, 2.0], [3.0, 4.0]]},
    )
    for sheet, cells in {"nnet": {"AH1", "AC4"}, "mmult": {"V4", "W4", "V5", "W5"}}.items():
        a, b = members(titanic), members(out)
        member = sheet_member(titanic, sheet)
        ca, cb = cells_xml(a[member]), cells_xml(b[member])
        assert {r for r in ca if ca[r] != cb.get(r)} == cells
        strip = re.compile(rb"<v>[^<]*</v>")
        for r in cells:
            assert strip.sub(b"", ca[r]) == strip.sub(b"", cb[r])  # formula and attributes kept
    vals = oracle.read_values(out)
    assert (vals["nnet"]["AH1"], vals["nnet"]["AC4"]) == (0.25, 1.5)
    assert [vals["mmult"][c] for c in ("V4", "W4", "V5", "W5")] == [1.0, 2.0, 3.0, 4.0]
    wb = openpyxl.load_workbook(out)
    assert wb["nnet"]["AH1"].value.startswith("=AVERAGE")


@pytest.mark.parametrize(
    "cached, expect",
    [
        ({"nnet!R4": 1.0}, "nnet!R4: holds no formula"),
        ({"nnet!AZ900": 1.0}, "nnet!AZ900: holds no formula"),
        ({"nnet!AH1": math.nan}, "not finite"),
        ({"nnet!AH1": "x"}, "not a number"),
    ],
)
def test_cached_refused_on_non_formula_cells(titanic, cached, expect):
    before = titanic.read_bytes()
    with pytest.raises(WorkbookError, match=expect):
        write_values(titanic, {}, cached=cached)
    assert titanic.read_bytes() == before


def test_none_clears_cells_and_keeps_styles(tmp_path):
    path = small_book(tmp_path / "c.xlsx", {"A1": 1, "B1": "text", "C1": 3, "A2": 4}, sheet="S")
    write_values(path, {"S!A1:D1": [[None, None, 7.0, None]], "S!A5": None})
    assert read_all(path, "S") == {"C1": 7.0, "A2": 4}
    xml = members(path)[sheet_member(path, "S")]
    assert b'<c r="A1"/>' in xml and b'r="B1" t=' not in xml and b'r="D1"' not in xml and b'r="A5"' not in xml


def test_none_refused_on_formula_cells(titanic):
    before = titanic.read_bytes()
    with pytest.raises(WorkbookError, match="nnet!AH1: holds a formula"):
        write_values(titanic, {"nnet!AH1": None})
    assert titanic.read_bytes() == before
