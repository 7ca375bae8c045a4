"""The general form writes an unrolled recurrence (a ScanPlan of the graph) as one ``for`` loop over its
rows (#16 item 2), not one statement per row: the unrolled optimiser sheets of
``tests/compile/recurrence_book.py`` export -> ``python model.py BOOK --json`` equals ``xlmnist eval``,
the hypergradient wrt the learning-rate cell equals the compiler's; what cannot be a loop is written
step by step and says so, in the module and in the command's output."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest
from test_general_form import ROOT, check, names
from test_round_trip import import_back

from xlmnist.compile import compile_workbook
from xlmnist.export.codegen import export_module

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compile"))
import recurrence_book  # noqa: E402

STEPS = 50


def forward_source(module: Path) -> str:
    src = module.read_text()
    return src[src.index("    def forward(") : src.index("\ndef read_constants(")]


@pytest.mark.parametrize("sheet", ["adam", "gd", "mom", "rms"])
def test_unrolled_optimiser_exports_as_one_loop(sheet, tmp_path):
    """50 rows of Adam / gradient descent / momentum / RMSProp: one loop whose body holds each member's
    formula once; the module equals eval, gradient (wrt the learning rate B1) included."""
    book = recurrence_book.build(tmp_path / f"{sheet}.xlsx", (sheet,), STEPS)
    notes: list[str] = []
    export_module(book, out_path=tmp_path / "m.py", notes=notes)
    check(book, tmp_path, "general")  # writes m.py again: run it, equal eval, gradients equal
    fwd = forward_source(tmp_path / "m.py")
    assert [x.strip() for x in fwd.splitlines() if x.strip().startswith("for ")] == [
        f"for r in range({4 if sheet != 'gd' else 3}, {STEPS + 4}):"
    ]
    plan = compile_workbook(book).compiler.graph.scans[0]
    assert fwd.count("[r] = _full(") == len(plan.members)  # each member's formula once, in the loop
    assert fwd.count(" = _full(") == len(plan.members) + 1  # and the objective: no statement per row
    assert len(notes) == 1 and "one for loop over rows" in notes[0]
    if sheet == "adam":
        assert "B[r] = _full((B[r - 1] - ((self.p0 * F[r]) / (torch.sqrt(_t(G[r])) + " in fwd
        assert "# adam!B4:B53  B3-$B$1*F4/(SQRT(G4)+$E$1)" in fwd
        assert "K['adam'][r:r + 1, 1:2]" in fwd  # A4 (the step number) moves with the row


def test_gd_loop_rows_where_members_start_on_different_rows(tmp_path):
    """gd's gradients start a row above the parameters (D3:E3 read the initial B3:C3): the later ones
    are guarded in the one loop, the cells above them seeded from the sheet."""
    book = recurrence_book.build(tmp_path / "gd.xlsx", ("gd",), 5)
    check(book, tmp_path, "general")
    fwd = forward_source(tmp_path / "m.py")
    assert "for r in range(3, 9):" in fwd and "if r >= 4:" in fwd
    assert "B = {3: K['gd'][3:4, 2:4]}" in fwd  # B3:C3, the initial parameters
    assert "torch.cat([D[r - 1], E[r - 1]], 1)" in fwd  # B4:C4 read D3:E3 side by side


def moving_average_book(path, rows=8):
    """A recurrence reading a range of its earlier rows (a window over the loop's own cells) and a column
    computed by another block (a named tensor read row by row): B_r = AVERAGE(B_(r-3):B_(r-1))*w + C_r."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "ma"
    ws["A1"] = 0.7
    for r in (2, 3, 4):
        ws[f"B{r}"] = r / 10.0
    for r in range(5, 5 + rows):
        ws[f"A{r}"] = r / 7.0
        ws[f"C{r}"] = f"=A{r}*$A$1"
        ws[f"B{r}"] = f"=AVERAGE(B{r - 3}:B{r - 1})*$A$1+C{r}"
    ws["D1"] = f"=B{4 + rows}^2"
    names(ws, "ma!$D$1", "ma!$A$1")
    wb.save(path)


def test_window_over_the_recurrence_and_a_computed_column(tmp_path):
    book = tmp_path / "ma.xlsx"
    moving_average_book(book)
    check(book, tmp_path, "general")
    fwd = forward_source(tmp_path / "m.py")
    assert fwd.count("for r in range(") == 1
    assert "torch.cat([B[r - 3], B[r - 2], B[r - 1]], 0).unfold(0, 3, 1)" in fwd
    assert "c5[r - 5:r - 4]" in fwd  # C5:C12, a block before the loop, row by row


def index_book(path, rows=6):
    """A recurrence that looks its own earlier cells up (INDEX over the rows above): no loop is written."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "ix"
    ws["A1"], ws["B2"], ws["B3"] = 0.5, 0.2, 0.3
    for r in range(4, 4 + rows):
        ws[f"A{r}"] = r / 10.0
        ws[f"B{r}"] = f"=INDEX(B{r - 2}:B{r - 1},2)*$A$1+A{r}"
    ws["C1"] = f"=B{3 + rows}^2"
    names(ws, "ix!$C$1", "ix!$A$1")
    wb.save(path)


def test_recurrence_that_cannot_be_a_loop_is_written_per_row_and_says_so(tmp_path):
    """A lookup over the recurrence's own cells: one statement per row, as before, equal to eval; the
    module's comment and the command's output say it is not a loop, and why."""
    book, module = tmp_path / "ix.xlsx", tmp_path / "m.py"
    index_book(book)
    assert compile_workbook(book).compiler.graph.scans  # a plan the compiler runs as a loop
    check(book, tmp_path, "general")
    fwd = forward_source(module)
    assert "for r in range(" not in fwd and fwd.count(" = _full(") == 7
    why = "(not written as a loop: ix!B4: a lookup over cells of the recurrence itself)"
    assert f"# ix!B4:B9: one statement per row below {why}" in fwd
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "xlmnist", "export", book, "-o", module],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert f"ix!B4:B9: one statement per row {why}" in r.stdout


def test_command_line_export_of_a_long_adam_sheet_prints_the_loop(tmp_path):
    """``xlmnist export`` says which recurrence became a loop; the module runs as a script and equals
    ``xlmnist eval``."""
    book, module = recurrence_book.build(tmp_path / "adam.xlsx", ("adam",), 200), tmp_path / "m.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(*args):
        r = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        return r.stdout

    out = run("-m", "xlmnist", "export", book, "-o", module)
    assert "(general form)" in out and "one for loop over rows 4..203" in out
    got = json.loads(run(module, book, "--json"))["objective"]
    want = json.loads(run("-m", "xlmnist", "eval", book, "--json"))["objective"]
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert len(module.read_text().splitlines()) < 200  # not 1,200 statements


def hostile_rnn(path, sheet):
    """The rnn recurrence on a sheet named ``sheet``."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = sheet
    ws["A1"], ws["B2"] = 0.5, 0.0
    for r in range(3, 8):
        ws[f"A{r}"] = r / 10.0
        ws[f"B{r}"] = f"=TANH(B{r - 1}*$A$1+A{r})"
    ws["C1"] = "=B7^2"
    q = "'" + sheet.replace("'", "''") + "'!"
    names(ws, f"{q}$C$1", f"{q}$A$1")
    wb.save(path)


def test_sheet_name_in_a_loop_stays_text(tmp_path):
    """The sheet name reaches the loop's comments and K[...] keys only through ``escape``: the module has
    exactly the statements of a clean export, runs and equals eval."""
    shapes = []
    for k, sheet in enumerate(["s", 'x\'";__import__(\'os\');"""#{}']):
        book, module = tmp_path / f"b{k}.xlsx", tmp_path / "m.py"
        hostile_rnn(book, sheet)
        check(book, tmp_path, "general")
        src = module.read_text()
        assert src.count("        for r in range(3, 8):\n") == 1
        shapes.append([type(n).__name__ for n in ast.walk(ast.parse(src)) if isinstance(n, ast.stmt)])
    assert shapes[0] == shapes[1]  # the name added no statement


@pytest.mark.parametrize("sheet", ["adam", "mom"])
def test_loop_module_weights_import_back(sheet, tmp_path):
    """The learning rate trained in torch through the loop module, imported into the workbook it came
    from (``import_into``: the module read with ast, never run): eval equals torch's objective."""
    book = recurrence_book.build(tmp_path / f"{sheet}.xlsx", (sheet,), STEPS)
    export_module(book, out_path=tmp_path / "m.py")
    assert import_back(tmp_path / "m.py", book, tmp_path)["params"] == [f"{sheet}!B1"]
