"""RAND, RANDBETWEEN, RANDARRAY: seeded samples drawn again at every evaluation (a dropout mask per step).

The dropout sheet: inputs X in A1:A6, one trainable weight per hidden unit in B1:B6 (H = X * w in C),
dropout ``IF(RAND()<0.5,0,H/0.5)`` in D, the loss ``(SUM(D) - 10)^2`` in F1.
"""

from __future__ import annotations

import json

import openpyxl
import pytest
import torch

from xlmnist.cli import main
from xlmnist.compile import compile_workbook
from xlmnist.compile.verify import verify
from xlmnist.errors import FormulaError

X = [1.0, 2.0, -0.5, 3.0, 0.25, 1.5]
W = [0.3, -0.2, 0.8, 0.1, 1.2, 0.5]


@pytest.fixture(scope="module")
def dropout(tmp_path_factory):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "S"
    for r, (x, w) in enumerate(zip(X, W), start=1):
        ws[f"A{r}"], ws[f"B{r}"] = x, w
        ws[f"C{r}"] = f"=A{r}*B{r}"
        ws[f"D{r}"] = f"=IF(RAND()<0.5,0,C{r}/0.5)"
    ws["E1"] = "=SUM(C1:C6)"  # no dropout
    ws["F1"] = "=(SUM(D1:D6)-10)^2"
    ws["G1"] = "=SUM(D1:D6)"
    ws["H1"], ws["H2"] = "=RANDBETWEEN(1,6)", "=SUM(_xlfn.RANDARRAY(2,3,-1,1))"
    ws["H3"] = "=SUM(_xlfn.RANDARRAY(4,5,1,3,TRUE))"
    path = tmp_path_factory.mktemp("dropout") / "dropout.xlsx"
    wb.save(path)
    return path


def _params():
    return [torch.tensor(W, dtype=torch.float64).reshape(6, 1).requires_grad_()]


def test_a_fresh_mask_per_call_the_same_for_the_same_seed(dropout):
    m = compile_workbook(dropout, objective="S!G1", params="S!B1:B6", seed=1)
    assert m.random and m.program_kind == "closures" and "RAND" in m.fallback_reason
    first = [float(m.objective(m.initial_params())) for _ in range(8)]
    assert len(set(first)) > 1  # a new sample each call
    m.reseed(1)
    assert [float(m.objective(m.initial_params())) for _ in range(8)] == first
    again = compile_workbook(dropout, objective="S!G1", params="S!B1:B6", seed=1)
    assert [float(again.objective(again.initial_params())) for _ in range(8)] == first
    d = m.evaluate(["S!D1:D6"], m.initial_params())["S!D1:D6"].reshape(-1)
    h = torch.tensor(X) * torch.tensor(W)
    kept = d != 0
    torch.testing.assert_close(d[kept], (2 * h.double())[kept])  # the kept units are H / 0.5


def test_the_mean_over_many_masks_is_the_no_dropout_value(dropout):
    m = compile_workbook(dropout, objective="S!G1", params="S!B1:B6", seed=0)
    with torch.no_grad():
        mean = sum(float(m.objective(m.initial_params())) for _ in range(4000)) / 4000
    full = float(m.evaluate(["S!E1"], m.initial_params())["S!E1"])
    assert full == pytest.approx(sum(x * w for x, w in zip(X, W)))
    assert mean == pytest.approx(full, rel=0.05)


