"""Train in the background (xlmnist.excel.background) on xlwings' real remote-engine book: the click
returns at once, the run shows its progress, a second Train (or Step) is refused while it goes, the
Cancel button's flag file stops it and the values so far are written; errors reach the user."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import xlwings as xw  # noqa: E402
from xlbook import file_values, make_payload, open_book, written  # noqa: E402

from xlmnist import excel  # noqa: E402
from xlmnist.excel import background, book, runs  # noqa: E402

W = "linear!A3:ADE3"


@pytest.fixture
def path(built, tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setenv("XLMNIST_DATA", str(tiny_mnist))
    out = tmp_path / "mnist_3v7.xlsx"
    shutil.copyfile(built, out)
    yield out
    found = background.job(out)
    if found is not None and found.running():  # a failed test must not leave a run behind
        runs.cancel_file(out).write_text("cancel\n")
        found.wait(60)


def until(cond, timeout=120.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_this_process_is_not_a_udf_server():
    assert not background.persistent()  # so the ribbon's Train is synchronous here (and on macOS)


def test_background_train_progress_refusal_and_cancel(path):
    wb = open_book(path, "linear")
    res = book.train_in_background(wb, epochs=100_000, max_seconds=300, device="cpu")
    assert res["ok"] and res["background"] and "training started" in res["message"], res
    job = background.job(path)
    assert job is not None and job.running() and job.sheet == "linear"
    until(lambda: any(s.startswith("xlmnist: epoch ") for s in job.shown))  # progress while it runs
    assert "/100000, loss " in job.progress() and runs.in_progress(path)

    # a second Train (background or not), a Step, a Reset: refused while the run goes
    for action in ("train", "step", "reset"):
        other = open_book(path, "linear")
        again = excel.run(action, other, in_background=True)
        assert not again["ok"] and "a training run is in progress" in again["error"], again
        assert [a["func"] for a in other.json()["actions"]] == ["alert"]
    assert "in progress" in excel.train(open_book(path, "linear"))["error"]  # the run file, too
    assert job.running()

    assert excel.run("cancel", open_book(path, "linear"))["ok"]  # what the Cancel button's file does
    result = job.wait(120)
    assert result is not None and not job.running()
    assert result["ok"] and result["interrupted"] and result["steps"] >= 1, result
    assert result["message"].endswith("cancelled; the values so far were written")
    got = written(wb)  # the values so far, in the workbook the click came from
    np.testing.assert_array_equal(got[W], result["values"][W])
    assert {"linear!A4:ADE4", "history_linear!A3:E202", "history_linear!H4:I5"} <= got.keys()
    # one range call per block; calculate() and the alert went to the remote engine's "active" book, the
    # last one opened in this process (here the Cancel click's): desktop Excel has one app per workbook
    assert [a["func"] for a in wb.json()["actions"]] == ["setValues"] * 4
    assert not runs.run_file(path).exists() and not runs.cancel_file(path).exists()
    assert not background.busy(path)

    after = open_book(path, "linear")  # the run is over: Step works again
    assert excel.run("step", after)["ok"]


def test_background_errors_reach_the_user(path):
    wb = open_book(path, "linear", {"data!B7": [[0.5]]})  # an unsaved edit
    res = excel.run("train", wb, in_background=True)
    assert res["ok"] and res["background"]
    result = background.job(path).wait(120)
    assert not result["ok"] and "Save the workbook (Ctrl+S), then press Train" in result["error"]
    (alert,) = [a for a in wb.json()["actions"] if a["func"] == "alert"]
    assert alert["args"][0] == result["error"]
    assert not background.busy(path) and not runs.run_file(path).exists()


def test_unsaved_workbook_is_refused_before_any_thread(path):
    unsaved = xw.Book(json=make_payload(file_values(path), "Book1", "linear"))
    res = book.train_in_background(unsaved)
    assert not res["ok"] and "not saved" in res["error"] and background.job(path) is None
