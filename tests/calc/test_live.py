"""End to end in a real LibreOffice: open a lesson workbook, edit a weight cell, press Train (Step,
Reset) through the installed extension and read the live cells back. Calc's own recalculation of the
loss cell must equal the objective xlmnist reports, and nothing may be saved to disk."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from calclive import TRAIN, render

from xlmnist.lessons.learn import HISTORY_ROWS

pytestmark = [pytest.mark.calc_live, pytest.mark.libreoffice, pytest.mark.slow]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _open(calc, books: Path, tmp: Path, book: str, name: str, sheet: str) -> Path:
    path = tmp / f"{name}.xlsx"
    shutil.copyfile(books / book, path)
    calc.call("open", name=name, path=str(path), sheet=sheet, hidden=False)
    return path


def _folder_state(folder: Path) -> dict:
    return {p.name: _sha(p) for p in folder.iterdir() if p.is_file() and not p.name.startswith(".~lock")}


@pytest.mark.parametrize("sheet, loss, weights, preds", [
    ("linear", "AA7", "R4:AA4", "AC4:AC103"),
    ("nnet", "AH1", "R4:AA5", "AG4:AG103"),
    ("mmult", "AA1", "S4:T13", "Y4:Y103"),
])  # fmt: skip
def test_train_on_the_live_document(calc, books, workdir, sheet, loss, weights, preds):
    folder = workdir / f"train_{sheet}"
    folder.mkdir()
    path = _open(calc, books, folder, "titanic.xlsx", f"t_{sheet}", sheet)
    before_disk = _folder_state(folder)
    doc = f"t_{sheet}"
    calc.call("set", doc=doc, sheet=sheet, ref=weights.split(":")[0], values=[[0.9]])  # the user's edit
    edited = calc.call("get", doc=doc, sheet=sheet, ref=loss)[0][0]
    old_preds = calc.call("get", doc=doc, sheet=sheet, ref=preds)
    result = calc.macro(doc, "train")
    assert result["ok"], result
    assert result["objective_cell"] == f"{sheet}!{loss}"
    assert result["initial_objective"] == pytest.approx(edited, rel=1e-9)  # it trained the edited model
    shown = calc.call("get", doc=doc, sheet=sheet, ref=loss)[0][0]  # Calc's own recalculation
    assert shown == pytest.approx(result["objective"], rel=1e-9, abs=1e-12)
    assert shown < edited * 0.5
    assert calc.call("get", doc=doc, sheet=sheet, ref=preds) != old_preds
    assert calc.call("get", doc=doc, sheet=sheet, ref=weights.split(":")[0])[0][0] != 0.9
    assert calc.call("modified", doc=doc) is True  # modified in memory only
    assert _folder_state(folder) == before_disk, "xlmnist saved a file"
    assert _sha(path) == before_disk[path.name]


def test_the_same_session_as_the_cli(calc, books, workdir):
    """Train in Calc on the unedited sheet equals ``train_book`` on the same file: one session."""
    from xlmnist.train.session import train_book

    folder = workdir / "same"
    folder.mkdir()
    _open(calc, books, folder, "titanic.xlsx", "same", "nnet")
    live = calc.macro("same", "train")
    copy = folder / "cli.xlsx"
    shutil.copyfile(books / "titanic.xlsx", copy)
    cli = train_book(copy, sheet="nnet")
    assert live["objective"] == pytest.approx(cli["objective"], rel=1e-9)
    assert live["steps"] == cli["steps"]
    weights = calc.call("get", doc="same", sheet="nnet", ref="R4:AA5")
    from xlmnist.xlsx.reader import read_workbook

    wb = read_workbook(copy).sheets["nnet"].values
    want = [[wb[(r, c)] for c in range(18, 28)] for r in (4, 5)]
    assert torch.allclose(torch.tensor(weights), torch.tensor(want), rtol=1e-9, atol=1e-12)
    grads = calc.call("get", doc="same", sheet="nnet", ref="R8:AA9")  # the gradient block is written too
    assert any(abs(g) > 0 for row in grads for g in row)


def test_step_and_reset(calc, books, workdir):
    """Step is ``xlmnist step`` (one SGD step at the sheet's learning rate) on the live values."""
    from xlmnist.train.session import step_book

    folder = workdir / "step"
    folder.mkdir()
    _open(calc, books, folder, "titanic.xlsx", "step", "linear")
    step = calc.macro("step", "step")
    assert step["ok"], step
    after = calc.call("get", doc="step", sheet="linear", ref="AA7")[0][0]
    assert after == pytest.approx(step["objective"], rel=1e-9)
    copy = folder / "cli.xlsx"
    shutil.copyfile(books / "titanic.xlsx", copy)
    assert step_book(copy, sheet="linear")["objective"] == pytest.approx(after, rel=1e-9)
    reset = calc.macro("step", "reset")
    assert reset["ok"], reset
    shown = calc.call("get", doc="step", sheet="linear", ref="AA7")[0][0]
    assert shown == pytest.approx(reset["objective"], rel=1e-9)


def test_step_on_a_minibatch_sheet(calc, books, workdir):
    """mnist_3v7 simple_net: a 785 x 30 weight block, MMULT, the data sheet's 100 visible rows."""
    folder = workdir / "mnist"
    folder.mkdir()
    path = _open(calc, books, folder, "mnist_3v7.xlsx", "mnist", "simple_net")
    sha = _sha(path)
    res = calc.macro("mnist", "step")
    assert res["ok"], res
    name = res["objective_cell"].split("!")[1]
    shown = calc.call("get", doc="mnist", sheet="simple_net", ref=name)[0][0]
    assert shown == pytest.approx(res["objective"], rel=1e-9)
    assert _sha(path) == sha


def test_an_error_is_one_line_naming_the_cell(calc, books, workdir):
    folder = workdir / "error"
    folder.mkdir()
    _open(calc, books, folder, "titanic.xlsx", "bad", "linear")
    calc.call("set", doc="bad", sheet="linear", ref="R4", values=[["abc"]])
    res = calc.macro("bad", "train")
    assert res["ok"] is False
    assert "linear!R4" in res["error"] and "\n" not in res["error"]
    assert calc.call("get", doc="bad", sheet="linear", ref="R4")[0][0] == "abc"  # nothing written


def test_history_charts_cover_the_epochs_trained(calc, books, workdir):
    """mnist_3v7 linear, 2 epochs set on the live settings sheet: the history block gets 2 rows and the
    charts of history_linear plot exactly those rows."""
    folder = workdir / "history"
    folder.mkdir()
    _open(calc, books, folder, "mnist_3v7.xlsx", "hist", "linear")
    table = calc.call("get", doc="hist", sheet="settings", ref="A1:C60")
    row = next(i for i, r in enumerate(table, 1) if r[0] == "linear" and r[1] == "epochs")
    calc.call("set", doc="hist", sheet="settings", ref=f"C{row}", values=[[2]])
    res = calc.macro("hist", "train")
    assert res["ok"], res
    assert res["epochs"] == 2
    hist = calc.call("get", doc="hist", sheet="history_linear", ref="A3:B5")
    assert [r[0] for r in hist[:2]] == [1.0, 2.0] and hist[2] == ["", ""]
    ranges = calc.call("chart_ranges", doc="hist", sheet="history_linear")
    assert ranges and all(r.endswith("$4") for r in ranges), ranges
    img = render(calc, "hist", "history_linear", folder, "mnist_3v7_history_linear", ref="A1:AB40")
    assert (img.max(axis=2) - img.min(axis=2) > 40).sum() > 100  # the charts' coloured lines are drawn


def test_export_writes_the_module_beside_the_document(calc, books, workdir):
    """Export: the sheet as the live document holds it (an edited weight included) as PyTorch code next to
    the workbook; the workbook file itself stays as it was."""
    import subprocess
    import sys

    folder = workdir / "export"
    folder.mkdir()
    path = _open(calc, books, folder, "titanic.xlsx", "exp", "nnet")
    sha = _sha(path)
    res = calc.macro("exp", "export")
    assert res["ok"], res
    module = Path(res["path"])
    assert module == folder / "exp_nnet.py" and module.is_file()
    compile(module.read_text(), str(module), "exec")
    run = subprocess.run([sys.executable, str(module), str(path), "--json"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert _sha(path) == sha and calc.call("modified", doc="exp") is False


def _setting(calc, doc: str, sheet: str, key: str, value) -> None:
    """``key`` of ``sheet`` on the live settings sheet set to ``value`` (a new row when it has none)."""
    table = calc.call("get", doc=doc, sheet="settings", ref="A1:C80")
    row = next((i for i, r in enumerate(table, 1) if r[0] == sheet and r[1] == key), None)
    if row is None:
        row = next(i for i, r in enumerate(table, 1) if not any(r))
        calc.call("set", doc=doc, sheet="settings", ref=f"A{row}:C{row}", values=[[sheet, key, value]])
    else:
        calc.call("set", doc=doc, sheet="settings", ref=f"C{row}", values=[[value]])


@pytest.mark.parametrize("book, sheet, settings", [
    ("titanic.xlsx", "linear", {"optimizer": "sgd", "lr": 1e-4, "epochs": 10**8}),  # full batch: step by step
    ("mnist_3v7.xlsx", "linear", {"epochs": 10**5}),  # minibatch: sgd, 256 rows a step, mnist_3v7
])  # fmt: skip
def test_cancel_stops_the_run_and_writes_the_values_so_far(calc, books, workdir, book, sheet, settings):
    """Cancel pressed while Train runs (the macros as the buttons call them, Train in a thread of the
    driver): the run stops at its next step, the values so far are in the cells and Calc's loss cell
    equals the objective reported; the result says it was cancelled. A run far too long to end by itself
    (``max_seconds`` only keeps a broken Cancel from hanging the test)."""
    tag = f"cancel_{Path(book).stem}"
    folder = workdir / tag
    folder.mkdir()
    path = _open(calc, books, folder, book, tag, sheet)
    sha = _sha(path)
    for key, value in {**settings, "max_seconds": 60}.items():
        _setting(calc, tag, sheet, key, value)
    idle = calc.macro(tag, "cancel")
    assert idle == {"ok": False, "action": "cancel", "error": "no training run is in progress"}
    t0 = time.monotonic()
    calc.call("script_start", doc=tag, tag=tag, uri=TRAIN.format("train"))
    time.sleep(2)  # into the training loop (pressed earlier, Cancel stops it after its first step)
    for _ in range(1200):  # Cancel until a run is in progress to take it
        if calc.macro(tag, "cancel")["ok"]:
            break
        time.sleep(0.05)
    else:
        pytest.fail("Cancel never found the run in progress")
    res = json.loads(calc.call("script_join", tag=tag, timeout=120))
    assert res["ok"], res
    assert res["interrupted"] is True and time.monotonic() - t0 < 50  # stopped by Cancel, not the limit
    assert res["message"].endswith(": cancelled; the values so far were written"), res["message"]
    if res["epochs"] is None:  # full batch: the steps so far
        assert 1 <= res["steps"] < 10**8
    else:  # minibatch: stopped within the epoch Cancel came in, so its row is the last
        assert 1 <= res["epochs"] < HISTORY_ROWS
        hist = calc.call("get", doc=tag, sheet=f"history_{sheet}", ref=f"A3:A{3 + res['epochs']}")
        assert [r[0] for r in hist] == [*range(1, res["epochs"] + 1), ""]
    cell = res["objective_cell"].split("!")[1]
    shown = calc.call("get", doc=tag, sheet=sheet, ref=cell)[0][0]  # Calc's own recalculation
    assert shown == pytest.approx(res["objective"], rel=1e-9, abs=1e-12)
    assert res["initial_objective"] != res["objective"]  # the values written are the trained ones
    assert calc.macro(tag, "cancel")["ok"] is False  # the run is over
    assert _sha(path) == sha  # nothing saved


def test_the_toolbar_title_is_in_libreoffices_configuration(calc):
    """The installed extension's CalcWindowState.xcu is merged: the toolbar is titled "xlmnist"."""
    url = "private:resource/toolbar/addon_org.xlmnist.calc.toolbar"
    assert calc.call("toolbar_title", url=url)["state"] == "xlmnist"
