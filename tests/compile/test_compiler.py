"""The compiler against Excel's saved values, LibreOffice's recalculation and hand-written torch models."""

from __future__ import annotations

import math
import re
import zipfile
from pathlib import Path

import numpy as np
import openpyxl
import pytest
import torch
from openpyxl.worksheet.formula import ArrayFormula
from testenv import COURSE_TITANIC as COURSE

from xlmnist import oracle
from xlmnist.compile import compile_workbook
from xlmnist.errors import FormulaError, WorkbookError
from xlmnist.xlsx.reader import read_workbook

SAVED = {"linear": 0.14422714930851466, "nnet": 0.14315209641714463, "mmult": 0.14315209641014892}
# intermediate columns Excel saved, per sheet
COLUMNS = {
    "linear": ["linear!AC4:AC715", "linear!AD4:AD715", "linear!I4:O715"],
    "nnet": ["nnet!AC4:AD715", "nnet!AE4:AF715", "nnet!AG4:AG715", "nnet!AH4:AH715"],
    "mmult": ["mmult!V4:W715", "mmult!X4:Y715", "mmult!Z4:Z715", "mmult!AA4:AA715"],
}


@pytest.fixture(scope="module")
def course(course_titanic):
    return read_workbook(COURSE)


@pytest.fixture(scope="module")
def models(course_titanic):
    return {s: compile_workbook(COURSE, sheet=s) for s in SAVED}


def _saved(wb, ref):
    sheet, area = ref.split("!")
    a, b = area.split(":")
    from xlmnist.xlsx.refs import parse_area

    r1, c1, r2, c2 = parse_area(area)
    vals = wb.sheets[sheet].values
    return np.array([[vals[(r, c)] for c in range(c1, c2 + 1)] for r in range(r1, r2 + 1)], dtype=float)


@pytest.mark.parametrize("sheet", list(SAVED))
def test_objective_matches_excel(models, sheet):
    m = models[sheet]
    assert m.sense == "min" and m.target is None
    value = float(m.objective(m.initial_params()))
    assert value == pytest.approx(SAVED[sheet], rel=1e-12)


@pytest.mark.parametrize("sheet", list(SAVED))
def test_intermediate_columns_match_excel(models, course, sheet):
    m = models[sheet]
    got = m.evaluate(COLUMNS[sheet], m.initial_params())
    for ref in COLUMNS[sheet]:
        np.testing.assert_allclose(got[ref].detach().numpy(), _saved(course, ref), rtol=1e-12, atol=1e-15)


def test_interface(models):
    m = models["nnet"]
    assert m.objective_ref == "nnet!AH1"
    assert m.param_refs == ["nnet!R4:AA5"]
    (p,) = m.initial_params()
    assert p.shape == (2, 10) and p.dtype == torch.float64
    assert "nnet!AE4:AF715" in m.describe() and "SUMPRODUCT" in m.describe()
    assert models["mmult"].param_refs == ["mmult!S4:T13"]


def _features(wb, sheet):
    """The course's preprocessing, written by hand from the raw columns (A..H)."""
    v = wb.sheets[sheet].values
    rows = range(4, 716)
    col = {
        name: k + 1
        for k, name in enumerate(["Survived", "Embarked", "Pclass", "Sex", "Age", "Fare", "SibSp", "Parch"])
    }
    raw = {n: [v.get((r, c), 0.0) for r in rows] for n, c in col.items()}  # empty = 0
    age = torch.tensor(raw["Age"], dtype=torch.float64)
    fare = torch.tensor(raw["Fare"], dtype=torch.float64)
    pclass = torch.tensor(raw["Pclass"], dtype=torch.float64)
    x = torch.stack(
        [
            torch.tensor(raw["SibSp"], dtype=torch.float64),
            torch.tensor(raw["Parch"], dtype=torch.float64),
            age / age.max(),
            torch.log10(fare + 1),
            (pclass == 1).double(),
            (pclass == 2).double(),
            torch.tensor([e == "S" for e in raw["Embarked"]], dtype=torch.float64),
            torch.tensor([e == "C" for e in raw["Embarked"]], dtype=torch.float64),
            torch.tensor([s == "male" for s in raw["Sex"]], dtype=torch.float64),
            torch.ones(712, dtype=torch.float64),
        ],
        1,
    )
    # the course's mmult loss reads its labels from Table134 (sheet nnet)
    ys = wb.sheets["nnet" if sheet == "mmult" else sheet].values
    return x, torch.tensor([ys[(r, 1)] for r in rows], dtype=torch.float64)


