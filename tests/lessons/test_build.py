"""``xlmnist build``: real workbooks recalculated by real LibreOffice against independent numpy models.

The workbooks are built once per session through the CLI (``--rows 200``); the inputs the numpy models use
come from ``xlmnist.data`` (the dataset arrays) and from the parameter cells of the written file.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from openpyxl.formula.translate import Translator
from openpyxl.utils.cell import coordinate_from_string, range_boundaries
from testenv import COURSE_TITANIC, MNIST_DIR, needs_course

from xlmnist import data, oracle
from xlmnist.xlsx.book import SOLVER_OPTIONS
from xlmnist.xlsx.package import sheet_members

ROOT = Path(__file__).resolve().parents[2]
ROWS = 200
BOOKS = ("titanic.xlsx", "mnist_3v7.xlsx", "mnist.xlsx")
NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
ENV = {**os.environ, "XLMNIST_DATA": str(MNIST_DIR)}  # the tiny set where full MNIST is missing (`built`)


def run_build(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "xlmnist", "build", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=600)


@pytest.fixture(scope="session")
def built(tmp_path_factory, mnist_dir) -> Path:
    ENV["XLMNIST_DATA"] = str(mnist_dir)
    out = tmp_path_factory.mktemp("books")
    proc = run_build("--out", str(out), "--rows", str(ROWS))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def consts(built):
    """The cell values as written (constants only: formulas have no cached values)."""
    return {b: oracle.read_values(built / b) for b in BOOKS}


@pytest.fixture(scope="session")
def lo(built):
    """LibreOffice's forced recalculation of every built workbook."""
    return {b: oracle.recalc(built / b) for b in BOOKS}


def rect(cells: dict, ref: str) -> np.ndarray:
    c1, r1, c2, r2 = range_boundaries(ref)
    from openpyxl.utils import get_column_letter as L

    return np.array(
        [[cells.get(f"{L(c)}{r}", 0.0) for c in range(c1, c2 + 1)] for r in range(r1, r2 + 1)], dtype=float
    )


def close(got, want) -> None:
    np.testing.assert_allclose(
        np.asarray(got, dtype=float), np.asarray(want, dtype=float), rtol=1e-9, atol=1e-12
    )


