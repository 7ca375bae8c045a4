"""A real-world shape openpyxl cannot load (a pivot cache it rejects): xlmnist reads the XML itself,
trains, and writes back without touching the pivot parts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import openpyxl
import pytest
from testenv import COURSE_TITANIC as COURSE
from testenv import HAVE_COURSE, needs_course

from xlmnist import oracle
from xlmnist.compile import compile_workbook

ROOT = Path(__file__).resolve().parents[2]

PIVOT_DEF = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<pivotCacheDefinition xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" r:id="rId1" '
    'refreshedBy="j" refreshedDate="45000.5" createdVersion="8" refreshedVersion="8" minRefreshableVersion="3" '
    'recordCount="one hundred">'  # not an integer: openpyxl's typed descriptors reject it
    '<cacheSource type="worksheet"><worksheetSource ref="A1:H892" sheet="all_rows"/></cacheSource>'
    '<cacheFields count="1"><cacheField name="Survived" numFmtId="0"><sharedItems containsSemiMixedTypes="0" '
    'containsString="0" containsNumber="1" containsInteger="1" minValue="0" maxValue="1"/></cacheField>'
    "</cacheFields></pivotCacheDefinition>"
)
PIVOT_RECORDS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<pivotCacheRecords xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="0"/>'
)


def with_pivot_cache(src: Path, dst: Path) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "xl/workbook.xml":
                data = data.replace(
                    b"</workbook>",
                    b'<pivotCaches><pivotCache cacheId="7" r:id="rId99"/></pivotCaches></workbook>',
                )
            elif item.filename == "xl/_rels/workbook.xml.rels":
                data = data.replace(
                    b"</Relationships>",
                    b'<Relationship Id="rId99" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
                    b'relationships/pivotCacheDefinition" Target="pivotCache/pivotCacheDefinition1.xml"/>'
                    b"</Relationships>",
                )
            elif item.filename == "[Content_Types].xml":
                data = data.replace(
                    b"</Types>",
                    b'<Override PartName="/xl/pivotCache/pivotCacheDefinition1.xml" ContentType="application/'
                    b'vnd.openxmlformats-officedocument.spreadsheetml.pivotCacheDefinition+xml"/>'
                    b'<Override PartName="/xl/pivotCache/pivotCacheRecords1.xml" ContentType="application/'
                    b'vnd.openxmlformats-officedocument.spreadsheetml.pivotCacheRecords+xml"/></Types>',
                )
            zout.writestr(item, data)
        zout.writestr("xl/pivotCache/pivotCacheDefinition1.xml", PIVOT_DEF)
        zout.writestr(
            "xl/pivotCache/_rels/pivotCacheDefinition1.xml.rels",
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns="http://schemas.'
            'openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.'
            'openxmlformats.org/officeDocument/2006/relationships/pivotCacheRecords" '
            'Target="pivotCacheRecords1.xml"/></Relationships>',
        )
        zout.writestr("xl/pivotCache/pivotCacheRecords1.xml", PIVOT_RECORDS)


@pytest.fixture()
def book(tmp_path, request):
    """The course workbook (without ../shared the tests' course-style one) with a pivot cache added."""
    path = tmp_path / "pivot.xlsx"
    with_pivot_cache(COURSE if HAVE_COURSE else request.getfixturevalue("coursebook"), path)
    return path


def test_openpyxl_cannot_load_it(book):
    with pytest.raises(Exception):  # noqa: B017 - whatever openpyxl raises, it cannot load the file
        openpyxl.load_workbook(book)


@needs_course
def test_compiles_and_matches_excel(book):
    model = compile_workbook(book, sheet="linear")
    assert float(model.objective(model.initial_params())) == pytest.approx(0.14422714930851466, rel=1e-12)


@pytest.mark.libreoffice
def test_train_writes_back_keeping_the_pivot_parts(book):
    with zipfile.ZipFile(book) as z:
        before = {n: z.read(n) for n in z.namelist()}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "xlmnist",
            "train",
            str(book),
            "--sheet",
            "linear",
            "--init",
            "zeros",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["objective"] == pytest.approx(0.1442271493073191, rel=1e-10)
    with zipfile.ZipFile(book) as z:
        after = {n: z.read(n) for n in z.namelist()}
    assert set(after) == set(before)
    for name in before:
        if name.startswith("xl/pivotCache/") or name in ("[Content_Types].xml", "xl/_rels/workbook.xml.rels"):
            assert after[name] == before[name], name
    assert re.search(rb"<pivotCaches>", after["xl/workbook.xml"])
    recalculated = oracle.recalc(book)
    assert recalculated["linear"]["AA7"] == pytest.approx(res["objective"], rel=1e-9)
