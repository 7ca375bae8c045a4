"""Unrolled optimiser sheets as the course writes them (each row computes the next parameters from the row
above), and the same loops in torch. Used by ``tests/compile/test_recurrence.py`` and
``bench/bench_recurrence.py``.

* ``gd``: gradient descent on a linear regression y ~ a*x + b: a (B), b (C), their gradients (D, E, the
  gradient row 3 beside the initial values), a running sum (Z) nothing reads;
* ``adam``: Adam on f(w) = (w-3)^2 + w^4/10: w (B), g (C), m (D), v (E), m-hat (F), v-hat (G), t in A;
* ``mom``: momentum on the regression, the two parameters side by side (one copied block for w, one for v);
* ``rms``: RMSProp on f: w (B), g (C), s (D).

Each sheet's learning rate (B1) is its trainable cell (Solver's ``solver_adj``), the loss after the last
step its objective: tuning it by gradient is a hypergradient through the whole unrolled loop.
"""

from __future__ import annotations

import torch
from openpyxl.workbook.defined_name import DefinedName

T = 60  # steps
X = [0.0, 1.0, 2.0, 3.0, 4.0]
Y = [1.1, 2.9, 5.2, 7.1, 8.8]
LR = {"gd": 0.03, "adam": 0.1, "mom": 0.01, "rms": 0.05}
B1, B2, EPS, MU, RHO = 0.9, 0.999, 1e-8, 0.8, 0.9
SHEETS = ("gd", "adam", "mom", "rms")
CHECKED = {"gd": ("BCDEZ", "G1"), "adam": ("BCDEFG", "I1"), "mom": ("BCDEFG", "I1"), "rms": ("BCD", "I1")}


def names(ws, sheet, opt, adj):
    for name, text in (("solver_opt", f"{sheet}!{opt}"), ("solver_adj", adj), ("solver_typ", "2")):
        ws.defined_names[name] = DefinedName(name, attr_text=text)


def _data(ws):
    for i, (x, y) in enumerate(zip(X, Y)):
        ws[f"X{i + 2}"], ws[f"Y{i + 2}"] = x, y


def gd(wb, steps: int = T):
    ws = wb.create_sheet("gd")
    _data(ws)
    ws["A1"], ws["B1"] = "lr", LR["gd"]
    ws["B3"], ws["C3"], ws["Z3"] = 0.5, 0.0, 0.0
    last = 3 + steps
    for r in range(3, last + 1):
        ws[f"A{r}"] = r - 3
        if r > 3:
            ws[f"B{r}"] = f"=B{r - 1}-$B$1*D{r - 1}"
            ws[f"C{r}"] = f"=C{r - 1}-$B$1*E{r - 1}"
            ws[f"Z{r}"] = f"=Z{r - 1}+A{r}"
        ws[f"D{r}"] = f"=2*SUMPRODUCT((B{r}*$X$2:$X$6+C{r}-$Y$2:$Y$6)*$X$2:$X$6)/5"
        ws[f"E{r}"] = f"=2*SUMPRODUCT(B{r}*$X$2:$X$6+C{r}-$Y$2:$Y$6)/5"
    ws["G1"] = f"=SUMXMY2(B{last}*X2:X6+C{last},Y2:Y6)/5"
    names(ws, "gd", "$G$1", "gd!$B$1")


def adam(wb, steps: int = T):
    ws = wb.create_sheet("adam")
    ws["A1"], ws["B1"], ws["C1"], ws["D1"], ws["E1"] = "lr", LR["adam"], B1, B2, EPS
    ws["B3"], ws["D3"], ws["E3"] = -1.0, 0.0, 0.0
    for r in range(4, 4 + steps):
        ws[f"A{r}"] = r - 3
        ws[f"C{r}"] = f"=2*(B{r - 1}-3)+0.4*B{r - 1}^3"
        ws[f"D{r}"] = f"=$C$1*D{r - 1}+(1-$C$1)*C{r}"
        ws[f"E{r}"] = f"=$D$1*E{r - 1}+(1-$D$1)*C{r}^2"
        ws[f"F{r}"] = f"=D{r}/(1-$C$1^A{r})"
        ws[f"G{r}"] = f"=E{r}/(1-$D$1^A{r})"
        ws[f"B{r}"] = f"=B{r - 1}-$B$1*F{r}/(SQRT(G{r})+$E$1)"
    last = 3 + steps
    ws["I1"] = f"=(B{last}-3)^2+B{last}^4/10"
    names(ws, "adam", "$I$1", "adam!$B$1")