def test_gradients_flow_through_the_kept_units_and_it_trains(dropout):
    m = compile_workbook(dropout, objective="S!F1", params="S!B1:B6", seed=3)
    (p,) = _params()
    for _ in range(5):
        m.reseed(7)
        d = m.evaluate(["S!D1:D6"], [p])["S!D1:D6"].reshape(-1).detach()
        m.reseed(7)  # the same mask again for the loss
        loss = m.objective([p])
        (g,) = torch.autograd.grad(loss, p)
        kept = (d != 0).double()
        want = 2 * (d.sum() - 10) * kept * torch.tensor(X, dtype=torch.float64) / 0.5
        torch.testing.assert_close(g.reshape(-1), want)

    def mean_loss():
        m.reseed(11)
        with torch.no_grad():
            return sum(float(m.objective([p])) for _ in range(500)) / 500

    before = mean_loss()
    m.reseed(0)
    opt = torch.optim.SGD([p], lr=0.005)
    for _ in range(300):  # SGD on a new mask each step
        opt.zero_grad()
        m.objective([p]).backward()
        opt.step()
    assert mean_loss() < before / 3  # the expected loss fell (dropout keeps it above 0)
    with torch.no_grad():  # the no-dropout output SUM(X*w) moved from 2.25 towards 10
        assert float((torch.tensor(X, dtype=torch.float64) * p.reshape(-1)).sum()) > 6


def test_randbetween_and_randarray(dropout):
    m = compile_workbook(dropout, objective="S!G1", params="S!B1:B6", seed=0)
    seen = set()
    for _ in range(200):
        got = m.evaluate(["S!H1:H3"], m.initial_params())["S!H1:H3"].reshape(-1).tolist()
        seen.add(got[0])
        assert -6 <= got[1] <= 6 and 20 <= got[2] <= 60 and float(got[2]).is_integer()
    assert seen == {1.0, 2.0, 3.0, 4.0, 5.0, 6.0}


def test_eval_json_marks_the_objective_random(dropout, capsys):
    argv = ["eval", str(dropout), "--objective", "S!G1", "--params", "S!B1:B6", "--json", "--seed", "5"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    assert first["random"] is True and json.loads(capsys.readouterr().out) == first
    assert main(["eval", str(dropout), "--objective", "S!E1", "--params", "S!B1:B6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["random"] is False


def test_verify_counts_random_cells(dropout):
    res = verify(dropout)
    # D1:D6, F1, G1, H1:H3 depend on RAND & co.; C1:C6 and E1 are compared (no cached values here)
    assert (res["cells"], res["random"], res["different"], res["uncached"]) == (18, 11, 0, 7)


def test_row_in_a_formula_over_the_data_rows_is_refused(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "S"
    ws["E1"] = 0.5
    for r in range(2, 6):
        ws[f"A{r}"], ws[f"B{r}"] = r, 1.0
        ws[f"C{r}"] = f"=A{r}*$E$1+ROW()"
    ws["F1"] = "=SUM(C2:C5)"
    wb.save(tmp_path / "d.xlsx")
    with pytest.raises(FormulaError, match=r"S!C2: ROW\(\) .*data rows"):
        compile_workbook(tmp_path / "d.xlsx", objective="S!F1", params="S!E1", data="S!A2:B5")
    m = compile_workbook(tmp_path / "d.xlsx", objective="S!F1", params="S!E1")  # no data range: fine
    assert float(m.objective(m.initial_params())) == pytest.approx(7 + 14)


def test_dropout_over_the_data_rows_draws_one_sample_per_row(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "S"
    ws["E1"] = 0.5
    for r in range(2, 6):
        ws[f"A{r}"], ws[f"B{r}"] = r, 1.0
        ws[f"C{r}"] = f"=IF(RAND()<0.5,0,A{r}*$E$1/0.5)"
    ws["F1"] = "=SUM(C2:C5)"
    wb.save(tmp_path / "d.xlsx")
    m = compile_workbook(tmp_path / "d.xlsx", objective="S!F1", params="S!E1", data="S!A2:B5", seed=0)
    rows = torch.ones(1000, 2, dtype=torch.float64)  # 1000 data rows: 1000 samples, each row 0 or 1
    got = [float(m.objective(m.initial_params(), rows)) for _ in range(50)]
    assert all(x.is_integer() for x in got) and len(set(got)) > 1
    assert sum(got) / len(got) == pytest.approx(500, rel=0.02)
