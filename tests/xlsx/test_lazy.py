"""Compiling reads only the sheets the model reaches (xlmnist.xlsx.lazy): the others are never parsed, and
the result is the same as with every sheet read."""

from __future__ import annotations

import openpyxl
import pytest
from openpyxl.workbook.defined_name import DefinedName

from xlmnist.compile import compile_workbook
from xlmnist.compile import model as compile_model
from xlmnist.errors import WorkbookError
from xlmnist.xlsx.refs import area_name


def book(path, extra=None):
    wb = openpyxl.Workbook()
    m = wb.active
    m.title = "model"
    m["A1"], m["A2"] = 0.5, -0.25  # the parameters
    for r in range(4, 9):
        m[f"B{r}"] = f"=data!A{r - 3}*$A$1+data!B{r - 3}*$A$2"
    m["C1"] = "=SUMSQ(B4:B8)"  # the objective
    d = wb.create_sheet("data")
    for r in range(1, 6):
        d[f"A{r}"], d[f"B{r}"] = r, 1 / r
    other = wb.create_sheet("other")  # reads the data only: not needed
    for r in range(1, 6):
        other[f"C{r}"] = f"=data!A{r}*2"
    view = wb.create_sheet("view")  # reads the parameters: its cached values are refreshed, so it is kept
    view["A1"] = "=model!A1*10"
    lone = wb.create_sheet("lone")
    lone["A1"] = 3
    if extra:
        extra(wb)
    wb.save(path)
    return path


def name(wb, formula, **names):
    for key, text in names.items():
        wb.defined_names.add(DefinedName(key, attr_text=text))
    wb["model"]["D1"] = formula


def compiled(path):
    return compile_workbook(path, sheet="model", objective="model!C1", params="model!A1:A2")


def dependents(m):
    return sorted(area_name(b.sheet, *b.out) for b in m.dependent_blocks())


def test_only_the_sheets_the_model_reaches_are_parsed(tmp_path, monkeypatch):
    path = book(tmp_path / "b.xlsx")
    m = compiled(path)
    assert m._c.wb.order == ["model", "data", "view"]
    lazy_objective, lazy_dependents = float(m.objective(m.initial_params())), dependents(m)
    monkeypatch.setattr(compile_model, "reachable_view", lambda wb, *a: wb)
    e = compiled(path)
    assert float(e.objective(e.initial_params())) == lazy_objective
    assert dependents(e) == lazy_dependents and "view!A1" in lazy_dependents


@pytest.mark.parametrize(
    "extra, kept",
    [
        (lambda wb: wb["other"].__setitem__("D1", '=INDIRECT("lone!A1")'), None),  # in a sheet not kept
        (lambda wb: wb["model"].__setitem__("D1", '=INDIRECT("lone!A1")'), "all"),
        (lambda wb: wb["model"].__setitem__("D1", "=SUM(data:lone!A1)"), "all"),  # a 3-D reference
        (lambda wb: wb["model"].__setitem__("D1", "=lone!A1"), "lone"),
        (lambda wb: wb["model"].__setitem__("D1", "='lone'!A1"), "lone"),
        (lambda wb: name(wb, "=far+1", far="lone!$A$1"), "lone"),
        (lambda wb: name(wb, "=farther+1", far="lone!$A$1", farther="far*2"), "lone"),  # a name of a name
    ],
)
def test_references_that_keep_other_sheets(tmp_path, extra, kept):
    m = compiled(book(tmp_path / "b.xlsx", extra))
    if kept == "all":
        assert m._c.wb.order == ["model", "data", "other", "view", "lone"]
    elif kept:
        assert kept in m._c.wb.order and "other" not in m._c.wb.order
    else:
        assert m._c.wb.order == ["model", "data", "view"]


def test_a_corrupt_sheet_the_model_does_not_reach_is_not_read(tmp_path):
    import zipfile

    path = book(tmp_path / "b.xlsx")
    bad = tmp_path / "bad.xlsx"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "xl/worksheets/sheet5.xml":  # "lone"
                data = data.replace(b"</sheetData>", b"<row><c r=")
            zout.writestr(info, data)
    assert compiled(bad)._c.wb.order == ["model", "data", "view"]
    with pytest.raises(WorkbookError, match="corrupt xlsx workbook"):
        compile_workbook(bad, sheet="lone", objective="lone!A1")