# ---------------------------------------------------------------- independent numpy models
def titanic_features(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = data.titanic_table().head(n)
    age, fare = t["Age"].to_numpy(float), t["Fare"].to_numpy(float)
    feats = [
        t["SibSp"].to_numpy(float),
        t["Parch"].to_numpy(float),
        age / age.max(),
        np.log10(fare + 1),
        (t["Pclass"] == 1).to_numpy(float),
        (t["Pclass"] == 2).to_numpy(float),
        (t["Embarked"] == "S").to_numpy(float),
        (t["Embarked"] == "C").to_numpy(float),
        (t["Sex"] == "male").to_numpy(float),
        np.ones(n),
    ]
    return np.stack(feats, 1), t["Survived"].to_numpy(float)


def titanic_model(sheet: str, p: np.ndarray, n: int) -> dict:
    x, y = titanic_features(n)
    if sheet == "linear":
        pred = x @ p[0]
    else:
        w = p if sheet == "nnet" else p.T  # nnet: 2 x 10 rows; mmult: 10 x 2 block
        pred = np.maximum(x @ w.T, 0).sum(1)
    return {"pred": pred, "loss": np.mean((pred - y) ** 2), "acc": np.mean((pred > 0.5) == (y == 1))}


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def match_rows(cells: dict, x: np.ndarray, y: np.ndarray, n: int, ncols: int) -> np.ndarray:
    """Indices into (x, y) of the data sheet's rows; asserts pixels == x/255 exactly and labels match."""
    sheet = rect(cells, f"A2:{_col(ncols)}{n + 1}")
    pix = np.rint(sheet[:, :784] * 255).astype(np.uint8)
    index = {img.tobytes(): i for i, img in enumerate(x.reshape(len(x), -1))}
    idx = np.array([index[row.tobytes()] for row in pix])
    np.testing.assert_array_equal(sheet[:, :784], x.reshape(len(x), -1)[idx] / 255)
    np.testing.assert_array_equal(sheet[:, 784], 1)
    np.testing.assert_array_equal(sheet[:, 785], y[idx])
    return idx


def _col(n: int) -> str:
    from openpyxl.utils import get_column_letter

    return get_column_letter(n)


@pytest.fixture(scope="session")
def mnist_inputs(consts, mnist_dir):
    d3 = data.load_3v7("mnist", mnist_dir)  # what `built` read ("auto": the full MNIST in XLMNIST_DATA)
    i3 = match_rows(consts["mnist_3v7.xlsx"]["data"], d3["train_x"], d3["train_y"], ROWS, 786)
    da = data.load_mnist_all(path=mnist_dir, download=False)
    i10 = match_rows(consts["mnist.xlsx"]["data"], da["train_x"], da["train_y"], ROWS, 786)
    x3 = np.c_[d3["train_x"][i3].reshape(ROWS, -1) / 255, np.ones(ROWS)]
    x10 = np.c_[da["train_x"][i10].reshape(ROWS, -1) / 255, np.ones(ROWS)]
    return {
        "x3": x3,
        "y3": d3["train_y"][i3].astype(float),
        "x10": x10,
        "y10": da["train_y"][i10].astype(int),
    }


def mnist_model(sheet: str, params: list[np.ndarray], inp: dict) -> dict:
    if sheet in ("linear10", "mlp"):
        x, y = inp["x10"], inp["y10"]
        hidden = x @ params[0]
        z = hidden if sheet == "linear10" else np.c_[np.maximum(hidden, 0), np.ones(len(x))] @ params[1]
        e = np.exp(z - z.max(1, keepdims=True))
        p = e / e.sum(1, keepdims=True)
        pred = p.argmax(1)
        return {
            "z": z,
            "p": p,
            "pred": pred,
            "loss": np.mean(-np.log(p[np.arange(len(y)), y])),
            "acc": np.mean(pred == y),
            "hidden": hidden,
        }
    x, y = inp["x3"], inp["y3"]
    if sheet == "linear":
        z = x @ params[0][0]
        hidden = None
    else:
        hidden = x @ params[0]
        z = np.c_[np.maximum(hidden, 0), np.ones(len(x))] @ params[1][0]
    p = sigmoid(z)
    loss = np.where(y == 1, 1 - p, p)
    return {"z": z, "p": p, "hidden": hidden, "loss": loss.mean(), "acc": np.mean((p > 0.5) == (y == 1))}


def _mlp_layout():
    """The mlp sheet's columns and rows, derived from its builder (hidden width HIDDEN)."""
    from xlmnist.lessons import mlp
    from xlmnist.xlsx.book import col as L

    h = mlp.HIDDEN
    pc = h + 3  # label column
    z0, r0 = pc + 1, pc + 1 + h
    one = r0 + h
    l0 = one + 1
    sm = l0 + 20
    p0 = sm + 1
    pred = p0 + 11
    return {
        "w1": f"B{mlp.W_FIRST}:{L(h + 1)}{mlp.W_LAST}", "w2": f"B{mlp.W2_FIRST}:K{mlp.W2_LAST}",
        "g1": f"B{mlp.G1_FIRST}:{L(h + 1)}{mlp.G1_LAST}", "g2": f"B{mlp.G2_FIRST}:K{mlp.G2_LAST}",
        "pred": L(pred), "all": (L(pc), L(p0 + 12)), "z": (L(z0), L(r0 - 1)), "relu": (L(r0), L(one - 1)),
        "logits": (L(l0), L(l0 + 9)), "p": (L(p0), L(p0 + 9)),
    }  # fmt: skip


MLP = _mlp_layout()


# sheet -> (param refs, objective, accuracy, prediction column range)
MODELS = {
    ("titanic.xlsx", "linear"): (["R4:AA4"], "AA7", "AA8", f"AC4:AC{ROWS + 3}"),
    ("titanic.xlsx", "nnet"): (["R4:AA5"], "AH1", "AH2", f"AG4:AG{ROWS + 3}"),
    ("titanic.xlsx", "mmult"): (["S4:T13"], "AA1", "AA2", f"Z4:Z{ROWS + 3}"),
    ("mnist_3v7.xlsx", "linear"): (["A3:ADE3"], "B5", "B6", f"C10:C{ROWS + 9}"),
    ("mnist_3v7.xlsx", "simple_net"): (["B7:AE791", "BL4:CP4"], "B2", "B3", f"CR6:CR{ROWS + 5}"),
    ("mnist.xlsx", "linear10"): (["B7:K791"], "B2", "B3", f"AT6:AT{ROWS + 5}"),
    ("mnist.xlsx", "mlp"): ([MLP["w1"], MLP["w2"]], "B2", "B3", f"{MLP['pred']}6:{MLP['pred']}{ROWS + 5}"),
}


def expected(book: str, sheet: str, params: list[np.ndarray], inputs) -> dict:
    if book == "titanic.xlsx":
        return titanic_model(sheet, params[0], ROWS)
    return mnist_model(sheet, params, inputs)


@pytest.mark.libreoffice
@pytest.mark.parametrize("book,sheet", list(MODELS))
def test_sheet_matches_numpy(book, sheet, consts, lo, request):
    refs, obj, acc, preds = MODELS[(book, sheet)]
    inputs = request.getfixturevalue("mnist_inputs") if book != "titanic.xlsx" else None
    params = [rect(consts[book][sheet], r) for r in refs]
    want = expected(book, sheet, params, inputs)
    got = lo[book][sheet]
    close(got[obj], want["loss"])
    close(got[acc], want["acc"])
    pred = rect(got, preds)[:, 0]
    close(pred, want["pred"] if book != "mnist_3v7.xlsx" else want["p"])
    assert want["acc"] < 0.8 or book == "titanic.xlsx"  # fresh random parameters, not trained ones
    if sheet == "simple_net":
        close(rect(got, f"AH6:BK{ROWS + 5}"), want["hidden"])
    if sheet == "linear10":
        close(rect(got, f"AI6:AR{ROWS + 5}"), want["p"])
    if sheet == "mlp":
        close(rect(got, f"{MLP['z'][0]}6:{MLP['z'][1]}{ROWS + 5}"), want["hidden"])
        close(rect(got, f"{MLP['p'][0]}6:{MLP['p'][1]}{ROWS + 5}"), want["p"])


@pytest.mark.libreoffice
def test_titanic_data_and_features(consts, lo):
    x, y = titanic_features(ROWS)
    t = data.titanic_table().head(ROWS)
    for sheet in ("linear", "nnet", "mmult"):
        c = consts["titanic.xlsx"][sheet]
        assert [c[f"{L}3"] for L in "ABCDEFGHIJKLMNOP"] == list(data.titanic_table().columns)
        assert [c[f"B{r}"] for r in range(4, ROWS + 4)] == list(t["Embarked"])
        close(rect(c, f"A4:A{ROWS + 3}")[:, 0], y)
        close(rect(lo["titanic.xlsx"][sheet], f"G4:P{ROWS + 3}"), x)


@pytest.mark.libreoffice
def test_playgrounds_and_weight_views(consts, lo, mnist_dir):
    w = rect(consts["mnist_3v7.xlsx"]["linear"], "A3:ADE3")[0]
    g = lo["mnist_3v7.xlsx"]
    close(rect(g["weights"], "B3:AC30"), w[:784].reshape(28, 28))
    img = rect(consts["mnist_3v7.xlsx"]["playground"], "B3:AC30")
    d3 = data.load_3v7("mnist", mnist_dir)  # what `built` read ("auto": the full MNIST in XLMNIST_DATA)
    np.testing.assert_array_equal(img, d3["valid_x"][np.flatnonzero(d3["valid_y"] == 1)[0]] / 255)
    z = (img * w[:784].reshape(28, 28)).sum() + w[784]
    close([g["playground"]["AF3"], g["playground"]["AF4"]], [z, sigmoid(z)])
    assert g["playground"]["AF5"] == (3 if sigmoid(z) > 0.5 else 7)
    w10 = rect(consts["mnist.xlsx"]["linear10"], "B7:K791")
    m = lo["mnist.xlsx"]
    close(rect(m["weights"], "AF34:BG61"), w10[:784, 6].reshape(28, 28))  # digit 6: second row, second grid
    img = rect(consts["mnist.xlsx"]["playground"], "B3:AC30")
    z = img.reshape(-1) @ w10[:784] + w10[784]
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    close(rect(m["playground"], "AH4:AH13")[:, 0], p)
    assert m["playground"]["AF15"] == p.argmax()


@pytest.mark.libreoffice
def test_no_error_cells(lo):
    for book in BOOKS:
        assert oracle.error_cells(lo[book]) == [], book


def test_samples_are_balanced(mnist_inputs):
    assert np.sum(mnist_inputs["y3"] == 1) == ROWS // 2
    assert np.bincount(mnist_inputs["y10"], minlength=10).tolist() == [ROWS // 10] * 10
    assert len({row.tobytes() for row in mnist_inputs["x3"]}) == ROWS  # no repeats


def sheet_names(path: Path) -> dict[str, dict[str, str]]:
    """Sheet-scoped defined names per sheet, with the hidden flag: {sheet: {name: (text, hidden)}}."""
    with zipfile.ZipFile(path) as z:
        root = ET.fromstring(z.read("xl/workbook.xml"))
    sheets = [s.get("name") for s in root.find("m:sheets", NS)]
    out: dict = {s: {} for s in sheets}
    for dn in root.find("m:definedNames", NS):
        out[sheets[int(dn.get("localSheetId"))]][dn.get("name")] = (dn.text, dn.get("hidden") == "1")
    return out


@pytest.mark.parametrize("book,sheet", list(MODELS))
def test_solver_and_xlmnist_names(book, sheet, built):
    names = sheet_names(built / book)[sheet]
    refs, obj, acc, _ = MODELS[(book, sheet)]
    adj = ",".join(f"{sheet}!{_abs(r)}" for r in refs)
    assert names["solver_opt"] == (f"{sheet}!{_abs(obj)}", True)
    assert names["solver_adj"] == (adj, True)
    assert names["solver_typ"] == ("2", True)
    for key, value in SOLVER_OPTIONS.items():
        assert names[key] == (value, True)
    assert names["xlmnist_objective"][0] == f"{sheet}!{_abs(obj)}"
    assert names["xlmnist_params"][0] == adj
    assert names["xlmnist_accuracy"][0] == f"{sheet}!{_abs(acc)}"
    assert {"xlmnist_predictions", "xlmnist_labels", "xlmnist_data"} <= set(names)
    if book != "titanic.xlsx":
        assert names["xlmnist_data"][0] == f"data!$A$2:$ADF${ROWS + 1}"


# the gradient blocks beside the weights (same shapes as the params, in the same order)
GRADIENTS = {
    ("titanic.xlsx", "linear"): ["R10:AA10"],
    ("titanic.xlsx", "nnet"): ["R8:AA9"],
    ("titanic.xlsx", "mmult"): ["S16:T25"],
    ("mnist_3v7.xlsx", "linear"): ["A4:ADE4"],
    ("mnist_3v7.xlsx", "simple_net"): ["B794:AE1578", "BL3:CP3"],
    ("mnist.xlsx", "linear10"): ["B794:K1578"],
    ("mnist.xlsx", "mlp"): [MLP["g1"], MLP["g2"]],
}


@pytest.mark.parametrize("book,sheet", list(MODELS))
def test_learner_view_names(book, sheet, built, consts):
    from openpyxl.utils.cell import range_boundaries as rb

    names = sheet_names(built / book)[sheet]
    grads = GRADIENTS[(book, sheet)]
    assert names["xlmnist_gradients"] == (",".join(f"{sheet}!{_abs(r)}" for r in grads), False)
    for g, p in zip(grads, MODELS[(book, sheet)][0]):
        (a1, b1, a2, b2), (c1, d1, c2, d2) = rb(g), rb(p)
        assert (a2 - a1, b2 - b1) == (c2 - c1, d2 - d1)
        assert not any(re.fullmatch(r"[A-Z]+\d+", k) and _inside(k, g) for k in consts[book][sheet])  # empty
    if book == "titanic.xlsx":
        assert "xlmnist_history" not in names and "xlmnist_confusion" not in names
        return
    k = 2 if book == "mnist_3v7.xlsx" else 10
    hist = f"history_{sheet}"
    assert names["xlmnist_history"][0] == f"{hist}!$A$3:$E$202"
    assert names["xlmnist_confusion"][0] == f"{hist}!{_abs(f'H4:{_col(7 + k)}{3 + k}')}"
    cells = consts[book][hist]
    assert [cells[f"{c}2"] for c in "ABCDE"] == [
        "epoch",
        "train_loss",
        "valid_loss",
        "valid_accuracy",
        "seconds",
    ]
    labels = [3, 7] if k == 2 else list(range(10))
    assert [cells[f"{_col(8 + i)}3"] for i in range(k)] == labels
    assert [cells[f"G{4 + i}"] for i in range(k)] == labels
    with zipfile.ZipFile(built / book) as z:
        charts = [z.read(n) for n in z.namelist() if n.startswith("xl/charts/chart")]
    assert len(charts) == 4  # two model sheets per book, two charts each
    assert any(f"'{hist}'!$B$3:$B$202".encode() in c for c in charts)  # train loss series
    assert any(f"'{hist}'!$D$3:$D$202".encode() in c for c in charts)  # valid accuracy series


def _inside(cell: str, area: str) -> bool:
    from openpyxl.utils.cell import range_boundaries as rb

    c1, r1, c2, r2 = rb(area)
    c, r, _, _ = rb(cell)
    return c1 <= c <= c2 and r1 <= r <= r2


def test_titanic_trains_on_its_visible_rows(consts):
    s = consts["titanic.xlsx"]["settings"]
    rows = {(s[f"A{r}"], s[f"B{r}"]): s.get(f"C{r}") for r in range(2, 100) if f"A{r}" in s}
    assert all(rows.get((sheet, "dataset")) in (None, "") for sheet in ("linear", "nnet", "mmult"))


@needs_course
def test_course_solver_options_are_copied():
    course = sheet_names(COURSE_TITANIC)["linear"]
    assert {k: v[0] for k, v in course.items() if k in SOLVER_OPTIONS} == SOLVER_OPTIONS


def _abs(ref: str) -> str:
    return ":".join("${}${}".format(*coordinate_from_string(p)) for p in ref.split(":"))


def test_settings_sheet(consts):
    for book, sheets in [("titanic.xlsx", ["linear", "nnet", "mmult"]), ("mnist_3v7.xlsx", ["linear", "simple_net"]),
                         ("mnist.xlsx", ["linear10", "mlp"])]:  # fmt: skip
        s = consts[book]["settings"]
        assert [s["A1"], s["B1"], s["C1"], s["D1"]] == ["sheet", "setting", "value", "meaning"]
        rows = {(s[f"A{r}"], s[f"B{r}"]): s[f"C{r}"] for r in range(2, 100) if f"A{r}" in s}
        for sheet in sheets:
            for key in ("optimizer", "lr", "epochs", "batch_size", "device", "seed", "dataset"):
                assert (sheet, key) in rows, (book, sheet, key)


def formulas(path: Path, sheet: str) -> dict[str, str]:
    with zipfile.ZipFile(path) as z:
        member = sheet_members(z, str(path))[sheet]
        out = {}
        with z.open(member) as fh:
            for _, el in ET.iterparse(fh):
                if el.tag == f"{{{NS['m']}}}c":
                    f = el.find("m:f", NS)
                    if f is not None:
                        out[el.get("r")] = "=" + f.text
                    el.clear()
    return out


@pytest.mark.parametrize(
    "book,sheet,block,across",
    [  # across: one formula for the whole block; else one formula per column, copied down
        ("titanic.xlsx", "nnet", f"I4:O{ROWS + 3}", False),
        ("titanic.xlsx", "nnet", f"AC4:AJ{ROWS + 3}", False),
        ("titanic.xlsx", "mmult", f"X4:AC{ROWS + 3}", False),
        ("mnist_3v7.xlsx", "linear", f"A10:F{ROWS + 9}", False),
        ("mnist_3v7.xlsx", "simple_net", f"AG6:CU{ROWS + 5}", False),
        ("mnist_3v7.xlsx", "simple_net", f"AH6:BK{ROWS + 5}", True),
        ("mnist_3v7.xlsx", "simple_net", f"BL6:CO{ROWS + 5}", True),
        ("mnist.xlsx", "linear10", f"M6:AU{ROWS + 5}", False),
        ("mnist.xlsx", "linear10", f"N6:W{ROWS + 5}", True),
        ("mnist.xlsx", "linear10", f"X6:AG{ROWS + 5}", True),
        ("mnist.xlsx", "linear10", f"AI6:AR{ROWS + 5}", True),
        ("mnist.xlsx", "data", f"ADG2:ADP{ROWS + 1}", True),
        ("mnist.xlsx", "mlp", f"{MLP['all'][0]}6:{MLP['all'][1]}{ROWS + 5}", False),
        ("mnist.xlsx", "mlp", f"{MLP['z'][0]}6:{MLP['z'][1]}{ROWS + 5}", True),
        ("mnist.xlsx", "mlp", f"{MLP['relu'][0]}6:{MLP['relu'][1]}{ROWS + 5}", True),
        ("mnist.xlsx", "mlp", f"{MLP['logits'][0]}6:{MLP['logits'][1]}{ROWS + 5}", True),
        ("mnist.xlsx", "mlp", f"{MLP['p'][0]}6:{MLP['p'][1]}{ROWS + 5}", True),
    ],
)
def test_blocks_are_one_formula_copied(built, book, sheet, block, across):
    """Every cell of a per-row block is its origin's formula copied (identical in R1C1 form)."""
    f = formulas(built / book, sheet)
    c1, r1, c2, r2 = range_boundaries(block)
    for c in range(c1, c2 + 1):
        origin = f"{_col(c1 if across else c)}{r1}"
        if origin not in f:  # a constant column (Ones)
            assert all(f"{_col(c)}{r}" not in f for r in range(r1, r2 + 1))
            continue
        tr = Translator(f[origin], origin)
        for r in range(r1, r2 + 1):
            ref = f"{_col(c)}{r}"
            assert f[ref] == tr.translate_formula(ref), ref


def set_cells(src: Path, dst: Path, sheet: str, edits: dict[str, float]) -> None:
    """Copy ``src`` to ``dst`` with new constant values in ``sheet``'s cells (sheet XML edited in place)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        member = sheet_members(zin, str(src))[sheet]
        for item in zin.infolist():
            raw = zin.read(item.filename)
            if item.filename == member:
                text = raw.decode()
                for ref, value in edits.items():
                    text, n = re.subn(rf'(<c r="{ref}"[^>]*>)<v>[^<]*</v>', rf"\g<1><v>{value!r}</v>", text)
                    assert n == 1, ref
                raw = text.encode()
            zout.writestr(item, raw)


EDITS = [  # book, sheet, cell edits
    ("titanic.xlsx", "nnet", {"R4": 0.9, "AA5": -0.7}),
    ("mnist_3v7.xlsx", "simple_net", {"B300": 2.5, "BL4": 1.5, "CP4": -0.25}),
    ("mnist.xlsx", "linear10", {"D200": 3.0, "K791": 0.5}),
]


@pytest.mark.libreoffice
@pytest.mark.parametrize("book,sheet,edits", EDITS)
def test_edit_a_weight_moves_the_loss(built, consts, mnist_inputs, tmp_path, book, sheet, edits):
    copy = tmp_path / book
    set_cells(built / book, copy, sheet, edits)
    cells = dict(consts[book][sheet])
    refs, obj, acc, _ = MODELS[(book, sheet)]
    before = expected(book, sheet, [rect(cells, r) for r in refs], mnist_inputs)["loss"]
    cells.update(edits)
    want = expected(book, sheet, [rect(cells, r) for r in refs], mnist_inputs)
    got = oracle.recalc(copy)[sheet]
    assert abs(want["loss"] - before) > 1e-6
    close(got[obj], want["loss"])
    close(got[acc], want["acc"])


def test_same_seed_same_bytes_other_seed_other_params(built, consts, tmp_path):
    again = tmp_path / "again"
    proc = run_build("--out", str(again), "--rows", str(ROWS), "--only", "titanic.xlsx", "mnist_3v7.xlsx")
    assert proc.returncode == 0, proc.stderr
    for book in ("titanic.xlsx", "mnist_3v7.xlsx"):
        assert filecmp.cmp(built / book, again / book, shallow=False), book
    other = tmp_path / "other"
    proc = run_build(
        "--out", str(other), "--rows", "20", "--seed", "1", "--only", "titanic.xlsx", "mnist_3v7.xlsx"
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in other.iterdir()) == ["mnist_3v7.xlsx", "titanic.xlsx"]
    o = {b: oracle.read_values(other / b) for b in ("titanic.xlsx", "mnist_3v7.xlsx")}
    for (book, sheet), (refs, *_rest) in MODELS.items():
        if book in o:
            for r in refs:
                a, b = rect(consts[book][sheet], r), rect(o[book][sheet], r)
                assert a.shape == b.shape and not np.any(a == b), (book, sheet, r)


@pytest.mark.parametrize("args", [["--rows", "0"], ["--rows", "-3"], ["--rows", "many"], ["--seed", "-1"]])
def test_bad_arguments_fail_with_one_line(tmp_path, capsys, args):
    from xlmnist import cli

    out = tmp_path / "out"
    try:
        code = cli.main(["build", "--out", str(out), *args])
    except SystemExit as exc:  # argparse's own type errors: usage line + one error line
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert (
        err[-1].startswith("xlmnist")
        and "error" in err[-1]
        and (len(err) == 1 or err[0].startswith("usage:"))
    )
    assert not out.exists()


@pytest.mark.libreoffice
def test_full_titanic_matches_the_course_preprocessing(tmp_path):
    """Default size: all 712 rows; the feature formulas reproduce data.titanic_table()'s columns."""
    from xlmnist.lessons import build_all

    (path,) = build_all(tmp_path, only=["titanic.xlsx"])
    got = oracle.recalc(path)
    t = data.titanic_table()
    assert len(t) == 712
    for sheet in ("linear", "nnet", "mmult"):
        close(rect(got[sheet], "G4:P715"), t[data.TITANIC_FEATURES].to_numpy(float))
        assert "A716" not in got[sheet]
    p = rect(oracle.read_values(path)["nnet"], "R4:AA5")
    close(got["nnet"]["AH1"], titanic_model("nnet", p, 712)["loss"])
    close(got["mmult"]["AA1"], got["nnet"]["AH1"])


def test_unwritable_out_fails_with_one_line_and_writes_nothing(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "sub"):
        proc = run_build("--out", str(out), "--rows", "5")
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("xlmnist: error:") and str(blocker) in lines[0], lines
    assert blocker.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_failure_while_saving_leaves_no_partial_or_temp_file(tmp_path):
    """The target name is taken by a folder: the write fails at the final rename; nothing else is left."""
    (tmp_path / "titanic.xlsx").mkdir()
    proc = run_build("--out", str(tmp_path), "--rows", "5", "--only", "titanic.xlsx")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "titanic.xlsx" in lines[0], lines
    assert [p.name for p in tmp_path.iterdir()] == ["titanic.xlsx"]
    assert list((tmp_path / "titanic.xlsx").iterdir()) == []


@pytest.mark.slow
def test_default_sizes_fit_the_limit(tmp_path):
    proc = run_build("--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    sizes = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    assert set(sizes) == set(BOOKS)
    assert all(s < 15e6 for s in sizes.values()), sizes
    shutil.rmtree(tmp_path)
