"""The general export form (#16): sheets that are not affine/activation stacks export to a straight-line
forward over named tensors that equals ``xlmnist eval`` to 1e-12 in float64, gradients included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest
import torch
from openpyxl.workbook.defined_name import DefinedName

from xlmnist.compile import compile_workbook
from xlmnist.export.codegen import export_module
from xlmnist.export.translate import Unsupported

ROOT = Path(__file__).resolve().parents[2]


def names(ws, objective, params):
    ws.defined_names["xlmnist_objective"] = DefinedName("xlmnist_objective", attr_text=objective)
    ws.defined_names["xlmnist_params"] = DefinedName("xlmnist_params", attr_text=params)


def conv_book(path):
    """A 3x3 convolution over a 6x6 image (2-D sliding SUMPRODUCT), ReLU, squared error to a target."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "conv"
    for r in range(1, 7):
        for c in range(1, 7):
            ws.cell(r, c, ((r * 7 + c * 3) % 11) / 10.0)
    for r in range(1, 4):
        for c in range(8, 11):
            # + 0.0123: no pre-activation is exactly 0 (at a ReLU's kink the gradient would depend on the
            # summation order's rounding: conv2d and SUMPRODUCT may land on different sides of it)
            ws.cell(r, c, ((r + c) % 5 - 2) / 10.0 + 0.0123)
    for r in range(10, 14):
        for c in range(1, 5):
            ws.cell(r, c, f"=MAX(0,SUMPRODUCT({_a(r - 9, c)}:{_a(r - 7, c + 2)},$H$1:$J$3))")
            ws.cell(r, c + 5, ((r + c) % 3) / 4.0)
            ws.cell(r, c + 10, f"=({_a(r, c)}-{_a(r, c + 5)})^2")
    ws["A16"] = "=AVERAGE(K10:N13)"
    names(ws, "conv!$A$16", "conv!$H$1:$J$3")
    wb.save(path)


def embed_book(path):
    """An embedding/bias sheet: per-row user and item factor rows (3 factors) dot product plus biases."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "emb"
    for r in range(2, 8):  # users' factors B2:D7, bias E2:E7; items' factors G2:I7, bias J2:J7
        for c in range(2, 6):
            ws.cell(r, c, ((r * 3 + c) % 7 - 3) / 10.0)
            ws.cell(r, c + 5, ((r + c * 5) % 7 - 3) / 10.0)
    for r in range(10, 16):
        ws.cell(r, 1, float((r * 5) % 4))  # the rating
        ws.cell(r, 2, f"=SUMPRODUCT(B{r - 8}:D{r - 8},G{r - 8}:I{r - 8})+E{r - 8}+J{r - 8}")
        ws.cell(r, 3, f"=(B{r}-A{r})^2")
    ws["A18"] = "=SQRT(AVERAGE(C10:C15))"
    names(ws, "emb!$A$18", "emb!$B$2:$E$7,emb!$G$2:$J$7")
    wb.save(path)


def _a(r, c):
    return f"{openpyxl.utils.get_column_letter(c)}{r}"


def check(book, tmp_path, form):
    module = tmp_path / "m.py"
    path, got = export_module(book, out_path=module)
    assert got == form
    if form == "layer":  # its own script checks; the gradient check below is for the general form
        form = None
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, module, book, "--json"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    cm = compile_workbook(book)
    params = [p.detach().clone().requires_grad_(True) for p in cm.initial_params()]
    obj = cm.objective(params)
    assert json.loads(r.stdout)["objective"] == pytest.approx(obj.item(), rel=1e-12, abs=1e-15)
    if form is None:
        return
    grads = torch.autograd.grad(obj, params)
    ns = {"__name__": "exported"}
    exec(compile(module.read_text(), str(module), "exec"), ns)  # noqa: S102 - the module this test generated
    model = ns["Model"]()
    out = model(ns["read_constants"](str(book)))
    out.backward()
    for k, g in enumerate(grads):
        torch.testing.assert_close(getattr(model, f"p{k}").grad, g.reshape(getattr(model, f"p{k}").shape))


def test_conv_sheet_general_form(tmp_path):
    book = tmp_path / "conv.xlsx"
    conv_book(book)
    check(book, tmp_path, "general")
    src = (tmp_path / "m.py").read_text()
    assert "unfold(0, 3, 1).unfold(1, 3, 1)" in src and "SUMPRODUCT(A1:C3,$H$1:$J$3)" in src


def test_embedding_bias_sheet_general_form(tmp_path):
    book = tmp_path / "emb.xlsx"
    embed_book(book)
    check(book, tmp_path, "layer")


def rnn_book(path):
    """An unrolled recurrence: h_t = TANH(h_(t-1) * w + x_t) copied down, the loss on the last state."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "rnn"
    ws["A1"] = 0.5
    ws["B2"] = 0.0
    for r in range(3, 8):
        ws[f"A{r}"] = r / 10.0
        ws[f"B{r}"] = f"=TANH(B{r - 1}*$A$1+A{r})"
    ws["C1"] = "=B7^2"
    names(ws, "rnn!$C$1", "rnn!$A$1")
    wb.save(path)