def _hand(sheet, x, y, p):
    if sheet == "linear":
        return ((x @ p[0] - y) ** 2).mean()
    if sheet == "nnet":
        return ((y - torch.relu(x @ p[0]) - torch.relu(x @ p[1])) ** 2).mean()
    return ((y - torch.relu(x @ p).sum(1)) ** 2).mean()


@pytest.mark.parametrize("sheet", list(SAVED))
def test_gradients_match_hand_written_model(models, course, sheet):
    m = models[sheet]
    x, y = _features(course, sheet)
    torch.manual_seed(0)
    (p0,) = m.initial_params()
    p0 = p0 + 0.1 * torch.randn_like(p0)
    a = p0.clone().requires_grad_()
    b = p0.clone().requires_grad_()
    la, lb = m.objective([a]), _hand(sheet, x, y, b)
    la.backward()
    lb.backward()
    assert float(la.detach()) == pytest.approx(float(lb.detach()), rel=1e-12)
    np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-9, atol=1e-13)


def _set_values(src: Path, dst: Path, changes: dict[str, dict[str, float]]):
    """Copy ``src`` to ``dst`` with the cached ``<v>`` of the given value cells replaced."""
    wb = read_workbook(src)
    with zipfile.ZipFile(src) as zin:
        import xml.etree.ElementTree as ET

        root = ET.fromstring(zin.read("xl/workbook.xml"))
        ns = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
        order = [s.get("name") for s in root.iter(ns + "sheet")]
        assert order == wb.order
        part = {name: f"xl/worksheets/sheet{k + 1}.xml" for k, name in enumerate(order)}
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
            for item in zin.infolist():
                data = zin.read(item.filename)
                for sheet, cells in changes.items():
                    if item.filename == part[sheet]:
                        text = data.decode()
                        for ref, val in cells.items():
                            text, n = re.subn(
                                rf'(<c r="{ref}"[^>]*>)<v>[^<]*</v>',
                                lambda mm, v=val: f"{mm.group(1)}<v>{v!r}</v>",
                                text,
                            )
                            assert n == 1, ref
                        data = text.encode()
                zout.writestr(item, data)


@pytest.mark.libreoffice
def test_matches_libreoffice_after_changing_params(models, tmp_path):
    rng = np.random.default_rng(1)
    changes, new = {}, {}
    for sheet, m in models.items():
        (p,) = m.initial_params()
        q = torch.tensor(rng.normal(0, 0.3, p.shape), dtype=torch.float64)
        new[sheet] = q
        from xlmnist.xlsx.refs import col_letters, parse_area

        r1, c1, r2, c2 = parse_area(m.param_refs[0].split("!")[1])
        changes[sheet] = {
            f"{col_letters(c)}{r}": float(q[r - r1, c - c1])
            for r in range(r1, r2 + 1)
            for c in range(c1, c2 + 1)
        }
    copy = tmp_path / "changed.xlsx"
    _set_values(COURSE, copy, changes)
    lo = oracle.recalc(copy)
    for sheet, m in models.items():
        want = lo[sheet][m.objective_ref.split("!")[1]]
        got = compile_workbook(copy, sheet=sheet)
        assert float(got.objective(got.initial_params())) == pytest.approx(want, rel=1e-12)
        assert float(m.objective([new[sheet]])) == pytest.approx(want, rel=1e-12)
        ref = COLUMNS[sheet][0]
        col = m.evaluate([ref], [new[sheet]])[ref].numpy()
        from xlmnist.xlsx.refs import parse_area

        r1, c1, r2, c2 = parse_area(ref.split("!")[1])
        from xlmnist.xlsx.refs import col_letters

        lo_col = np.array(
            [[lo[sheet][f"{col_letters(c)}{r}"] for c in range(c1, c2 + 1)] for r in range(r1, r2 + 1)]
        )
        np.testing.assert_allclose(col, lo_col, rtol=1e-12, atol=1e-14)


