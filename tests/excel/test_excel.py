"""xlmnist.excel on xlwings' real remote engine (``xw.Book(json=payload)``), the engine that runs on Linux.

The payload holds each sheet's values as LibreOffice computed them (``oracle.recalc``), as Excel would
send them. Live trainable values differ from the saved file's, so the tests show the live ones are used.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import xlwings as xw  # noqa: E402
from testenv import COURSE_TITANIC as COURSE  # noqa: E402
from testenv import HAVE_COURSE  # noqa: E402
from xlbook import make_payload  # noqa: E402

from xlmnist import excel, oracle  # noqa: E402
from xlmnist.compile import compile_workbook  # noqa: E402
from xlmnist.errors import XlmnistError  # noqa: E402
from xlmnist.excel import cells  # noqa: E402
from xlmnist.train import commands  # noqa: E402
from xlmnist.train.optim import random_params  # noqa: E402
from xlmnist.train.optim import train as train_model  # noqa: E402
from xlmnist.xlsx import package, writeback  # noqa: E402

SHEETS = ["mmult", "nnet", "linear", "all_rows"]


@pytest.fixture(scope="module")
def course(tmp_path_factory, request):
    """The course workbook; without ../shared the tests' course-style one."""
    path = tmp_path_factory.mktemp("course") / "titanic.xlsx"
    shutil.copyfile(COURSE if HAVE_COURSE else request.getfixturevalue("coursebook"), path)
    return path, oracle.recalc(path)


def open_book(course, active, live=None, name=None):
    path, values = course
    return xw.Book(json=make_payload(values, name or str(path), active, live))


def xlmnist_cli(argv):
    """`xlmnist train ...` exactly as the console script parses and runs it (commands module only)."""
    parser = argparse.ArgumentParser(prog="xlmnist")
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


def actions(book, func):
    return [a for a in book.json()["actions"] if a["func"] == func]


def start_values(path, sheet, fill):
    model = compile_workbook(path, sheet=sheet)
    return {ref: np.full(tuple(p.shape), fill) for ref, p in zip(model.param_refs, model.initial_params())}


@pytest.mark.libreoffice
@pytest.mark.parametrize(
    "sheet, fill, options",
    [
        ("linear", 0.1, {}),
        ("nnet", 0.1, {"optimizer": "adam", "lr": 0.05, "epochs": 30}),
        ("mmult", 0.2, {"epochs": 15}),
    ],
)
def test_train_matches_trainer_and_cli(course, tmp_path, sheet, fill, options):
    path, _ = course
    live = start_values(path, sheet, fill)
    book = open_book(course, sheet, live)
    res = excel.train(book, **options)
    assert res["ok"], res
    sets = actions(book, "setValues")
    assert len(sets) == len(live) and not actions(book, "alert")
    written = cells.write_actions_to_values(book.json()["actions"], SHEETS)
    assert list(written) == list(live)

    # the same run through the trainer, from the same live values
    model = compile_workbook(path, sheet=sheet)
    ref = train_model(model, params=[torch.tensor(a) for a in live.values()], progress=False,
                      seed=0, **options)  # fmt: skip
    for got, want in zip(written.values(), ref.params):
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-12)
    assert res["objective"] == pytest.approx(ref.objective, abs=1e-12)
    assert res["objective"] < res["initial_objective"]

    # applying the actions to the file gives the objective the run reported ...
    applied = writeback.write_values(path, written, out=tmp_path / "applied.xlsx")
    got = compile_workbook(applied, sheet=sheet)
    with torch.no_grad():
        assert float(got.objective(got.initial_params())) == pytest.approx(res["objective"], abs=1e-12)
    # ... and the same parameters as `xlmnist train` on a file holding the live values
    start = writeback.write_values(path, live, out=tmp_path / "start.xlsx")
    flags = [f"--{k}={v}" for k, v in options.items()]
    assert xlmnist_cli(["train", str(start), "--sheet", sheet, "--quiet", *flags]) == 0
    cli_model = compile_workbook(start, sheet=sheet)
    for got, want in zip(written.values(), cli_model.initial_params()):
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-12)


@pytest.mark.libreoffice
def test_step_is_one_iteration_and_reset_is_seeded(course):
    path, _ = course
    live = start_values(path, "linear", 0.3)
    book = open_book(course, "linear", live)
    res = excel.step(book)
    assert res["ok"] and res["steps"] == 1 and res["objective"] < res["initial_objective"]
    assert len(actions(book, "setValues")) == 1

    book = open_book(course, "linear", live)
    res = excel.reset(book, seed=3)
    model = compile_workbook(path, sheet="linear")
    want = random_params(model, seed=3)[0].numpy()
    (block,) = cells.write_actions_to_values(book.json()["actions"], SHEETS).values()
    np.testing.assert_array_equal(block, want)
    with torch.no_grad():
        assert res["objective"] == pytest.approx(float(model.objective([torch.tensor(want)])))