def test_recurrence_exports_as_one_loop(tmp_path):
    """A block that reads its own earlier cells (an unrolled recurrence) compiles to one block per step;
    the general form writes it as one ``for`` loop over the rows (the formula once, the state by row in
    ``B``), stacked into ``b3`` for what reads it, and equals eval, gradients included."""
    book = tmp_path / "rnn.xlsx"
    rnn_book(book)
    check(book, tmp_path, "general")
    src = (tmp_path / "m.py").read_text()
    assert "        B = {2: K['rnn'][2:3, 2:3]}\n        for r in range(3, 8):\n" in src
    assert "            # rnn!B3:B7  TANH(B2*$A$1+A3)\n" in src
    assert "B[r] = _full(torch.tanh(_t(((B[r - 1] * self.p0) + K['rnn'][r:r + 1, 1:2]))), 1, 1)" in src
    assert "b3 = torch.cat([B[k] for k in range(3, 8)])" in src and src.count(" = _full(") == 2


UIDS, MIDS = [11, 13, 17, 19, 23, 29], [101, 102, 105, 107, 110, 120]
UROW = "INDEX($B$2:$D$7,MATCH(L{r},$A$2:$A$7,0),0)"
MROW = "INDEX($G$2:$I$7,MATCH(M{r},$F$2:$F$7,0),0)"
# the prediction in O10:O21 from the user id (L), the movie id (M) and a row number (Q); the rating is N
LOOKUPS = {
    "index-match": f"SUMPRODUCT({UROW},{MROW})+INDEX($E$2:$E$7,MATCH(L{{r}},$A$2:$A$7,0))"
    "+INDEX($J$2:$J$7,MATCH(M{r},$F$2:$F$7,0),1)",
    "vlookup": f"SUMPRODUCT({UROW},{MROW})+VLOOKUP(L{{r}},$A$2:$E$7,5,FALSE)"
    "+VLOOKUP(M{r},$F$2:$J$7,5,0)*VLOOKUP(M{r},$F$2:$J$7,2,FALSE)",
    "approximate": "SUMPRODUCT(INDEX($B$2:$D$7,MATCH(L{r}+0.5,$A$2:$A$7),0),INDEX($G$2:$I$7,MATCH(M{r},$F$2:$F$7,1),0))"
    "+VLOOKUP(L{r}+1,$A$2:$E$7,5)+VLOOKUP(M{r},$F$2:$J$7,5,TRUE)",
    "descending": f"SUMPRODUCT(INDEX($B$2:$D$7,MATCH(L{{r}}-0.5,$U$2:$U$7,-1),0),{MROW})",
    "xlookup": "SUMPRODUCT(XLOOKUP(L{r},$A$2:$A$7,$B$2:$D$7),XLOOKUP(M{r}+1,$F$2:$F$7,$G$2:$I$7,0,-1))"
    "+XLOOKUP(M{r}-1,$F$2:$F$7,$J$2:$J$7,0,1)+XLOOKUP(L{r},$A$2:$A$7,$E$2:$E$7,0,0,-1)",
    "hlookup": f"SUMPRODUCT({UROW},{MROW})+HLOOKUP(M{{r}},$B$27:$G$28,2,FALSE)",
    "offset": "SUMPRODUCT(OFFSET($B$1,MATCH(L{r},$A$2:$A$7,0),0,1,3),OFFSET($G$1,MATCH(M{r},$F$2:$F$7,0),0,1,3))"
    "+OFFSET($E$1,Q{r},0)",
    "choose": f"SUMPRODUCT({UROW},{MROW})+CHOOSE(MATCH(L{{r}},$A$2:$A$7,0),$E$2,$E$3,$E$4,$E$5,$E$6,$E$7)"
    "+CHOOSE(Q{r},$J$2,$J$3,$J$4,$J$5,$J$6,$J$7)",
    "row-numbers": "SUMPRODUCT(INDEX($B$2:$D$7,Q{r},0),INDEX($G$2:$I$7,7-Q{r},0))+INDEX($E$2:$E$7,Q{r})"
    "+INDEX($J$2:$J$7,Q{r},1)",
}
PARAMS = {"hlookup": "emb!$B$2:$D$7,emb!$G$2:$I$7,emb!$B$28:$G$28"}


