"""Workbook text never becomes code in an exported module: sheet names, header cells, formula text and the
workbook's file name go through one escaping function, so the module parses, has exactly the statements
of a clean export and runs, whatever the text (Hypothesis), including the injection cases of issue #13."""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import json
from pathlib import Path

import openpyxl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from openpyxl.workbook.defined_name import DefinedName
from test_general_form import lookup_book

from xlmnist.errors import XlmnistError
from xlmnist.export.codegen import export_module, generate

INJECT = '""";__import__("pathlib").Path("MARKER").touch();"""'
CLEAN = ("s", ["x", "f", "label", "pred", "loss"], "abc", "b")


def build(path: Path, sheet: str, heads: list[str], text: str) -> Path:
    """x (A), a feature formula holding ``text`` (B), label (C), prediction (D), per-row loss (E)."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = sheet
    for c, h in zip("ABCDE", heads):
        ws[f"{c}1"] = h
    ws["F1"] = 0.5
    literal = text.replace('"', '""')
    for r in range(2, 6):
        ws[f"A{r}"], ws[f"C{r}"] = float(r), float(r % 2)
        ws[f"B{r}"] = f'=IF(A{r}="{literal}",0,A{r}*2)'
        ws[f"D{r}"] = f"=B{r}*$F$1"
        ws[f"E{r}"] = f"=(D{r}-C{r})^2"
    ws["G1"] = "=AVERAGE(E2:E5)"
    q = sheet.replace("'", "''")
    ws.defined_names["solver_opt"] = DefinedName("solver_opt", attr_text=f"'{q}'!$G$1")
    ws.defined_names["solver_adj"] = DefinedName("solver_adj", attr_text=f"'{q}'!$F$1")
    wb.save(path)
    return path


def skeleton(src: str) -> list[str]:
    """The statement kinds of a module, in order (names and constants left out)."""
    return [type(n).__name__ for n in ast.walk(ast.parse(src)) if isinstance(n, ast.stmt)]


def export_and_run(folder: Path, sheet, heads, text, stem) -> tuple[str, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    book = build(folder / f"{stem}.xlsx", sheet, heads, text)
    out = generate(book, out_path=folder / "model.py")
    src = out.read_text(encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"_exported_{abs(hash(str(folder)))}", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert module.main([str(book), "--json"]) == 0
    return src, json.loads(buf.getvalue())


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    src, result = export_and_run(tmp_path_factory.mktemp("clean"), *CLEAN)
    return skeleton(src), result


@pytest.mark.parametrize(
    "sheet, heads, text, stem",
    [
        ("s", [INJECT] * 5, "abc", "b"),  # header cells
        ('a"""b', ["x", "f", "label", "pred", "loss"], "abc", "b"),  # sheet name with """
        ("a\nb", ["x", "f", "label", "pred", "loss"], "abc", "b"),  # sheet name with a newline
        ("s", ["x", "f", "label", "pred", "loss"], INJECT + "\n" + INJECT, "b"),  # formula text
        ("s", ["x", "f", "label", "pred", "loss"], "abc", 'b"""' + INJECT),  # file name
        ("s", ["import", "torch", "float", "np", "self"], "abc", "b"),  # headers that are Python names
    ],
    ids=["header", "sheet-quotes", "sheet-newline", "formula", "file-name", "python-names"],
)
def test_issue_cases(tmp_path, monkeypatch, clean, sheet, heads, text, stem):
    monkeypatch.chdir(tmp_path)
    src, result = export_and_run(tmp_path / "out", sheet, heads, text, stem)
    assert skeleton(src) == clean[0]
    assert result == clean[1]
    assert not (tmp_path / "MARKER").exists()


names = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), include_characters="\n\t\r"), min_size=1, max_size=12
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sheet=names.filter(lambda s: not set(s) & set("[]:*?/\\") and s.strip() and s[0] != "'" and s[-1] != "'"),
    heads=st.lists(names, min_size=5, max_size=5),
    text=names,
    stem=names.filter(lambda s: "/" not in s and len(s.encode()) < 200),
)
def test_arbitrary_text_never_becomes_code(tmp_path_factory, clean, sheet, heads, text, stem):
    folder = tmp_path_factory.mktemp("hyp")
    try:
        src, result = export_and_run(folder, sheet, heads, text, stem)
    except XlmnistError:
        assume(False)  # the workbook itself did not compile (reader/compiler limits), nothing exported
    assert skeleton(src) == clean[0]
    assert result == clean[1]


def test_general_form_with_lookups_escapes_workbook_text(tmp_path, monkeypatch):
    """The general form with gathers: a hostile sheet name (in every K[...] index, comment and PARAMS_AT)
    and hostile header text inside the looked-up tables give a module with the clean one's statements and
    objective, and nothing runs."""
    monkeypatch.chdir(tmp_path)
    results = []
    for k, (sheet, head) in enumerate([("emb", "user"), ('a"""b\n' + INJECT[:20], INJECT)]):
        book, module = tmp_path / f"b{k}.xlsx", tmp_path / f"m{k}.py"
        lookup_book(book, "offset", sheet=sheet, headers=[head] * 10)
        assert export_module(book, out_path=module)[1] == "general"
        src = module.read_text(encoding="utf-8")
        spec = importlib.util.spec_from_file_location(f"_exported_lookup_{k}", module)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert mod.main([str(book), "--json"]) == 0
        results.append((skeleton(src), json.loads(buf.getvalue())))
    assert results[1] == results[0]
    assert not (tmp_path / "MARKER").exists()
