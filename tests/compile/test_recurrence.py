"""Running recurrences (issue #12 item 3): unrolled optimiser sheets (gradient descent, Adam, momentum,
RMSProp), each row computing the next parameters from the row above, evaluate exactly (LibreOffice, one
recalculation for the workbook) and train through the recurrence: the learning-rate cell's gradient
(hypergradient) is the one autograd gives through a hand-written torch loop."""

import math

import numpy as np
import openpyxl
import pytest
import torch
from openpyxl.workbook.defined_name import DefinedName

from xlmnist import oracle
from xlmnist.compile import compile_workbook
from xlmnist.errors import FormulaError

T = 60  # steps
X = [0.0, 1.0, 2.0, 3.0, 4.0]
Y = [1.1, 2.9, 5.2, 7.1, 8.8]
LR = {"gd": 0.03, "adam": 0.1, "mom": 0.01, "rms": 0.05}
B1, B2, EPS, MU, RHO = 0.9, 0.999, 1e-8, 0.8, 0.9


def _names(ws, sheet, opt, adj):
    for name, text in (("solver_opt", f"{sheet}!{opt}"), ("solver_adj", adj), ("solver_typ", "2")):
        ws.defined_names[name] = DefinedName(name, attr_text=text)


def _data(ws):
    for i, (x, y) in enumerate(zip(X, Y)):
        ws[f"X{i + 2}"], ws[f"Y{i + 2}"] = x, y


def _gd(wb):
    """Linear regression y ~ a*x + b: a (B), b (C), their gradients (D, E); a running sum (Z) nothing reads."""
    ws = wb.create_sheet("gd")
    _data(ws)
    ws["A1"], ws["B1"] = "lr", LR["gd"]
    ws["B3"], ws["C3"], ws["Z3"] = 0.5, 0.0, 0.0
    last = 3 + T
    for r in range(3, last + 1):
        ws[f"A{r}"] = r - 3
        if r > 3:
            ws[f"B{r}"] = f"=B{r - 1}-$B$1*D{r - 1}"
            ws[f"C{r}"] = f"=C{r - 1}-$B$1*E{r - 1}"
            ws[f"Z{r}"] = f"=Z{r - 1}+A{r}"
        ws[f"D{r}"] = f"=2*SUMPRODUCT((B{r}*$X$2:$X$6+C{r}-$Y$2:$Y$6)*$X$2:$X$6)/5"
        ws[f"E{r}"] = f"=2*SUMPRODUCT(B{r}*$X$2:$X$6+C{r}-$Y$2:$Y$6)/5"
    ws["G1"] = f"=SUMXMY2(B{last}*X2:X6+C{last},Y2:Y6)/5"
    _names(ws, "gd", "$G$1", "gd!$B$1")


def _adam(wb):
    """Adam on f(w) = (w-3)^2 + w^4/10: w (B), g (C), m (D), v (E), m-hat (F), v-hat (G); t in A."""
    ws = wb.create_sheet("adam")
    ws["A1"], ws["B1"], ws["C1"], ws["D1"], ws["E1"] = "lr", LR["adam"], B1, B2, EPS
    ws["B3"], ws["D3"], ws["E3"] = -1.0, 0.0, 0.0
    for r in range(4, 4 + T):
        ws[f"A{r}"] = r - 3
        ws[f"C{r}"] = f"=2*(B{r - 1}-3)+0.4*B{r - 1}^3"
        ws[f"D{r}"] = f"=$C$1*D{r - 1}+(1-$C$1)*C{r}"
        ws[f"E{r}"] = f"=$D$1*E{r - 1}+(1-$D$1)*C{r}^2"
        ws[f"F{r}"] = f"=D{r}/(1-$C$1^A{r})"
        ws[f"G{r}"] = f"=E{r}/(1-$D$1^A{r})"
        ws[f"B{r}"] = f"=B{r - 1}-$B$1*F{r}/(SQRT(G{r})+$E$1)"
    last = 3 + T
    ws["I1"] = f"=(B{last}-3)^2+B{last}^4/10"
    _names(ws, "adam", "$I$1", "adam!$B$1")


