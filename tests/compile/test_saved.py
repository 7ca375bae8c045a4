"""Excel's saved values stand in for a formula the compiler cannot translate when nothing it reads changes
(xlmnist.compile.saved): a data column prepared with LEN(), and the refusals where that would be wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import openpyxl
import pytest
import torch
from openpyxl.workbook.defined_name import DefinedName

from xlmnist import oracle
from xlmnist.compile import compile_workbook
from xlmnist.compile.verify import verify
from xlmnist.errors import FormulaError
from xlmnist.xlsx.writeback import write_cached_values

ROOT = Path(__file__).resolve().parents[2]
WORDS = ["ab", "abcd", "abcdef", "abcdefgh", "abcdefghij"]  # LEN: 2, 4, 6, 8, 10


def book(path, prep="LEN(B{r})", cached=True, data=False):
    """m!A1 the trainable cell; rows 3-7: a word, its length by ``prep`` (not translated), the squared error
    (C*A1 - 3)^2; E1 their sum. ``cached``: the file holds the saved values of C3:C7, as Excel writes them."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "m"
    ws["A1"] = 0.5
    for i, r in enumerate(range(3, 8)):
        ws[f"B{r}"] = WORDS[i]
        ws[f"C{r}"] = "=" + prep.format(r=r)
        ws[f"D{r}"] = f"=(C{r}*$A$1-3)^2"
        ws[f"F{r}"] = "=$A$1*2"  # a block that changes with the trainable cell
    ws["E1"] = "=SUM(D3:D7)"
    if data:
        ws.defined_names.add(DefinedName("xlmnist_data", attr_text="m!$B$3:$B$7", localSheetId=0))
    wb.save(path)
    if cached:
        write_cached_values(path, {"m!C3:C7": np.array([[float(len(w))] for w in WORDS])})
    return path


def compiled(path):
    return compile_workbook(path, sheet="m", objective="m!E1", params="m!A1")


def test_a_constant_column_of_an_unsupported_function_reads_the_saved_values(tmp_path):
    m = compiled(book(tmp_path / "b.xlsx"))
    a = torch.tensor([[0.5]], dtype=torch.float64, requires_grad=True)
    obj = m.objective([a])
    obj.backward()
    lengths = torch.tensor([2.0, 4, 6, 8, 10], dtype=torch.float64)
    assert float(obj.detach()) == float(((lengths * 0.5 - 3) ** 2).sum())
    assert float(a.grad) == pytest.approx(float((2 * (lengths * 0.5 - 3) * lengths).sum()), rel=1e-15)
    assert list(m.compiler.saved.values()) == ["m!C3: unsupported function LEN()"]
    assert m.program_kind == "lowered"  # the constant column is folded into the program like any constant
    res = verify(tmp_path / "b.xlsx")  # verify still says what is not compiled
    assert res["not_compiled"].get("unsupported function LEN()") == 5


def test_trains_to_the_least_squares_answer_and_says_so_at_debug_level(tmp_path):
    path = book(tmp_path / "b.xlsx")
    env = {"XLMNIST_DEBUG": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "xlmnist", "train", str(path), "--sheet", "m", "--objective", "m!E1",
         "--params", "m!A1", "--out", str(tmp_path / "t.xlsx"), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**env, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (
        "m!C3:C7: Excel's saved values, not compiled (unsupported function LEN(); it reads nothing"
        in proc.stderr
    )
    got = openpyxl.load_workbook(tmp_path / "t.xlsx")["m"]["A1"].value
    lengths = np.array([2.0, 4, 6, 8, 10])
    assert got == pytest.approx(3 * lengths.sum() / (lengths**2).sum(), rel=1e-12)


@pytest.mark.parametrize(
    "prep, cached, data, why",
    [
        ("LEN(B{r})", False, False, "no saved values (a file openpyxl wrote)"),
        ("LEN(B{r})+$A$1", True, False, "reads the trainable cell"),
        ("LEN(B{r})+RAND()*0", True, False, "random"),
        ("LEN(B{r})+F{r}*0", True, False, "reads a block that changes"),
        ("LEN(B{r})", True, True, "reads the data rows, which a dataset replaces"),
    ],
)
def test_refused_where_the_saved_values_could_be_wrong(tmp_path, prep, cached, data, why):
    path = book(tmp_path / "b.xlsx", prep, cached, data)
    with pytest.raises(FormulaError, match=r"m!C3: unsupported function LEN\(\)"):
        compiled(path)


@pytest.mark.libreoffice
def test_the_objective_equals_libreoffices(tmp_path):
    path = book(tmp_path / "b.xlsx", cached=False)
    fresh = oracle.recalc_file(path, tmp_path / "lo")  # LibreOffice computes LEN and saves its values
    m = compiled(fresh)
    assert float(m.objective(m.initial_params())) == oracle.read_values(fresh)["m"]["E1"]