def mom(wb, steps: int = T):
    ws = wb.create_sheet("mom")
    _data(ws)
    ws["A1"], ws["B1"], ws["C1"] = "lr", LR["mom"], MU
    ws["B3"], ws["C3"], ws["D3"], ws["E3"] = 0.5, 0.0, 0.0, 0.0
    for r in range(4, 4 + steps):
        ws[f"F{r}"] = f"=2*SUMPRODUCT((B{r - 1}*$X$2:$X$6+C{r - 1}-$Y$2:$Y$6)*$X$2:$X$6)/5"
        ws[f"G{r}"] = f"=2*SUMPRODUCT(B{r - 1}*$X$2:$X$6+C{r - 1}-$Y$2:$Y$6)/5"
        for w, v, g in (("B", "D", "F"), ("C", "E", "G")):
            ws[f"{v}{r}"] = f"=$C$1*{v}{r - 1}+{g}{r}"
            ws[f"{w}{r}"] = f"={w}{r - 1}-$B$1*{v}{r}"
    last = 3 + steps
    ws["I1"] = f"=SUMXMY2(B{last}*X2:X6+C{last},Y2:Y6)/5"
    names(ws, "mom", "$I$1", "mom!$B$1")


def rms(wb, steps: int = T):
    ws = wb.create_sheet("rms")
    ws["A1"], ws["B1"], ws["C1"], ws["D1"] = "lr", LR["rms"], RHO, EPS
    ws["B3"], ws["D3"] = -1.0, 0.0
    for r in range(4, 4 + steps):
        ws[f"C{r}"] = f"=2*(B{r - 1}-3)+0.4*B{r - 1}^3"
        ws[f"D{r}"] = f"=$C$1*D{r - 1}+(1-$C$1)*C{r}^2"
        ws[f"B{r}"] = f"=B{r - 1}-$B$1*C{r}/(SQRT(D{r})+$D$1)"
    last = 3 + steps
    ws["I1"] = f"=(B{last}-3)^2+B{last}^4/10"
    names(ws, "rms", "$I$1", "rms!$B$1")


BUILD = {"gd": gd, "adam": adam, "mom": mom, "rms": rms}


def build(path, sheets=SHEETS, steps: int = T):
    """A workbook with the given optimiser sheets of ``steps`` rows each, saved to ``path``."""
    import openpyxl

    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for s in sheets:
        BUILD[s](wb, steps)
    wb.save(path)
    return path


# ---- the same loops in torch -------------------------------------------------------------------------
def _reg_grad(a, b):
    x, y = torch.tensor(X, dtype=a.dtype), torch.tensor(Y, dtype=a.dtype)
    e = a * x + b - y
    return 2 * (e * x).sum() / 5, 2 * e.sum() / 5, ((e**2).sum() / 5)


def _f_grad(w):
    return 2 * (w - 3) + 0.4 * w**3


def torch_loop(sheet, lr, steps: int = T):
    """(the sheet's objective, the last parameter) of the same loop written by hand, from ``lr`` (a 0-d
    float64 tensor)."""
    f64 = torch.float64
    if sheet == "gd":
        a, b = torch.tensor(0.5, dtype=f64), torch.tensor(0.0, dtype=f64)
        for _ in range(steps):
            ga, gb, _ = _reg_grad(a, b)
            a, b = a - lr * ga, b - lr * gb
        return _reg_grad(a, b)[2], a
    if sheet == "mom":
        a = b = va = vb = torch.tensor(0.0, dtype=f64)
        a = a + 0.5
        for _ in range(steps):
            ga, gb, _ = _reg_grad(a, b)
            va, vb = MU * va + ga, MU * vb + gb
            a, b = a - lr * va, b - lr * vb
        return _reg_grad(a, b)[2], a
    w, m, v = (torch.tensor(x, dtype=f64) for x in (-1.0, 0.0, 0.0))
    for t in range(1, steps + 1):
        g = _f_grad(w)
        if sheet == "adam":
            m, v = B1 * m + (1 - B1) * g, B2 * v + (1 - B2) * g**2
            w = w - lr * (m / (1 - B1**t)) / (torch.sqrt(v / (1 - B2**t)) + EPS)
        else:
            v = RHO * v + (1 - RHO) * g**2
            w = w - lr * g / (torch.sqrt(v) + EPS)
    return (w - 3) ** 2 + w**4 / 10, w
