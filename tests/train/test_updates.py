"""Train/Step = real optimiser updates: SGD and Adam return the parameters after their last update and the
objective at them, checked against the same loop written by hand in torch; one epoch is one update."""

from __future__ import annotations

import openpyxl
import pytest
import torch
from openpyxl.workbook.defined_name import DefinedName

from xlmnist.compile import compile_workbook
from xlmnist.train.optim import train


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("updates") / "b.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "s"
    cells = {"A1": 0.5, "A2": -0.25, "B1": 2.0, "B2": 3.0, "C1": "=(A1*B1+A2*B2-1)^2+0.1*A1^2"}
    for ref, value in cells.items():
        ws[ref] = value
    for name, text in (("solver_opt", "s!$C$1"), ("solver_adj", "s!$A$1:$A$2"), ("solver_typ", "2")):
        ws.defined_names[name] = DefinedName(name, attr_text=text)
    wb.save(path)
    return compile_workbook(path)


def by_hand(model, name, lr, updates):
    ps = [p.clone().requires_grad_(True) for p in model.initial_params()]
    opt = torch.optim.SGD(ps, lr=lr) if name == "sgd" else torch.optim.Adam(ps, lr=lr)
    history = []
    for _ in range(updates):
        opt.zero_grad()
        obj = model.objective(ps)
        history.append(float(obj.detach()))
        obj.backward()
        opt.step()
    with torch.no_grad():
        history.append(float(model.objective(ps)))
    return [p.detach() for p in ps], history


@pytest.mark.parametrize("name, lr", [("sgd", 0.1), ("adam", 0.05)])
@pytest.mark.parametrize("updates", [1, 2, 5])
def test_sgd_and_adam_return_the_parameters_after_the_last_update(model, name, lr, updates):
    res = train(model, optimizer=name, lr=lr, epochs=updates, progress=False)
    want, history = by_hand(model, name, lr, updates)
    assert res.steps == updates
    torch.testing.assert_close(res.params[0], want[0], rtol=0, atol=0)
    assert res.objective == history[-1] and res.history == history
    assert res.initial_objective == history[0] and res.objective != res.initial_objective


def test_one_lbfgs_step_moves(model):
    res = train(model, optimizer="lbfgs", epochs=1, progress=False)
    assert res.steps == 1 and res.objective < res.initial_objective
    with torch.no_grad():
        assert float(model.objective(res.params)) == res.objective