def lookup_book(path, kind="index-match", user_ids=None, sheet="emb", headers=None):
    """A collaborative-filtering sheet: user factors B2:D7 and biases E2:E7 by id (A2:A7), movie factors
    G2:I7 and biases J2:J7 by id (F2:F7), a header row of text; ratings rows 10-21 look their user's and
    movie's rows up by id (``LOOKUPS[kind]``); the objective is the mean squared error in L25."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = sheet
    for c, h in enumerate(
        headers or ["user", "u1", "u2", "u3", "ubias", "movie", "m1", "m2", "m3", "mbias"], 1
    ):
        ws.cell(1, c, h)
    uids = user_ids or UIDS
    for i in range(6):
        r = i + 2
        ws.cell(r, 1, uids[i])
        ws.cell(r, 6, MIDS[i])
        ws.cell(r, 21, UIDS[::-1][i])  # U2:U7: the user ids in descending order (MATCH type -1)
        for c in range(2, 6):
            ws.cell(r, c, ((r * 3 + c) % 7 - 3) / 10.0)
            ws.cell(r, c + 5, ((r + c * 5) % 7 - 3) / 10.0)
    ws.cell(27, 1, "movie")
    ws.cell(28, 1, "bias")
    for j in range(6):  # a horizontal table for HLOOKUP
        ws.cell(27, 2 + j, MIDS[j])
        ws.cell(28, 2 + j, (j % 3 - 1) / 10.0)
    for k in range(12):
        r = 10 + k
        ws.cell(r, 12, uids[(k * 5) % 6])
        ws.cell(r, 13, MIDS[(k * 7 + 1) % 6])
        ws.cell(r, 14, float((r * 5) % 4))
        ws.cell(r, 17, 1 + (k % 6))
        ws.cell(r, 15, "=" + LOOKUPS[kind].format(r=r))
        ws.cell(r, 16, f"=(O{r}-N{r})^2")
    ws["L25"] = "=AVERAGE(P10:P21)"
    q = "'" + sheet.replace("'", "''") + "'!"
    names(ws, f"{q}$L$25", PARAMS.get(kind, "emb!$B$2:$E$7,emb!$G$2:$J$7").replace("emb!", q))
    wb.save(path)


@pytest.mark.parametrize("kind", list(LOOKUPS))
def test_lookup_sheet_general_form(kind, tmp_path):
    """Rows looked up by a cell-dependent position (INDEX/MATCH exact and approximate, VLOOKUP, HLOOKUP,
    XLOOKUP, OFFSET, CHOOSE) export as gathers over the looked-up range's tensor: equal to eval, and the
    gradients flow into exactly the looked-up cells, as the compiler's."""
    book = tmp_path / "lookup.xlsx"
    lookup_book(book, kind)
    check(book, tmp_path, "general")
    src = (tmp_path / "m.py").read_text()
    assert "def _take(" in src and "# emb!O10:O21" in src


def test_lookup_by_text_id_is_refused_naming_the_cell(tmp_path):
    """The export matches numbers only: a MATCH over text ids (which the compiler compares as text) stops
    the export with one line naming the cell, never a silently different module."""
    book = tmp_path / "text.xlsx"
    lookup_book(book, "index-match", user_ids=["ann", "bob", "cy", "di", "ed", "flo"])
    with pytest.raises(Unsupported, match=r"emb!O10: MATCH over text"):
        export_module(book, out_path=tmp_path / "m.py")


@pytest.mark.parametrize("rows", [5, 7])
def test_value_per_cell_times_a_window(rows, tmp_path):
    """``SUMPRODUCT((B3*$X$2:$X$6+$A$1)*$X$2:$X$6*(B3*10>$X$2:$X$6))`` copied down: each cell's B (a value
    per cell) meets its own window, not the window's rows (5 rows, a 5-cell window: once silently wrong)."""
    book = tmp_path / "w.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "w"
    ws["A1"] = 0.3
    for i in range(5):
        ws[f"X{i + 2}"] = i + 1.0
    for r in range(3, 3 + rows):
        ws[f"B{r}"] = r / 10
        ws[f"D{r}"] = f"=SUMPRODUCT((B{r}*$X$2:$X$6+$A$1)*$X$2:$X$6*(B{r}*10>$X$2:$X$6))"
    ws["E1"] = f"=SUM(D3:D{2 + rows})"
    names(ws, "w!$E$1", "w!$A$1")
    wb.save(book)
    check(book, tmp_path, "general")
