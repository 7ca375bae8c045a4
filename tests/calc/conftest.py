"""LibreOffice for the ``calc_live`` tests: one office per test module, driven through
``tests/calc/driver.py`` under the Python that ``uno`` serves, with ``xlmnist.oxt`` installed into the
office's own fresh profile. The office is killed when the module's tests end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from calclive import ROOT, Driver, uno_python_ok


@pytest.fixture(scope="module")
def workdir():
    """A folder the unprivileged unopkg can use (pytest's tmp folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="xlmnist-calc-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def oxt(workdir):
    from xlmnist.calc.oxt import build

    return build(workdir / "oxt")


@pytest.fixture(scope="module")
def books(workdir):
    """titanic.xlsx and mnist_3v7.xlsx (100 visible rows), built by the lesson builder."""
    out = workdir / "books"
    subprocess.run(
        [sys.executable, "-m", "xlmnist", "build", "--out", str(out), "--rows", "100", "--only",
         "titanic.xlsx", "mnist_3v7.xlsx"],
        check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def calc(workdir, oxt):
    reason = uno_python_ok()
    if reason:
        pytest.skip(reason)
    driver = Driver()
    try:
        driver.call("start", profile=str(workdir / "profile"), oxt=str(oxt))
        yield driver
    finally:
        driver.close()