@pytest.mark.libreoffice
def test_book_name_alone_with_path_option(course):
    path, _ = course
    book = open_book(course, "linear", start_values(path, "linear", 0.1), name="titanic.xlsx")
    assert book.fullname == "titanic.xlsx"
    cwd = os.getcwd()
    os.chdir(path.parent.parent)  # titanic.xlsx is not here: the remote engine knows only the name
    try:
        res = excel.train(book)
    finally:
        os.chdir(cwd)
    assert not res["ok"] and "save it" in res["error"] and not actions(book, "setValues")
    res = excel.train(book, path=path, epochs=2)
    assert res["ok"] and res["steps"] <= 2


@pytest.mark.libreoffice
def test_large_blocks_are_written_in_chunks(course, monkeypatch):
    path, _ = course
    monkeypatch.setattr(cells, "CHUNK_CELLS", 4)  # nnet!R4:AA5 = 2 x 10 -> one row per call
    book = open_book(course, "nnet", start_values(path, "nnet", 0.1))
    res = excel.train(book, epochs=3)
    sets = actions(book, "setValues")
    assert res["ok"] and [(a["start_row"], a["row_count"], a["column_count"]) for a in sets] == [
        (3, 1, 10),
        (4, 1, 10),
    ]
    (block,) = cells.write_actions_to_values(sets[:1], SHEETS).values()
    np.testing.assert_array_equal(block, res["values"]["nnet!R4:AA5"][:1])


@pytest.mark.libreoffice
def test_cancel_keeps_best_values_and_says_so(course):
    path, _ = course
    live = start_values(path, "linear", 0.1)
    book = open_book(course, "linear", live)
    res = excel.train(book, cancel=lambda: True)
    assert res["ok"] and res["interrupted"] and res["steps"] >= 1
    assert res["objective"] <= res["initial_objective"]
    (alert,) = actions(book, "alert")
    assert "cancelled" in alert["args"][0]
    assert len(actions(book, "setValues")) == 1


def _protect(src: Path, dest: Path, sheet_xml: str) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == sheet_xml:
                data = re.sub(
                    rb"(</sheetData>)", rb'\1<sheetProtection sheet="1" objects="1"/>', data, count=1
                )
            zout.writestr(info, data)
    return dest


@pytest.mark.libreoffice
@pytest.mark.parametrize(
    "case, active, needle",
    [
        ("no objective", "all_rows", "no objective"),
        ("text in a trainable cell", "linear", "linear!T4: trainable cell holds 'abc'"),
        ("protected sheet", "linear", "protected"),
        ("not saved", "linear", "not saved"),
    ],
)
def test_bad_input_alerts_and_writes_nothing(course, tmp_path, case, active, needle):
    path, _ = course
    live, kw = None, {}
    if case == "text in a trainable cell":
        live = {"linear!T4": "abc"}
    if case == "protected sheet":
        with zipfile.ZipFile(path) as zf:
            member = package.sheet_members(zf, str(path))["linear"]
        kw["path"] = _protect(path, tmp_path / "protected.xlsx", member)
    book = open_book(course, active, live, name="Book1" if case == "not saved" else None)
    res = excel.train(book, **kw)
    assert res == {"ok": False, "error": res["error"]} and needle in res["error"]
    assert "\n" not in res["error"]
    (alert,) = actions(book, "alert")
    assert alert["args"][0] == res["error"] and alert["args"][1] == "xlmnist"
    assert not actions(book, "setValues")


@pytest.mark.libreoffice
def test_run_dispatches_actions_on_a_given_book(course):
    path, _ = course
    book = open_book(course, "linear", start_values(path, "linear", 0.1))
    assert excel.run("step", book)["steps"] == 1
    with pytest.raises(XlmnistError, match="unknown action"):
        excel.run("solve", book)


@pytest.mark.libreoffice
def test_workbook_gone_mid_run_is_an_alert_and_nothing_half_written(course):
    """The user deletes the model sheet (or closes the book) while training runs: the write fails, the
    user is told in one line, and no parameter block is written."""
    path, _ = course
    book = open_book(course, "linear", start_values(path, "linear", 0.1))
    gone = []

    def meanwhile():  # called during training, like Excel's event loop would let the user act
        if not gone:
            book.sheets["linear"].delete()
            gone.append(True)
        return False

    res = excel.train(book, cancel=meanwhile)
    assert gone and res["ok"] is False
    assert "could not write the results" in res["error"] and "\n" not in res["error"]
    assert not actions(book, "setValues")
    (alert,) = actions(book, "alert")
    assert alert["args"][0] == res["error"]