# ---- tiny workbooks ---------------------------------------------------------------------------------
def _book(tmp_path, cells: dict[str, object], solver=("Sheet!$B$1", "Sheet!$A$1"), name="t.xlsx"):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Sheet"
    for ref, v in cells.items():
        ws[ref] = v
    if solver:
        from openpyxl.workbook.defined_name import DefinedName

        ws.defined_names["solver_opt"] = DefinedName("solver_opt", attr_text=solver[0])
        ws.defined_names["solver_adj"] = DefinedName("solver_adj", attr_text=solver[1])
        ws.defined_names["solver_typ"] = DefinedName("solver_typ", attr_text="2")
    path = tmp_path / name
    wb.save(path)
    return path


# (formula, expected Excel result); inputs: A1 = param (2), C1:C4 = 1, 2, "x", empty, D1:E2 = [[1,2],[3,4]]
FUNCTION_CASES = [
    ("=SUM(C1:C4)", 3),
    ("=SUM(C1:C2,10)", 13),
    ("=AVERAGE(C1:C4)", 1.5),
    ("=COUNT(C1:C4)", 2),
    ("=COUNTA(C1:C4)", 3),
    ("=MAX(C1:C4,-5)", 2),
    ("=MIN(C1:C4)", 1),
    ("=SUMPRODUCT(D1:E2,D1:E2)", 30),
    ("{=SUM(D1:E2*D1:E2)}", 30),  # {} = entered as an array formula (CSE)
    ("=SUM(D1:E2*D1:E2)", 30),  # dynamic-array Excel; LibreOffice gives #VALUE! here
    ("=SUMSQ(D1:E2)", 30),
    ("=SUMXMY2(D1:D2,E1:E2)", 2),
    ("=INDEX(MMULT(D1:E2,D1:E2),2,1)", 15),
    ("=INDEX(TRANSPOSE(D1:E2),1,2)", 3),
    ("=INDEX(D1:E2,2,2)", 4),
    ("=MATCH(3,D1:D2,0)", 2),
    ("=IF(C1>0,10,20)", 10),
    ('=IF(C3="X",1,0)', 1),
    ("=IFERROR(1/0,7)", 7),
    ("=AND(C1,C2>1)", 1),
    ("=OR(C1>5,FALSE)", 0),
    ("=NOT(C1)", 0),
    ("=ABS(-3)", 3),
    ("=EXP(1)", math.e),
    ("=LN(10)", math.log(10)),
    ("=LOG(8,2)", 3),
    ("=LOG10(1000)", 3),
    ("=SQRT(16)", 4),
    ("=POWER(2,10)", 1024),
    ("=ROUND(2.5,0)", 3),
    ("=ROUND(-2.345,2)", -2.35),
    ("=-2^2", 4),
    ("=2^3^2", 64),
    ("=50%", 0.5),
    ("=TRUE+1", 2),
    ("=C4+1", 1),
    ("=SUM(OFFSET(C1,1,0,1,1))", 2),
    ("=SUMPRODUCT({1,2;3,4},D1:E2)", 30),
    ("=A1*C2", 4),
    ("=IF(A1-3<0,0,A1)", 0),
]


@pytest.mark.libreoffice
def test_function_table(tmp_path):
    cells = {"A1": 2, "B1": "=A1*1", "C1": 1, "C2": 2, "C3": "x", "D1": 1, "E1": 2, "D2": 3, "E2": 4}
    for k, (f, _) in enumerate(FUNCTION_CASES):
        cells[f"G{k + 1}"] = ArrayFormula(f"G{k + 1}", f[1:-1]) if f.startswith("{") else f
    path = _book(tmp_path, cells)
    m = compile_workbook(path)
    refs = [f"Sheet!G{k + 1}" for k in range(len(FUNCTION_CASES))]
    got = m.evaluate(refs, m.initial_params())
    lo = oracle.recalc(path)["Sheet"]
    bad = []
    for k, (f, want) in enumerate(FUNCTION_CASES):
        value = float(got[refs[k]].reshape(()))
        assert value == pytest.approx(want, rel=1e-12, abs=1e-12), f
        if f == "=SUM(D1:E2*D1:E2)":
            continue
        bad.append((f, lo[f"G{k + 1}"])) if lo[f"G{k + 1}"] != pytest.approx(
            want, rel=1e-12, abs=1e-12
        ) else None
    assert not bad


def test_relu_gradient_flows_like_relu(tmp_path):
    path = _book(
        tmp_path,
        {"A1": -1.0, "A2": 2.0, "B1": "=IF(A1<0,0,A1)", "B2": "=IF(A2<0,0,A2)", "C1": "=SUM(B1:B2)"},
        solver=("Sheet!$C$1", "Sheet!$A$1:$A$2"),
    )
    m = compile_workbook(path)
    (p,) = m.initial_params()
    p.requires_grad_()
    m.objective([p]).backward()
    assert p.grad.flatten().tolist() == [0.0, 1.0]


