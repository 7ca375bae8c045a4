"""Warm clicks (xlmnist.excel.warm): in one Python process the second Step reuses the compile of the saved
file, a saved-again file is compiled again, and warm results equal cold ones exactly; the live checks
still run on every click (their bulk comparison included)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

from xlbook import open_book, written  # noqa: E402

from xlmnist import excel  # noqa: E402
from xlmnist.excel import cells, warm  # noqa: E402
from xlmnist.xlsx.reader import read_workbook  # noqa: E402
from xlmnist.xlsx.writeback import write_values  # noqa: E402

W = "linear!A3:ADE3"  # the trainable cells of mnist_3v7's linear sheet


@pytest.fixture
def book_file(built, tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setenv("XLMNIST_DATA", str(tiny_mnist))
    path = tmp_path / "mnist_3v7.xlsx"
    shutil.copyfile(built, path)
    warm.clear()
    yield path
    warm.clear()


def test_second_step_reuses_the_compile_and_equals_a_cold_step(book_file):
    start = warm.stats["compiles"]
    first = excel.step(open_book(book_file, "linear"), seed=3)
    saved = warm.compiled(book_file, "linear")
    book = open_book(book_file, "linear")
    second = excel.step(book, seed=3)
    assert first["ok"] and second["ok"], (first, second)
    assert warm.stats["compiles"] == start + 1  # one compile for three uses
    assert warm.compiled(book_file, "linear") is saved
    assert second["objective"] == first["objective"]

    warm.clear()  # a cold process
    cold_book = open_book(book_file, "linear")
    cold = excel.step(cold_book, seed=3)
    assert warm.stats["compiles"] == start + 2 and warm.compiled(book_file, "linear") is not saved
    assert cold["objective"] == second["objective"] and cold["metrics"] == second["metrics"]
    got, want = written(book), written(cold_book)
    assert got.keys() == want.keys() and W in got
    for ref in want:
        np.testing.assert_array_equal(got[ref], want[ref])


def test_warm_train_equals_a_cold_train(book_file):
    warm_book, cold_book = open_book(book_file, "linear"), open_book(book_file, "linear")
    excel.step(open_book(book_file, "linear"))  # compiles, loads the dataset
    compiles = warm.stats["compiles"]
    hot = excel.train(warm_book, epochs=2, device="cpu")
    assert warm.stats["compiles"] == compiles
    warm.clear()
    cold = excel.train(cold_book, epochs=2, device="cpu")
    assert hot["ok"] and cold["ok"], (hot, cold)
    for key in ("objective", "metrics", "steps", "confusion", "initial_objective"):
        assert hot[key] == cold[key], key
    got, want = written(warm_book), written(cold_book)
    assert got.keys() == want.keys() and "history_linear!A3:E202" in got
    for ref in want:
        cols = slice(0, 4) if ref.startswith("history") else slice(None)  # the last column: seconds taken
        np.testing.assert_array_equal(got[ref][:, cols], want[ref][:, cols])


def test_a_saved_again_file_is_recompiled(book_file):
    excel.step(open_book(book_file, "linear"))
    old = warm.compiled(book_file, "linear")
    compiles = warm.stats["compiles"]
    shape = tuple(old.model.initial_params()[0].shape)
    write_values(book_file, {W: np.full(shape, 0.02)})  # Ctrl+S after typing 0.02 everywhere
    res = excel.step(open_book(book_file, "linear"), seed=1)
    assert res["ok"], res
    assert warm.stats["compiles"] == compiles + 1
    new = warm.compiled(book_file, "linear")
    assert new is not old and new.key != old.key
    assert float(new.model.initial_params()[0][0, 0]) == 0.02  # the new file's values
    assert old.key not in warm._CACHE  # the older version of the sheet is dropped


def test_live_checks_still_run_on_a_warm_click(book_file):
    assert excel.step(open_book(book_file, "linear"))["ok"]
    hits = warm.stats["hits"]
    for where, value, needle in (
        ("data!B7", 0.5, "data!B7: the data in the open workbook differs from the saved file"),
        ("data!C9", True, "data!C9: the data in the open workbook differs"),  # True == 1 in Python
        ("settings!D2", 0.5, "a setting in the open workbook differs"),
    ):
        res = excel.step(open_book(book_file, "linear", {where: [[value]]}))
        assert not res["ok"] and needle in res["error"], res
    assert warm.stats["hits"] > hits  # the refusals came from the kept compile


def test_bulk_comparison_matches_the_cell_by_cell_rules(book_file):
    wb = read_workbook(book_file)
    values = wb.sheets["data"].values
    saved = cells.saved_block(values, "A2:C4")
    want = np.array([[values.get((r, c)) for c in (1, 2, 3)] for r in (2, 3, 4)], dtype=object)
    assert saved.shape == (3, 3) and (saved == want).all()
    raw = saved.tolist()
    assert cells.same_block(raw, saved)
    assert cells.same_block([["" if v is None else v for v in row] for row in raw], saved)  # empty = ""
    raw[1][2] = 0.123456
    assert not cells.same_block(raw, saved)
    assert not cells.same_block(raw[:2], saved) and not cells.same_block(None, saved)
    flags = cells.saved_block({(1, 1): True, (1, 2): 1.0}, "A1:B1")
    assert not cells.same_block([[True, 1.0]], flags)  # a saved TRUE is never taken in bulk
    assert not cells.same_block([[1.0, True]], np.array([[1.0, 1.0]], dtype=object))


def test_trainable_cells_read_in_bulk_as_cell_by_cell():
    np.testing.assert_array_equal(cells.to_numbers("s!A1:C1", [[1, 2.5, float("nan")]]), [[1.0, 2.5, 0.0]])
    np.testing.assert_array_equal(cells.to_numbers("s!A1:C1", [[1, None, ""]]), [[1.0, 0.0, 0.0]])
    with pytest.raises(Exception, match="s!B1: trainable cell holds True"):
        cells.to_numbers("s!A1:B1", [[1.0, True]])


def test_formula_comparison_of_desktop_excel(book_file):
    """What check_live_formulas compares on desktop Excel (``used_range.formula`` there): the formulas
    of the saved file against a live block spelt as Excel spells them."""
    sheet = read_workbook(book_file).sheet("linear")
    saved = {c: cells._formula_key(sheet.formula(c) or "") for c in sheet.formula_cells()}
    rows = max(r for r, _ in saved)
    cols = max(c for _, c in saved)
    block = [["" for _ in range(cols)] for _ in range(rows)]
    for (r, c), _ in saved.items():
        block[r - 1][c - 1] = "=" + (sheet.formula((r, c)) or "").lstrip("=").replace("_xlfn.", "")
    assert cells.formula_differences(block, 1, 1, saved) == []
    (r, c) = sorted(saved)[3]
    block[r - 1][c - 1] += "+1"  # an edited formula
    block[rows - 1][cols - 1] = "=1+1" if (rows, cols) not in saved else ""  # added, or removed
    assert cells.formula_differences(block, 1, 1, saved) == sorted([(r, c), (rows, cols)])
