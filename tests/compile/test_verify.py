"""``xlmnist eval`` without trainable cells and ``xlmnist verify``: every compiled formula cell against
the values the file cached and against a forced LibreOffice recalculation."""

from __future__ import annotations

import json

import openpyxl
import pytest
import torch

from xlmnist.cli import main
from xlmnist.compile import compile_workbook


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