BAD = [
    ({"A1": 1, "B1": "=FOOBAR(A1)"}, FormulaError, r"Sheet!B1.*FOOBAR"),
    ({"A1": 1, "B1": "=A1+C1", "C1": "=B1"}, FormulaError, r"circular"),
    ({"A1": 1, "B1": "=A1/0"}, FormulaError, r"Sheet!B1.*error"),
    ({"A1": 1, "B1": "=A1*C1", "C1": "abc"}, FormulaError, r"Sheet!B1.*Sheet!C1.*text"),
    ({"A1": 1, "B1": "=C1*2", "C1": 3}, WorkbookError, r"Sheet!B1.*does not depend"),
    ({"A1": 1, "B1": "=A1+(1"}, FormulaError, r"Sheet!B1.*parse"),
    ({"A1": "=B1", "B1": "=A1*2"}, WorkbookError, r"Sheet!A1.*formula"),
]


@pytest.mark.parametrize("cells,exc,pattern", BAD)
def test_bad_workbooks(tmp_path, cells, exc, pattern):
    path = _book(tmp_path, cells)
    with pytest.raises(exc, match=pattern):
        compile_workbook(path)


def test_no_solver_settings(tmp_path):
    path = _book(tmp_path, {"A1": 1, "B1": "=A1"}, solver=None)
    with pytest.raises(WorkbookError, match="Sheet"):
        compile_workbook(path)
    m = compile_workbook(path, objective="Sheet!B1", params="Sheet!A1")
    assert float(m.objective(m.initial_params())) == 1.0


# ---- the lowered objective program (xlmnist.compile.lower) against the compiled closures ---------------------
ROWS = range(3, 9)  # data rows E:I: features E:G, label H, 1 - label I
LOWER_CASES = [  # (params, {column or columns: formula of row 3, copied down}, objective column, fully lowered)
    (
        "A1:C1",
        {"J": "=SUMPRODUCT($E3:$G3,$A$1:$C$1)", "K": "=1/(1+EXP(-J3))", "L": "=IF(H3=1,1-K3,K3)"},
        "L",
        True,
    ),
    ("A1:C1", {"J": "=SUMPRODUCT($E3:$G3,$A$1:$C$1)", "K": "=IF(J3<0,0,J3)", "L": "=(H3-K3)^2"}, "L", True),
    ("A1:C1", {"J": "=SUMPRODUCT($A$1:$C$1,E3:G3)", "K": "=MAX(0,J3)", "L": "=(K3-H3)^2"}, "L", True),
    (
        "A1:C2",
        {
            "J": "=SUMPRODUCT($E3:$G3,$A$1:$C$1)",
            "K": "=SUMPRODUCT($E3:$G3,$A$2:$C$2)",
            "LM": "=IF(J3<0,0,J3)",
            "N": "=L3+M3",
            "O": "=(H3-N3)^2",
        },
        "O",
        True,
    ),
    (
        "A1:B3",
        {
            "JK": "=MMULT($E3:$G3,A$1:A$3)",
            "LM": "=EXP(J3-MAX($J3:$K3))",
            "N": "=SUM(L3:M3)",
            "OP": "=L3/$N3",
            "Q": "=-LN(SUMPRODUCT($H3:$I3,O3:P3))",
        },
        "Q",
        True,
    ),
    ("A1:C1", {"J": "=SUMPRODUCT($E3:$G3,$A$1:$C$1)", "K": "=ROUND(J3,3)*J3+TANH(J3)/2"}, "K", False),
]


def _lower_book(tmp_path, params: str, cols: dict[str, str], obj: str) -> Path:
    rng = np.random.default_rng(0)
    cells = {}
    a, b = params.split(":")
    for r in range(int(a[1:]), int(b[1:]) + 1):
        for c in "ABC"[: "ABC".index(b[0]) + 1]:
            cells[f"{c}{r}"] = float(rng.normal())
    for r in ROWS:
        for c in "EFG":
            cells[f"{c}{r}"] = float(rng.normal())
        y = int(rng.integers(0, 2))
        cells[f"H{r}"], cells[f"I{r}"] = y, 1 - y
    for spec, f in cols.items():
        for k, c in enumerate(spec):
            for r in ROWS:  # copy the row-3 formula down and across, as Excel's fill does
                g = re.sub(r"(\$?)([A-Z])(\$?)(\d+)", lambda m, r=r, k=k: _shift(m, r - 3, k), f[1:])
                cells[f"{c}{r}"] = "=" + g
    cells["Z1"] = f"=AVERAGE({obj}3:{obj}8)"
    return _book(tmp_path, cells, solver=("Sheet!$Z$1", f"Sheet!${a[0]}${a[1:]}:${b[0]}${b[1:]}"))


