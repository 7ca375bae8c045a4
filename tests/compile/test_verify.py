"""``xlmnist eval`` without trainable cells and ``xlmnist verify``: every compiled formula cell against
the values the file cached and against a forced LibreOffice recalculation."""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import openpyxl
import pytest
import torch

from xlmnist.cli import main
from xlmnist.compile import compile_workbook
from xlmnist.compile.verify import verify


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A sheet without Solver names or trainable cells."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "S"
    for r in range(1, 5):
        ws[f"A{r}"] = r * 1.5
        ws[f"B{r}"] = f"=A{r}*2"
    ws["C1"] = "=SUM(B1:B4)"
    path = tmp_path_factory.mktemp("plain") / "plain.xlsx"
    wb.save(path)
    return path


def test_eval_needs_only_an_objective(plain, capsys):
    m = compile_workbook(plain, objective="S!C1")
    assert m.param_refs == [] and m.initial_params() == []
    assert float(m.objective([])) == 30.0
    assert main(["eval", str(plain), "--objective", "S!C1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["objective"] == 30.0 and out["params"] == []
    assert main(["eval", str(plain)]) == 2  # no objective at all: a one-line error
    assert "pass --objective" in capsys.readouterr().err


def test_eval_without_params_still_evaluates_other_cells(plain):
    m = compile_workbook(plain, objective="S!C1")
    got = m.evaluate(["S!B1:B4"], [])["S!B1:B4"]
    torch.testing.assert_close(got.reshape(-1), torch.tensor([3.0, 6, 9, 12], dtype=torch.float64))


# ---- xlmnist verify -----------------------------------------------------------------------------------
def _tamper(src: Path, dst: Path, member: str, cells: dict[str, str], attrs: dict[str, str] = {}) -> Path:  # noqa: B006
    """A copy of ``src`` whose cells ``ref -> text`` hold that cached ``<v>`` (``attrs``: a ``t=``)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == member:
                text = data.decode()
                for ref, v in cells.items():
                    cell = re.compile(rf'<c r="{ref}"([^>]*?)(/?)>(.*?)</c>|<c r="{ref}"([^>]*?)/>', re.S)
                    m = cell.search(text)
                    assert m, ref
                    inner = re.sub(r"<v\s*/>|<v>[^<]*</v>", "", m.group(3) or "")
                    head = re.sub(r'\s*t="[^"]*"', "", m.group(1) or m.group(4) or "")
                    t = f' t="{attrs[ref]}"' if ref in attrs else ""
                    text = (
                        text[: m.start()] + f'<c r="{ref}"{head}{t}>{inner}<v>{v}</v></c>' + text[m.end() :]
                    )
                data = text.encode()
            zout.writestr(info, data)
    return dst


def _verify(*argv, capsys=None) -> tuple[int, dict]:
    rc = main(["verify", *map(str, argv), "--json"])
    return rc, json.loads(capsys.readouterr().out)


def test_verify_reports_the_tampered_cell(plain, tmp_path, capsys):
    good = {"B1": "3", "B2": "6", "B3": "9", "B4": "12", "C1": "30"}
    member = "xl/worksheets/sheet1.xml"
    ok = _tamper(plain, tmp_path / "ok.xlsx", member, good)
    rc, res = _verify(ok, capsys=capsys)
    assert (rc, res["cells"], res["equal"], res["different"], res["differences"]) == (0, 5, 5, 0, [])
    bad = _tamper(plain, tmp_path / "bad.xlsx", member, good | {"B3": "9.5"})
    rc, res = _verify(bad, capsys=capsys)
    assert rc == 1 and (res["equal"], res["different"]) == (4, 1)
    assert res["differences"] == [{"cell": "S!B3", "xlmnist": 9.0, "excel": 9.5}]
    assert main(["verify", str(bad)]) == 1
    text = capsys.readouterr().out
    assert "1 different" in text and "S!B3: xlmnist 9.0, excel 9.5" in text


def test_verify_compares_kinds(tmp_path, capsys):
    """Booleans, text, errors and an uncached cell; a block that cannot compile is counted, not fatal."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "S"
    ws["A1"], ws["A2"] = 2, 0
    ws["B1"], ws["B2"], ws["B3"], ws["B4"] = "=A1>1", '="x"&A1', "=A1/A2", "=A1*3"
    ws["B5"], ws["B6"] = "=_xlfn.NOSUCHFN(A1)", "=B5+1"
    ws["B7"] = "=SUM(TRUE,1)"
    wb.save(tmp_path / "k.xlsx")
    member = "xl/worksheets/sheet1.xml"
    cached = {"B1": "1", "B2": "x2", "B3": "#DIV/0!", "B7": "2"}
    attrs = {"B1": "b", "B2": "str", "B3": "e"}
    rc, res = _verify(
        _tamper(tmp_path / "k.xlsx", tmp_path / "k2.xlsx", member, cached, attrs), capsys=capsys
    )
    assert rc == 0 and res["different"] == 0
    assert (res["cells"], res["compiled"], res["equal"], res["uncached"]) == (7, 5, 4, 1)
    assert res["not_compiled"] == {"unsupported function NOSUCHFN()": 1, "depends on a cell not compiled": 1}
    wrong = {"B1": "0", "B2": "X2", "B3": "3", "B7": "1"}
    attrs.pop("B3")  # a number where Excel had #DIV/0!
    rc, res = _verify(_tamper(tmp_path / "k.xlsx", tmp_path / "k3.xlsx", member, wrong, attrs), capsys=capsys)
    assert rc == 1 and [d["cell"] for d in res["differences"]] == ["S!B1", "S!B2", "S!B3", "S!B7"]
    assert res["differences"][2] == {"cell": "S!B3", "xlmnist": "#ERROR", "excel": 3.0}


def test_verify_bad_input(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "missing.xlsx")]) == 2
    assert "missing.xlsx" in capsys.readouterr().err