def _mom(wb):
    """Momentum on the regression, the two parameters side by side (one copied block each for w and v)."""
    ws = wb.create_sheet("mom")
    _data(ws)
    ws["A1"], ws["B1"], ws["C1"] = "lr", LR["mom"], MU
    ws["B3"], ws["C3"], ws["D3"], ws["E3"] = 0.5, 0.0, 0.0, 0.0
    for r in range(4, 4 + T):
        ws[f"F{r}"] = f"=2*SUMPRODUCT((B{r - 1}*$X$2:$X$6+C{r - 1}-$Y$2:$Y$6)*$X$2:$X$6)/5"
        ws[f"G{r}"] = f"=2*SUMPRODUCT(B{r - 1}*$X$2:$X$6+C{r - 1}-$Y$2:$Y$6)/5"
        for w, v, g in (("B", "D", "F"), ("C", "E", "G")):
            ws[f"{v}{r}"] = f"=$C$1*{v}{r - 1}+{g}{r}"
            ws[f"{w}{r}"] = f"={w}{r - 1}-$B$1*{v}{r}"
    last = 3 + T
    ws["I1"] = f"=SUMXMY2(B{last}*X2:X6+C{last},Y2:Y6)/5"
    _names(ws, "mom", "$I$1", "mom!$B$1")


def _rms(wb):
    """RMSProp on f(w) = (w-3)^2 + w^4/10: w (B), g (C), s (D)."""
    ws = wb.create_sheet("rms")
    ws["A1"], ws["B1"], ws["C1"], ws["D1"] = "lr", LR["rms"], RHO, EPS
    ws["B3"], ws["D3"] = -1.0, 0.0
    for r in range(4, 4 + T):
        ws[f"C{r}"] = f"=2*(B{r - 1}-3)+0.4*B{r - 1}^3"
        ws[f"D{r}"] = f"=$C$1*D{r - 1}+(1-$C$1)*C{r}^2"
        ws[f"B{r}"] = f"=B{r - 1}-$B$1*C{r}/(SQRT(D{r})+$D$1)"
    last = 3 + T
    ws["I1"] = f"=(B{last}-3)^2+B{last}^4/10"
    _names(ws, "rms", "$I$1", "rms!$B$1")


# ---- the same loops in torch -------------------------------------------------------------------------
def _reg_grad(a, b):
    x, y = torch.tensor(X, dtype=torch.float64), torch.tensor(Y, dtype=torch.float64)
    e = a * x + b - y
    return 2 * (e * x).sum() / 5, 2 * e.sum() / 5, ((e**2).sum() / 5)


def _f_grad(w):
    return 2 * (w - 3) + 0.4 * w**3


def _torch(sheet, lr):
    if sheet == "gd":
        a, b = torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
        for _ in range(T):
            ga, gb, _ = _reg_grad(a, b)
            a, b = a - lr * ga, b - lr * gb
        return _reg_grad(a, b)[2], a
    if sheet == "mom":
        a = b = va = vb = torch.tensor(0.0, dtype=torch.float64)
        a = a + 0.5
        for _ in range(T):
            ga, gb, _ = _reg_grad(a, b)
            va, vb = MU * va + ga, MU * vb + gb
            a, b = a - lr * va, b - lr * vb
        return _reg_grad(a, b)[2], a
    w, m, v = (torch.tensor(x, dtype=torch.float64) for x in (-1.0, 0.0, 0.0))
    for t in range(1, T + 1):
        g = _f_grad(w)
        if sheet == "adam":
            m, v = B1 * m + (1 - B1) * g, B2 * v + (1 - B2) * g**2
            w = w - lr * (m / (1 - B1**t)) / (torch.sqrt(v / (1 - B2**t)) + EPS)
        else:
            v = RHO * v + (1 - RHO) * g**2
            w = w - lr * g / (torch.sqrt(v) + EPS)
    return (w - 3) ** 2 + w**4 / 10, w


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for make in (_gd, _adam, _mom, _rms):
        make(wb)
    path = tmp_path_factory.mktemp("recurrence") / "optimisers.xlsx"
    wb.save(path)
    return path


@pytest.mark.parametrize("sheet", ["gd", "adam", "mom", "rms"])
def test_hypergradient_matches_torch(book, sheet):
    model = compile_workbook(book, sheet=sheet)
    lr = model.initial_params()[0].requires_grad_()
    loss = model.objective([lr])
    loss.backward()
    lr_t = torch.tensor(LR[sheet], dtype=torch.float64, requires_grad=True)
    want, _ = _torch(sheet, lr_t)
    want.backward()
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-12)
    assert float(lr.grad) == pytest.approx(float(lr_t.grad), rel=1e-9)


