"""The ribbon's Train/Step on xlwings' remote engine run the same session as ``xlmnist train``/``step``
(dataset, minibatches, lr schedule, validation, gradient row, history, confusion matrix), refuse unsaved
edits, error cells and a missing CUDA in Excel's words, and honour Cancel and the time limit."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import xlwings as xw  # noqa: E402
from xlbook import file_values, make_payload, open_book, written  # noqa: E402

from xlmnist import excel  # noqa: E402
from xlmnist.compile import compile_workbook  # noqa: E402
from xlmnist.excel import runs  # noqa: E402
from xlmnist.train import commands  # noqa: E402
from xlmnist.xlsx import writeback  # noqa: E402


def funcs(book) -> list[str]:
    return [a["func"] for a in book.json()["actions"]]


def test_train_in_excel_is_the_cli_session(built, tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setenv("XLMNIST_DATA", str(tiny_mnist))
    path = tmp_path / "mnist_3v7.xlsx"
    shutil.copyfile(built, path)
    model = compile_workbook(path, sheet="linear")
    (ref,) = model.param_refs
    live = {ref: np.full(tuple(model.initial_params()[0].shape), 0.01)}  # typed in, not saved
    book = open_book(path, "linear", live)
    res = excel.train(book, epochs=2, device="cpu")
    assert res["ok"], res
    assert res["dataset"] == "mnist_3v7" and res["batch_size"] == 256 and res["epochs"] == 2
    got = written(book)
    # gradient row, history (one row per epoch), confusion matrix: one range call each, then calculate
    assert set(got) == {ref, "linear!A4:ADE4", "history_linear!A3:E202", "history_linear!H4:I5"}
    assert funcs(book)[-1] == "calculate" and funcs(book).count("setValues") == 4
    assert got["history_linear!A3:E202"][1, 0] == 2 and np.isnan(got["history_linear!A3:E202"][2, 0])
    assert got["history_linear!H4:I5"].sum() == res["valid_rows"]
    assert any(s.startswith("xlmnist: epoch 2/2, loss ") and "accuracy" in s for s in res["status"])

    # the CLI on the same file holding the same start values, same seed: the same parameters
    start = writeback.write_values(path, live, out=tmp_path / "start.xlsx")
    parser = commands.argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    args = parser.parse_args(["train", str(start), "--sheet", "linear", "--epochs", "2", "--quiet"])
    assert args.func(args) == 0
    cli = compile_workbook(start, sheet="linear")
    np.testing.assert_allclose(got[ref], cli.initial_params()[0].numpy(), rtol=0, atol=1e-12)
    assert np.isfinite(got["linear!A4:ADE4"]).all()


def test_step_in_excel_is_one_cli_step(built, tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setenv("XLMNIST_DATA", str(tiny_mnist))
    book = open_book(built, "linear")
    res = excel.step(book, seed=5)
    assert res["ok"] and res["steps"] == 1 and res["batch_rows"] == 256
    out = tmp_path / "stepped.xlsx"
    assert commands.step_book(built, sheet="linear", seed=5, out=out)["objective"] == res["objective"]
    np.testing.assert_allclose(
        written(book)["linear!A3:ADE3"], compile_workbook(out, sheet="linear").initial_params()[0].numpy()
    )


@pytest.mark.parametrize(
    "where, value, needle",
    [
        ("data!B7", 0.5, "data!B7: the data in the open workbook differs from the saved file"),
        ("data!ADF2", 9, "data!ADF2: the data in the open workbook differs"),
        ("settings!D2", 0.5, "a setting in the open workbook differs"),
    ],
)
def test_unsaved_edits_are_refused(built, where, value, needle):
    book = open_book(built, "linear", {where: [[value]]})
    res = excel.train(book, epochs=1)
    assert not res["ok"] and needle in res["error"], res
    assert res["error"].endswith("Save the workbook (Ctrl+S), then press Train")
    assert "setValues" not in funcs(book)


def test_error_cells_in_weights_are_refused_by_name(built):
    book = open_book(built, "linear", {"linear!C3": [["#DIV/0!"]]})
    res = excel.train(book)
    assert res["error"].startswith("linear!C3: the trainable cell shows the error #DIV/0!"), res


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("action", [excel.train, excel.step])
def test_cuda_asked_for_without_cuda_says_so_in_excel_words(built, action):
    res = action(open_book(built, "linear"), device="cuda")
    assert not res["ok"] and "CUDA is not available" in res["error"]
    assert "set device to cpu (or auto) in the settings sheet" in res["error"] and "--" not in res["error"]


def test_sheet_without_objective_is_explained_in_excel_words(built):
    res = excel.train(open_book(built, "weights"))
    assert not res["ok"] and "--" not in res["error"], res
    assert "xlmnist_objective" in res["error"] and "Solver" in res["error"]


def test_cancel_file_stops_the_run_and_a_second_train_is_refused(built, tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setenv("XLMNIST_DATA", str(tiny_mnist))
    path = tmp_path / "mnist_3v7.xlsx"
    shutil.copyfile(built, path)
    seen = []

    def meanwhile():  # during the run: a second Train is refused, then Cancel is pressed
        if not seen:
            second = excel.train(open_book(path, "linear"))
            seen.append(second)
            assert excel.cancel(open_book(path, "linear"))["ok"]
        return False

    book = open_book(path, "linear")
    res = excel.train(book, epochs=50, cancel=meanwhile)
    assert "a training run is in progress" in seen[0]["error"]
    assert res["ok"] and res["interrupted"] and res["epochs"] == 1, res
    assert res["message"].endswith("cancelled; the values so far were written")  # also an alert
    assert not runs.run_file(path).exists() and not runs.cancel_file(path).exists()
    assert not excel.cancel(open_book(path, "linear"))["ok"]  # nothing running any more


def test_time_limit_setting_stops_the_run(built, tmp_path, tiny_mnist, monkeypatch):
    """``max_seconds`` in the settings sheet: the run stops after the first step and keeps its values."""
    import openpyxl

    monkeypatch.setenv("XLMNIST_DATA", str(tiny_mnist))
    path = tmp_path / "limited.xlsx"
    wb = openpyxl.load_workbook(built)
    wb["settings"].append(["linear", "max_seconds", 1e-9, "time limit of a run (seconds)"])
    wb.save(path)
    res = excel.train(open_book(path, "linear"))
    assert res["ok"], res
    assert res["max_seconds"] == 1e-9 and res["steps"] == 1 and res["epochs"] == 1


def test_export_writes_the_live_weights_and_never_overwrites(built, tmp_path):
    path = tmp_path / "mnist_3v7.xlsx"
    shutil.copyfile(built, path)
    shape = tuple(compile_workbook(path, sheet="linear").initial_params()[0].shape)
    first = excel.export(open_book(path, "linear", {"linear!A3:ADE3": np.full(shape, 0.25)}))
    second = excel.export(open_book(path, "linear", {"linear!A3:ADE3": np.full(shape, -0.5)}))
    assert first["ok"] and second["ok"], (first, second)
    one, two = Path(first["path"]), Path(second["path"])
    assert one.name == "mnist_3v7_linear.py" and two.name == "mnist_3v7_linear_2.py"
    assert "mnist_3v7_linear.py exists and was kept" in second["message"]

    assert "[[0.25, 0.25, 0.25" in one.read_text() and "[[-0.5, -0.5, -0.5" in two.read_text()  # live values


def test_unsaved_name_change_is_refused(built):
    """The trainable cells redefined in the open workbook (Solver's By Changing Variable Cells, or the
    xlmnist_params name) but not saved: refused; the same names as the file pass."""

    at = list(file_values(built)).index("linear")  # the books open on a start sheet

    def names(params):
        return [
            {"name": f"linear!{k}", "sheet_index": at, "address": a, "book_scope": False,
             "scope_sheet_name": "linear", "scope_sheet_index": at}
            for k, a in (("xlmnist_params", params), ("xlmnist_objective", "B5"))
        ]  # fmt: skip

    for params, ok in (("A3:ADE3", True), ("A3:ADD3", False)):
        payload = make_payload(file_values(built), str(built), "linear")
        payload["names"] = names(params)
        res = excel.reset(xw.Book(json=payload))
        assert res["ok"] is ok, res
        if not ok:
            assert res["error"].startswith(
                "linear!A3:ADE3: the name xlmnist_params in the open workbook differs"
            )
