"""Running recurrences (issue #12 item 3): unrolled optimiser sheets (gradient descent, Adam, momentum,
RMSProp), each row computing the next parameters from the row above, evaluate exactly (LibreOffice, one
recalculation for the workbook) and train through the recurrence: the learning-rate cell's gradient
(hypergradient) is the one autograd gives through a hand-written torch loop."""

import math
import sys
from pathlib import Path

import numpy as np
import openpyxl
import pytest
import torch

from xlmnist import oracle
from xlmnist.compile import compile_workbook
from xlmnist.errors import FormulaError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recurrence_book  # noqa: E402
from recurrence_book import LR, T, X, Y, names  # noqa: E402

_names = names


def _torch(sheet, lr):
    return recurrence_book.torch_loop(sheet, lr)


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    return recurrence_book.build(tmp_path_factory.mktemp("recurrence") / "optimisers.xlsx")


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


# ---- one loop over the rows, each formula compiled once (xlmnist.compile.scan) -------------------------
def _book(tmp_path, sheets, steps):
    return recurrence_book.build(tmp_path / f"b{steps}.xlsx", sheets, steps)


@pytest.mark.parametrize("sheet", ["gd", "adam", "mom", "rms"])
def test_recurrence_is_one_loop_in_the_program(book, sheet, monkeypatch, capsys):
    """The generated program calls one function with a loop over the rows; the recurrence's cells are
    items of its lists (no block closure per row), and the step-by-step compile gives the same cells."""
    monkeypatch.setenv("XLMNIST_DEBUG", "3")
    m = compile_workbook(book, sheet=sheet)
    err = capsys.readouterr().err
    src = m._prog.source
    assert m.program_kind == "lowered" and src.count("for r in range(") in (1, 2), src
    assert f"running recurrence {sheet}!" in err and "one loop over its" in err, err
    assert not any("fallback" in n and "recurrence" in n for n in m._prog.notes), (
        m._prog.notes
    )  # only the SUMXMY2 losses run their closures
    cols, _ = recurrence_book.CHECKED[sheet]
    refs = [f"{sheet}!{c}4:{c}{3 + T}" for c in cols]
    got = m.evaluate(refs, m.initial_params())
    monkeypatch.setenv("XLMNIST_SCAN", "0")  # one block per row, each compiled on its own
    ref = compile_workbook(book, sheet=sheet)
    assert "def scan" not in ref._prog.source
    want = ref.evaluate(refs, ref.initial_params())
    for r in refs:
        torch.testing.assert_close(got[r], want[r], rtol=1e-13, atol=1e-15)
    f32 = m.recompile(dtype=torch.float32)  # the same program, retargeted
    assert f32.program_kind == "lowered" and "def scan" in f32._prog.source
    v64, v32 = float(m.objective(m.initial_params())), float(f32.objective(f32.initial_params()))
    assert v32 == pytest.approx(v64, rel=1e-4)


def test_each_formula_is_compiled_once(tmp_path, monkeypatch):
    """Twice the rows, the same number of formula nodes compiled (the rows cost only bookkeeping)."""
    from xlmnist.compile.compiler import Compiler

    counts = []
    for steps in (20, 40):
        calls = [0]
        real = Compiler.expr

        def counting(self, node, b, real=real, calls=calls):
            calls[0] += 1
            return real(self, node, b)

        monkeypatch.setattr(Compiler, "expr", counting)
        m = compile_workbook(_book(tmp_path, ["adam", "gd"], steps), sheet="adam")
        monkeypatch.setattr(Compiler, "expr", real)
        assert float(m.objective(m.initial_params())) > 0
        counts.append(calls[0])
    assert counts[0] == counts[1], counts