def test_train_the_learning_rate(book):
    """Tuning lr by its hypergradient closes most of the gap to the least-squares optimum."""
    model = compile_workbook(book, sheet="gd")
    lr = model.initial_params()[0]
    first = float(model.objective([lr]))
    a, b = np.polyfit(X, Y, 1)
    best = float(np.mean((a * np.array(X) + b - np.array(Y)) ** 2))
    opt = torch.optim.Adam([lr.requires_grad_()], lr=0.002)
    for _ in range(40):
        opt.zero_grad()
        model.objective([lr]).backward()
        opt.step()
    last = float(model.objective([lr.detach()]))
    assert best <= last < best + 0.5 * (first - best)
    assert float(lr.detach()) > LR["gd"]


@pytest.mark.libreoffice
def test_values_match_libreoffice(book):
    lo = oracle.recalc(book)
    for sheet, cols, objective in (
        ("gd", "BCDEZ", "G1"),
        ("adam", "BCDEFG", "I1"),
        ("mom", "BCDEFG", "I1"),
        ("rms", "BCD", "I1"),
    ):
        model = compile_workbook(book, sheet=sheet)
        refs = [f"{sheet}!{c}4:{c}{3 + T}" for c in cols] + [f"{sheet}!{objective}"]
        got = model.evaluate(refs, model.initial_params())
        for ref in refs:
            cells = ref.split("!")[1]
            if ":" in cells:
                c, r1 = cells[0], 4
                want = [lo[sheet][f"{c}{r}"] for r in range(r1, 4 + T)]
            else:
                want = [lo[sheet][cells]]
            have = got[ref].reshape(-1).numpy()
            assert all(isinstance(x, float) and math.isfinite(x) for x in want), ref
            np.testing.assert_allclose(have, want, rtol=1e-12, atol=1e-14, err_msg=ref)


def test_too_long_recurrence_is_reported_only_when_compiled(tmp_path, monkeypatch):
    """A recurrence longer than the split limit stays one block: compiling it names it; an objective
    that does not read it compiles."""
    from xlmnist.formula import cycles

    monkeypatch.setattr(cycles, "MAX_SPLIT_CELLS", 4)
    monkeypatch.setattr(cycles, "MAX_STEPS", 8)
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "s"
    ws["A1"], ws["B1"] = 0.0, 2.0
    for r in range(2, 22):
        ws[f"A{r}"] = f"=A{r - 1}+1"
    ws["C1"], ws["C2"] = "=B1^2", "=A21*B1"
    _names(ws, "s", "$C$1", "s!$B$1")
    wb.save(tmp_path / "long.xlsx")
    model = compile_workbook(tmp_path / "long.xlsx")
    assert float(model.objective(model.initial_params())) == 4.0
    with pytest.raises(FormulaError, match=r"s!A2: .*\(a running recurrence\) over more than"):
        compile_workbook(tmp_path / "long.xlsx", objective="s!C2")


def test_recurrence_along_rows_is_split_into_columns(tmp_path):
    """A hidden state copied right (``C1 = TANH(B1*w+0.1)``), three sequences in three rows: one step
    per column, vectorised over the rows; value and gradient as a torch loop."""
    from openpyxl.utils import get_column_letter

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "s"
    ws["A5"] = 0.9
    for r in range(1, 4):
        ws.cell(r, 1, float(r))
        for c in range(2, 27):
            ws.cell(r, c, f"=TANH({get_column_letter(c - 1)}{r}*$A$5+0.1)")
    ws["A7"] = "=SUM(Z1:Z3)"
    _names(ws, "s", "$A$7", "s!$A$5")
    wb.save(tmp_path / "rnn.xlsx")
    model = compile_workbook(tmp_path / "rnn.xlsx")
    assert len(model.compiler.graph.blocks) == 26  # 25 steps of 3 rows each, and the objective
    w = model.initial_params()[0].requires_grad_()
    loss = model.objective([w])
    loss.backward()
    wt = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    h = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    for _ in range(25):
        h = torch.tanh(h * wt + 0.1)
    h.sum().backward()
    assert float(loss.detach()) == pytest.approx(float(h.sum().detach()), rel=1e-13)
    assert float(w.grad) == pytest.approx(float(wt.grad), rel=1e-12)
