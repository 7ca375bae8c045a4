"""write_training_results: params, gradients, history, confusion and cached formula values in one write.

Real built workbooks, the real compiler, real LibreOffice: once with its DEFAULT settings (a fresh empty
profile; it shows the cached values without recalculating) and once forced to recalculate everything.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import openpyxl
import pytest
import torch
from testenv import COURSE_TITANIC, needs_course

from xlmnist import oracle
from xlmnist.compile import compile_workbook
from xlmnist.errors import WorkbookError
from xlmnist.lessons import mnist
from xlmnist.train.results import areas, history_block, sheet_names, write_training_results
from xlmnist.xlsx.refs import area_name, split_ref
from xlmnist.xlsx.writeback import write_values

ROOT = Path(__file__).resolve().parents[2]
ROWS = 60
BOOKS = {"mnist_3v7.xlsx": (("linear", 2), ("simple_net", 2)), "mnist.xlsx": (("linear10", 10), ("mlp", 10))}


@pytest.fixture(scope="module")
def books(tmp_path_factory, mnist_dir):
    # XLMNIST_DATA for this module's tests only: the tiny set (where full MNIST is missing) must not
    # become the "full MNIST" that later modules' 3-vs-7 data would be taken from
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XLMNIST_DATA", os.environ.get("XLMNIST_DATA") or str(mnist_dir))
        out = tmp_path_factory.mktemp("learn")
        mnist.build_3v7(out / "mnist_3v7.xlsx", rows=ROWS, seed=0)
        mnist.build_mnist(out / "mnist.xlsx", rows=ROWS, seed=0)
        yield out


def lo_default(path: Path) -> dict:
    """LibreOffice with its default settings (fresh empty profile): open, save as xlsx, read values."""
    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp) / "profile"
        cmd = [
            oracle.soffice_binary(),
            f"-env:UserInstallation={profile.as_uri()}",
            "--headless",
            "--norestore",
            "--convert-to",
            "xlsx",
            "--outdir",
            str(Path(tmp) / "out"),
            str(path),
        ]
        subprocess.run(cmd, capture_output=True, timeout=300, check=True)
        return oracle.read_values(Path(tmp) / "out" / path.name)


def cells_of(values: dict, ref: str) -> np.ndarray:
    from xlmnist.xlsx.refs import col_letters

    sheet, r1, c1, r2, c2 = split_ref(ref)
    cells = values[sheet]
    return np.array(
        [[cells.get(f"{col_letters(c)}{r}") for c in range(c1, c2 + 1)] for r in range(r1, r2 + 1)],
        dtype=object,
    )


def close(got, want, rtol=1e-9):
    np.testing.assert_allclose(np.asarray(got, float), np.asarray(want, float), rtol=rtol, atol=1e-12)


def members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def history(n: int) -> list[dict]:
    return [
        dict(
            epoch=i + 1,
            train_loss=1 / (i + 1),
            valid_loss=1.5 / (i + 1),
            valid_accuracy=0.5 + i / 100,
            seconds=i * 0.25,
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def written(books, tmp_path_factory):
    """Both MNIST books with every model sheet's results written (new params, gradients, history,
    confusion); returns {book: (path, {sheet: (model, params, gradients, confusion)})}."""
    out = tmp_path_factory.mktemp("written")
    result = {}
    for book, sheets in BOOKS.items():
        path = out / book
        shutil.copyfile(books / book, path)
        info = {}
        for sheet, k in sheets:
            model = compile_workbook(path, sheet=sheet)
            gen = torch.Generator().manual_seed(len(sheet))
            params = [
                p + 0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in model.initial_params()
            ]
            grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
            cm = np.arange(k * k).reshape(k, k) * 3
            write_training_results(path, model, params, gradients=grads, history=history(9), confusion=cm)
            info[sheet] = (model, params, grads, cm)
        result[book] = (path, info)
    return result


@pytest.mark.libreoffice
@pytest.mark.parametrize("book", list(BOOKS))
def test_results_written_and_shown_without_recalculation(books, written, book):
    path, info = written[book]
    cached = oracle.read_values(path)
    shown = lo_default(path)  # LibreOffice's default: no recalculation on load
    forced = oracle.recalc(path)
    assert not oracle.error_cells(forced)
    openpyxl.load_workbook(path)  # still a valid workbook
    for sheet, (model, params, grads, cm) in info.items():
        names = sheet_names(path, sheet)
        obj = float(model.objective(params))
        s, cell = model.objective_ref.split("!")
        for values in (cached, shown, forced):
            close(values[s][cell], obj)
        for ref, p in zip(model.param_refs, params):
            close(cells_of(cached, ref), p.numpy())
        for ref, g in zip(areas(names["xlmnist_gradients"]), grads):
            close(cells_of(cached, ref.replace("$", "")), g.numpy())
        close(cells_of(cached, names["xlmnist_confusion"]), cm)
        hist = cells_of(cached, names["xlmnist_history"])
        close(hist[:9].astype(float), [[h[k] for k in h] for h in history(9)])
        assert (hist[9:] == None).all()  # noqa: E711
        # predictions (and every other parameter-dependent formula): cached = shown = forced
        pred = names["xlmnist_predictions"].replace("$", "")
        assert len(np.unique(cells_of(forced, pred).astype(float))) > 1  # real per-row predictions
        for b in model.dependent_blocks():
            ref = area_name(b.sheet, *b.out)
            c = cells_of(cached, ref)
            num = np.array([[isinstance(v, (float, bool)) for v in row] for row in c])
            if b.sheet != "playground":  # the playground's text prediction keeps its old cache
                assert num.all(), ref
            f = cells_of(forced, ref)
            close(cells_of(shown, ref)[num].astype(float), c[num].astype(float))
            close(c[num].astype(float), f[num].astype(float))
    # the weight heatmaps show the new weights without a recalculation
    w = info["linear" if book == "mnist_3v7.xlsx" else "linear10"][1][0].numpy()
    if book == "mnist_3v7.xlsx":
        close(cells_of(shown, "weights!B3:AC30").astype(float), w[0, :784].reshape(28, 28))
    else:
        from xlmnist.lessons.views import _grid_origin
        from xlmnist.xlsx.refs import col_letters as L

        r0, c0 = _grid_origin(7)
        grid = f"weights!{L(c0)}{r0}:{L(c0 + 27)}{r0 + 27}"
        close(cells_of(shown, grid).astype(float), w[:784, 7].reshape(28, 28))  # digit 7


def test_charts_and_other_members_unchanged(books, written):
    for book in BOOKS:
        before, after = members(books / book), members(written[book][0])
        assert list(before) == list(after)
        charts = [n for n in before if "chart" in n or "drawing" in n]
        assert len([n for n in charts if n.startswith("xl/charts/chart")]) == 2 * len(BOOKS[book])
        for name in charts + ["xl/styles.xml", "[Content_Types].xml"]:
            if name.startswith("xl/charts/chart"):  # only the history ranges' last row follows the run
                end = re.compile(rb"(:\$[A-Z]+\$)\d+(</f>)")
                assert end.sub(rb"\1N\2", before[name]) == end.sub(rb"\1N\2", after[name]), name
                continue
            assert before[name] == after[name], name


def test_shorter_run_clears_old_history_rows(written, tmp_path):
    path, info = written["mnist_3v7.xlsx"]
    dst = tmp_path / "again.xlsx"
    model, params, _, _ = info["linear"]
    write_training_results(path, model, params, history=history(3), out=dst)
    hist = cells_of(oracle.read_values(dst), sheet_names(dst, "linear")["xlmnist_history"])
    assert hist[:3, 0].tolist() == [1.0, 2.0, 3.0] and (hist[3:] == None).all()  # noqa: E711


@pytest.mark.parametrize(
    "n, rows, expect_first, expect_last",
    [(0, 4, None, None), (3, 4, 1.0, None), (4, 4, 1.0, 4.0), (500, 200, 1.0, 500.0)],
)
def test_history_block_thins_long_runs(n, rows, expect_first, expect_last):
    block = history_block(history(n), (rows, 5))
    assert block[0, 0] == expect_first and block[-1, 0] == expect_last
    if n > rows:
        epochs = block[:, 0].astype(float)
        assert (np.diff(epochs) > 0).all() and len(epochs) == rows


def test_bad_gradients_leave_file_unchanged(written, tmp_path):
    path, info = written["mnist_3v7.xlsx"]
    dst = tmp_path / "x.xlsx"
    shutil.copyfile(path, dst)
    before = dst.read_bytes()
    model, params, grads, _ = info["simple_net"]
    with pytest.raises(WorkbookError, match="xlmnist_gradients has 2 areas"):
        write_training_results(dst, model, params, gradients=grads[:1])
    with pytest.raises(WorkbookError, match="not finite"):
        write_training_results(dst, model, [params[0], params[1] * float("nan")])
    assert dst.read_bytes() == before


@pytest.mark.libreoffice
@needs_course
def test_course_titanic_params_and_cached_values_only(tmp_path):
    """The course workbook has no xlmnist names: params + cached <v> of dependent formula cells change,
    nothing else; LibreOffice's default view shows the new loss; a values-only write would not."""
    import re

    src = COURSE_TITANIC
    path, control = tmp_path / "titanic.xlsx", tmp_path / "control.xlsx"
    shutil.copyfile(src, path)
    model = compile_workbook(path, sheet="nnet")
    params = [p * 0.5 for p in model.initial_params()]
    write_training_results(path, model, params, gradients=[params[0]], history=history(2), confusion=[[1]])
    write_values(src, {model.param_refs[0]: params[0]}, out=control)
    obj = float(model.objective(params))
    assert oracle.read_values(path)["nnet"]["AH1"] == pytest.approx(obj, rel=1e-12)
    close(lo_default(path)["nnet"]["AH1"], obj)
    old = oracle.read_values(src)["nnet"]["AH1"]
    assert lo_default(control)["nnet"]["AH1"] == pytest.approx(old, rel=1e-12) != pytest.approx(obj)
    a, b = members(src), members(path)
    cell_re = re.compile(rb'<c r="([A-Z]+\d+)"[^>]*?(?:/>|>.*?</c>)', re.S)
    dep = {area_name(b_.sheet, *b_.out) for b_ in model.dependent_blocks()}
    for name in a:
        if a[name] == b[name]:
            continue
        assert name in ("xl/workbook.xml", "xl/worksheets/sheet2.xml"), name
        if name.endswith("sheet2.xml"):
            ca = {m.group(1): m.group(0) for m in cell_re.finditer(a[name])}
            cb = {m.group(1): m.group(0) for m in cell_re.finditer(b[name])}
            assert set(ca) == set(cb)
            changed = [r for r in ca if ca[r] != cb[r]]
            assert len(changed) > 2000  # params + the model columns' <v>
            for r in changed:
                strip = re.compile(rb"<v>[^<]*</v>")
                if b"<f" in ca[r]:
                    assert strip.sub(b"", ca[r]) == strip.sub(b"", cb[r]), r
                else:
                    assert re.fullmatch(rb"([R-Z]|AA)[45]", r), r  # the params R4:AA5
    assert dep  # the loss and the model columns were recomputed