def test_verify_one_sheet(plain, capsys):
    rc, res = _verify(plain, "--sheet", "s", capsys=capsys)
    assert (rc, res["cells"], res["uncached"]) == (0, 5, 5)
    assert main(["verify", str(plain), "--sheet", "nope"]) == 2
    assert "no sheet named 'nope'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def lesson_books(tmp_path_factory, tiny_mnist):
    from xlmnist.lessons import build_all

    out = tmp_path_factory.mktemp("lessons")
    old = os.environ.get("XLMNIST_DATA")
    os.environ["XLMNIST_DATA"] = str(tiny_mnist)
    try:
        return build_all(out, rows=40)
    finally:
        if old is None:
            os.environ.pop("XLMNIST_DATA")
        else:
            os.environ["XLMNIST_DATA"] = old


def test_verify_lesson_books_against_their_cached_values(lesson_books, coursebook):
    assert sorted(p.name for p in lesson_books) == ["mnist.xlsx", "mnist_3v7.xlsx", "titanic.xlsx"]
    for path in [*lesson_books, coursebook]:
        res = verify(path)
        assert res["different"] == 0 and res["not_compiled"] == {}, (path.name, res["differences"][:3])
        assert res["compiled"] == res["cells"] > 100, path.name


@pytest.mark.libreoffice
def test_verify_lesson_books_against_libreoffice(lesson_books, coursebook):
    for path in [*lesson_books, coursebook]:
        res = verify(path, oracle="libreoffice")
        assert res["different"] == 0, (path.name, res["differences"][:3])
        assert res["equal"] == res["cells"] > 100, path.name


def test_verify_the_course_workbook(course_titanic, tmp_path):
    res = verify(course_titanic)
    assert res["different"] == 0 and res["not_compiled"] == {}, res["differences"][:3]
    assert res["equal"] == res["cells"] > 20000
    # one cached loss changed in the file: exactly that cell, with both values
    member, cell = _first_formula_cell(course_titanic)
    bad = _tamper(course_titanic, tmp_path / "t.xlsx", member, {cell: "12345.5"})
    res = verify(bad)
    assert res["different"] == 1 and res["differences"][0]["excel"] == 12345.5
    assert res["differences"][0]["cell"].endswith("!" + cell)


def _first_formula_cell(path: Path) -> tuple[str, str]:
    with zipfile.ZipFile(path) as z:
        for name in sorted(z.namelist()):
            if name.startswith("xl/worksheets/sheet") and name.endswith(".xml"):
                m = re.search(
                    rb'<c r="([A-Z]+[0-9]+)"(?: s="\d+")?><f>[^<]+</f><v>[-0-9.E]+</v>', z.read(name)
                )
                if m:
                    return name, m.group(1).decode()
    raise AssertionError("no plain formula cell with a cached number")


def test_verify_after_training_matches_the_written_cached_values(lesson_books, tmp_path):
    """``xlmnist train`` writes the weights and the cached values of the cells they change: verify agrees."""
    book = tmp_path / "titanic.xlsx"
    book.write_bytes(next(p for p in lesson_books if p.name == "titanic.xlsx").read_bytes())
    assert main(["train", str(book), "--sheet", "nnet", "--epochs", "3", "--quiet"]) == 0
    res = verify(book)
    assert res["different"] == 0 and res["equal"] > 300, res["differences"][:3]