def test_a_window_of_earlier_rows_runs_as_the_loops_closure(tmp_path, monkeypatch, capsys):
    """A moving average over the three rows above (``B6 = w*AVERAGE(B3:B5) + A6``): the loop reads a
    range of its own earlier rows, which the program does not lower: the loop runs as its compiled
    closure (announced), with the values and gradient of a torch loop."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "s"
    ws["D1"] = 0.9
    n = 40
    for r in range(3, 3 + n):
        ws[f"A{r}"] = math.sin(r)
        if r < 6:
            ws[f"B{r}"] = float(r - 2)
        else:
            ws[f"B{r}"] = f"=$D$1*AVERAGE(B{r - 3}:B{r - 1})+A{r}"
    ws["E1"] = f"=B{2 + n}^2"
    names(ws, "s", "$E$1", "s!$D$1")
    wb.save(tmp_path / "ma.xlsx")
    monkeypatch.setenv("XLMNIST_DEBUG", "3")
    m = compile_workbook(tmp_path / "ma.xlsx")
    err = capsys.readouterr().err
    assert "one loop over its rows: a range over the recurrence's cells" in err, err
    w = m.initial_params()[0].requires_grad_()
    loss = m.objective([w])
    loss.backward()
    wt = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    b = [torch.tensor(float(x), dtype=torch.float64) for x in (1, 2, 3)]
    for r in range(6, 3 + n):
        b.append(wt * (b[-3] + b[-2] + b[-1]) / 3 + math.sin(r))
    (b[-1] ** 2).backward()
    assert float(loss.detach()) == pytest.approx(float((b[-1] ** 2).detach()), rel=1e-12)
    assert float(w.grad) == pytest.approx(float(wt.grad), rel=1e-11)


def test_rand_in_a_recurrence_is_compiled_step_by_step(tmp_path, monkeypatch, capsys):
    """A recurrence with RAND() in its formula (noise per row) is compiled row by row, as before: said."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "s"
    ws["D1"], ws["B2"] = 0.5, 1.0
    for r in range(3, 13):
        ws[f"B{r}"] = f"=B{r - 1}*$D$1+RAND()*0"
    ws["E1"] = "=B12"
    names(ws, "s", "$E$1", "s!$D$1")
    wb.save(tmp_path / "noise.xlsx")
    monkeypatch.setenv("XLMNIST_DEBUG", "3")
    m = compile_workbook(tmp_path / "noise.xlsx", seed=1)
    err = capsys.readouterr().err
    assert "runs step by step (RAND() or the data rows in its formulas)" in err, err
    assert float(m.objective(m.initial_params())) == pytest.approx(0.5**10, rel=1e-12)


def test_members_of_different_lengths_and_empty_cells_around_them(tmp_path, monkeypatch):
    """Two columns that read each other's row above, one three rows shorter (the longer one then reads
    the empty cells below it), the shorter one starting from an empty cell: one lowered loop per stretch
    of rows, the same cells, value and gradient as the rows compiled one by one."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "s"
    ws["A1"], ws["B2"] = 0.3, 1.0
    for r in range(3, 21):
        ws[f"B{r}"] = f"=B{r - 1}*$A$1+D{r - 1}"
    for r in range(3, 18):
        ws[f"D{r}"] = f"=TANH(B{r})*0.5+D{r - 1}*0.1"
    ws["G1"] = "=B20+D17"
    names(ws, "s", "$G$1", "s!$A$1")
    wb.save(tmp_path / "two.xlsx")
    m = compile_workbook(tmp_path / "two.xlsx")
    src = m._prog.source
    assert src.count("for r in range(") == 2 and ".extend([" in src and m._prog.fallback == [], src
    monkeypatch.setenv("XLMNIST_SCAN", "0")
    ref = compile_workbook(tmp_path / "two.xlsx")
    refs = ["s!B3:B20", "s!D3:D17"]
    got, want = m.evaluate(refs, m.initial_params()), ref.evaluate(refs, ref.initial_params())
    for r in refs:
        torch.testing.assert_close(got[r], want[r], rtol=1e-14, atol=0)
    grads = []
    for model in (m, ref):
        w = model.initial_params()[0].requires_grad_()
        model.objective([w]).backward()
        grads.append(float(w.grad))
    assert grads[0] == pytest.approx(grads[1], rel=1e-13)