def _shift(m, dr: int, dc: int) -> str:
    c = m.group(2) if m.group(1) else chr(ord(m.group(2)) + dc)
    r = m.group(4) if m.group(3) else str(int(m.group(4)) + dr)
    return f"{m.group(1)}{c}{m.group(3)}{r}"


def _value_and_grads(m, data=None):
    params = [p.clone().requires_grad_() for p in m.initial_params()]
    v = m.objective(params, data=data)
    v.backward()
    return float(v.detach()), [p.grad for p in params]


@pytest.mark.parametrize("params,cols,obj,lowered", LOWER_CASES)
def test_lowered_program_matches_closures(tmp_path, monkeypatch, params, cols, obj, lowered):
    path = _lower_book(tmp_path, params, cols, obj)
    for data in (None, "Sheet!E3:I8"):
        fast = compile_workbook(path, data=data)
        assert fast._prog is not None and (fast._prog.fallback == []) == lowered, fast.describe()
        monkeypatch.setenv("XLMNIST_LOWER", "0")
        slow = compile_workbook(path, data=data)
        monkeypatch.delenv("XLMNIST_LOWER")
        assert slow._prog is None
        rows = None if data is None else torch.flip(fast.data_rows(), [0])[:4]  # other rows through data=
        (v1, g1), (v2, g2) = _value_and_grads(fast, rows), _value_and_grads(slow, rows)
        assert v1 == pytest.approx(v2, rel=1e-12)
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("sheet,ops", [("linear", 5), ("nnet", 6), ("mmult", 6)])
def test_course_sheets_lower_to_few_ops(models, sheet, ops):
    """The course sheets become the ops a hand-written model has (mv/mm, relu, sum, sub, square, mean)."""
    prog = models[sheet]._prog
    assert prog is not None and prog.fallback == []
    calls = re.findall(r"^\s+t\d+ = ", prog.source, re.M)  # one torch op per temporary
    assert len(calls) == ops, prog.source


def _softmax_book(tmp_path, labels, shift=True) -> Path:
    """Three classes. Data E:K: features E:G, label H, one-hot I:K = IF($H=class,1,0) (classes 0, 1, 2 as
    numeric headers in I1:K1). Logits L:N = SUMPRODUCT(features, a row of W = A1:C3), P:R = EXP(logit - row
    max) (or EXP(logit)), T = their SUM, U:W = P:R / T, loss S = -LN(SUMPRODUCT(one-hot, U:W))."""
    rng = np.random.default_rng(1)
    cells = {}
    for r in range(1, 4):
        for c in "ABC":
            cells[f"{c}{r}"] = float(rng.normal())
    for k, c in enumerate("IJK"):
        cells[f"{c}1"] = k
    for i, r in enumerate(ROWS):
        for c in "EFG":
            cells[f"{c}{r}"] = float(rng.normal())
        cells[f"H{r}"] = labels[i]
        for c in "IJK":
            cells[f"{c}{r}"] = f"=IF($H{r}={c}$1,1,0)"
        for k, c in enumerate("LMN"):
            cells[f"{c}{r}"] = f"=SUMPRODUCT($E{r}:$G{r},$A${k + 1}:$C${k + 1})"
        for c, z in zip("PQR", "LMN"):
            cells[f"{c}{r}"] = f"=EXP({z}{r}-MAX($L{r}:$N{r}))" if shift else f"=EXP({z}{r})"
        cells[f"T{r}"] = f"=SUM(P{r}:R{r})"
        for c, e in zip("UVW", "PQR"):
            cells[f"{c}{r}"] = f"={e}{r}/$T{r}"
        cells[f"S{r}"] = f"=-LN(SUMPRODUCT(I{r}:K{r},U{r}:W{r}))"
    cells["Z1"] = "=AVERAGE(S3:S8)"
    return _book(tmp_path, cells, solver=("Sheet!$Z$1", "Sheet!$A$1:$C$3"))


