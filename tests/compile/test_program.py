"""Which program the objective runs (lowered or closures), why, and what XLMNIST_DEBUG shows of it."""

from __future__ import annotations

import openpyxl
import pytest
import torch
from openpyxl.workbook.defined_name import DefinedName

from xlmnist.compile import compile_workbook
from xlmnist.lessons import build_all
from xlmnist.xlsx.reader import read_workbook


@pytest.fixture(scope="module")
def lesson_books(tiny_mnist, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XLMNIST_DATA", str(tiny_mnist))
        return build_all(tmp_path_factory.mktemp("books"), rows=40)


def _model_sheets(path):
    wb = read_workbook(path)
    return [s for s in wb.order if wb.names.get((s, "XLMNIST_OBJECTIVE"))]


def test_every_generated_sheet_trains_on_the_lowered_program(lesson_books):
    """Every model sheet of the lesson workbooks runs as one lowered program with no block left to its
    closure, in float64 and in the float32 the trainer uses (the same source, validated in float64)."""
    seen = []
    for path in lesson_books:
        for sheet in _model_sheets(path):
            m64 = compile_workbook(path, sheet=sheet)
            m32 = m64.recompile(dtype=torch.float32)
            for m in (m64, m32):
                assert m.program_kind == "lowered", (path.name, sheet, m.fallback_reason)
                assert m.fallback_reason is None and m._prog.fallback == [], m._prog.notes
            assert m32._prog.source == m64._prog.source
            seen.append(sheet)
    assert {"linear", "simple_net", "linear10", "mlp"} <= set(seen), seen


def test_float32_softmax_uses_the_program_checked_in_float64(lesson_books):
    """linear10 (softmax and cross-entropy over ten classes): float32 rounding differs from the closures
    at ~1e-7, so the program is validated in float64 and reused; a float32 compile straight from the file
    (no float64 model at hand) builds its float64 twin itself."""
    path = next(p for p in lesson_books if p.name == "mnist.xlsx")
    m32 = compile_workbook(path, sheet="linear10", dtype=torch.float32)
    assert m32.program_kind == "lowered" and "cross_entropy" in m32._prog.source
    assert m32._twin is not None and m32._twin.dtype == torch.float64
    params = m32.initial_params()
    with torch.no_grad():
        assert float(m32.objective(params)) == pytest.approx(
            float(m32._twin.objective([p.double() for p in params])), rel=1e-5
        )


def test_closures_say_why(lesson_books, monkeypatch):
    path = next(p for p in lesson_books if p.name == "titanic.xlsx")
    monkeypatch.setenv("XLMNIST_LOWER", "0")
    m = compile_workbook(path, dtype=torch.float32)
    assert m.program_kind == "closures" and "XLMNIST_LOWER=0" in m.fallback_reason
    assert "XLMNIST_LOWER=0" in m.describe()


@pytest.mark.parametrize("level", [1, 2, 3])
def test_debug_levels(lesson_books, monkeypatch, capsys, level):
    """XLMNIST_DEBUG=1: blocks and the program kind; 2: also the generated source; 3: also every rewrite
    and fallback. On stderr (stdout is train --json's)."""
    path = next(p for p in lesson_books if p.name == "mnist.xlsx")
    monkeypatch.setenv("XLMNIST_DEBUG", str(level))
    compile_workbook(path, sheet="linear10")
    out, err = capsys.readouterr()
    assert out == ""
    assert "trainable-dependent" in err and "objective program: lowered" in err
    assert ("def program(env):" in err) == (level >= 2)
    assert ("softmax:" in err and "cross-entropy:" in err) == (level >= 3), err


def test_debug_shows_fallbacks(tmp_path, monkeypatch, capsys):
    """A block the lowering cannot handle runs its closure inside the program; level 3 says which and why."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Sheet"
    ws["A1"], ws["B1"], ws["C1"] = 0.5, "=ROUND(A1,3)*A1", "=B1*B1"
    ws.defined_names["solver_opt"] = DefinedName("solver_opt", attr_text="Sheet!$C$1")
    ws.defined_names["solver_adj"] = DefinedName("solver_adj", attr_text="Sheet!$A$1")
    wb.save(tmp_path / "f.xlsx")
    monkeypatch.setenv("XLMNIST_DEBUG", "3")
    m = compile_workbook(tmp_path / "f.xlsx")
    err = capsys.readouterr().err
    assert m.program_kind == "lowered" and m._prog.fallback != []
    assert "fallback: Sheet!B1 runs its compiled closure (ROUND)" in err, err