@pytest.mark.parametrize(
    "shift,data,corrupt",
    [
        (True, "Sheet!E3:H8", [(3, 5.0), (3, 1.5), (3, -1.0)]),  # one-hot by formulas from the label column
        (False, "Sheet!E3:H8", [(3, 2.5)]),
        (True, "Sheet!E3:K8", [((4, 5, 6), (0, 0, 0)), ((4, 5, 6), (1, 1, 0)), ((4, 5, 6), (0.5, 0.5, 0))]),
    ],
)
def test_softmax_cross_entropy_fused_with_the_sheets_values(tmp_path, monkeypatch, shift, data, corrupt):
    """EXP/SUM -> softmax and -LN(SUMPRODUCT(onehot, softmax)) -> cross_entropy (on the label column, or on
    one-hot data columns): the same values and gradients as the block closures. Data that is not a clean
    one-hot (a label outside 0..n-1, a row of zeros or two 1s) gives the sheet's own result through the
    guarded branch (LN(0) = Excel's #NUM!, inf here), and ``trusts`` rejects it."""
    path = _softmax_book(tmp_path, [0, 1, 2, 2, 1, 0], shift)
    fast = compile_workbook(path, data=data)
    monkeypatch.setenv("XLMNIST_LOWER", "0")
    slow = compile_workbook(path, data=data)
    monkeypatch.delenv("XLMNIST_LOWER")
    src = fast._prog.source
    assert "cross_entropy" in src and "torch.exp" not in src and fast._prog.fallback == [], src
    rows = fast.data_rows()
    assert fast.trusts(rows)
    for part in (None, torch.flip(rows, [0])[:4]):
        (v1, g1), (v2, g2) = _value_and_grads(fast, part), _value_and_grads(slow, part)
        assert v1 == pytest.approx(v2, rel=1e-12)
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-14)
    params = fast.initial_params()
    with torch.no_grad():
        want = float(slow.objective(params))
        assert float(fast.objective(params, data=rows, trusted=True)) == pytest.approx(want, rel=1e-12)
        for cols, bad in corrupt:
            odd = rows.clone()
            odd[2, cols] = torch.tensor(bad, dtype=odd.dtype)
            assert not fast.trusts(odd)
            want = float(slow.objective(params, data=odd))
            assert float(fast.objective(params, data=odd)) == pytest.approx(want, rel=1e-12)
            assert math.isinf(want) == (bad in (5.0, 1.5, -1.0, 2.5, (0, 0, 0)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_relu_forms_lowered_like_the_closures_at_zero(tmp_path, monkeypatch, dtype):
    """IF(x<0,0,x) and IF(x>=0,x,0) lower to a ReLU with the formula's own gradient at x = 0 (the x branch:
    1), IF(x<=0,0,x) and IF(x>0,x,0) to one with gradient 0 there (the 0 branch); MAX(0,x) as the closures
    (torch.maximum: a tie splits the gradient, 0.5). Same values and gradients as the block closures, in
    float64 and float32."""
    cells = {"A1": -1.0, "A2": 0.0, "A3": 2.0, "A4": -3.0, "H1": "=SUM(B1:F4)"}
    for r in range(1, 5):
        cells.update(
            {
                f"B{r}": f"=IF(A{r}<0,0,A{r})",
                f"C{r}": f"=IF(A{r}>=0,A{r},0)",
                f"D{r}": f"=MAX(0,A{r})",
                f"E{r}": f"=IF(A{r}<=0,0,A{r})",
                f"F{r}": f"=IF(A{r}>0,A{r},0)",
            }
        )
    path = _book(tmp_path, cells, solver=("Sheet!$H$1", "Sheet!$A$1:$A$4"))
    fast = compile_workbook(path, dtype=dtype)
    monkeypatch.setenv("XLMNIST_LOWER", "0")
    slow = compile_workbook(path, dtype=dtype)
    assert fast._prog is not None and fast._prog.source.count("threshold") == 4 and slow._prog is None
    assert fast._prog.fallback == [], fast._prog.source
    (v1, g1), (v2, g2) = _value_and_grads(fast), _value_and_grads(slow)
    assert v1 == v2 == 10.0
    assert g1[0].flatten().tolist() == g2[0].flatten().tolist()
    assert g1[0].flatten().tolist() == [0.0, 2.5, 5.0, 0.0]
