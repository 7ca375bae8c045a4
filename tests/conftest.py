"""Shared paths and fixtures.

``../shared`` (the course workbook, full MNIST) is what CI has beside the clone; a person who clones the
repository has neither it nor a network. Every test reaches ``../shared`` only through this file and testenv.py: the
``course_titanic`` / ``full_mnist`` fixtures, or the constants with the ``needs_course`` / ``needs_mnist``
marks; both skip with a reason naming what is missing. ``XLMNIST_SHARED`` points elsewhere (``.ci/run``
sets it to a folder that does not exist, to run the suite as a clean clone sees it).

Tests marked ``libreoffice`` start LibreOffice (``xlmnist.oracle``, ``soffice``, ``xlmnist check``); they
skip with a reason when ``soffice`` is not installed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from testenv import (  # noqa: F401 - re-exported for the fixtures below
    COURSE_TITANIC,
    HAVE_COURSE,
    HAVE_MNIST,
    MNIST_DIR,
    NO_COURSE,
    NO_MNIST,
    NO_SOFFICE,
    ROOT,
    SHARED,
    make_tiny_mnist,
    needs_course,
    needs_mnist,
    write_idx,
)


def have_soffice() -> bool:
    return any(shutil.which(name) for name in ("soffice", "libreoffice"))


def pytest_collection_modifyitems(config, items):
    """``libreoffice`` tests skip (with the reason) where LibreOffice is not installed, unless
    ``XLMNIST_REQUIRE_SOFFICE=1`` (CI, whose install.sh installs it: there a missing soffice fails)."""
    if have_soffice() or os.environ.get("XLMNIST_REQUIRE_SOFFICE") == "1":
        return
    skip = pytest.mark.skip(reason=NO_SOFFICE)
    for item in items:
        if "libreoffice" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def course_titanic() -> Path:
    if not HAVE_COURSE:
        pytest.skip(NO_COURSE)
    return COURSE_TITANIC


@pytest.fixture(scope="session")
def full_mnist() -> Path:
    if not HAVE_MNIST:
        pytest.skip(NO_MNIST)
    return MNIST_DIR


@pytest.fixture(scope="session")
def coursebook(tmp_path_factory) -> Path:
    """The course-style titanic.xlsx built by the tests (:mod:`coursebook`), all 712 rows; copy before writing."""
    from coursebook import build_course_titanic

    return build_course_titanic(tmp_path_factory.mktemp("coursebook") / "titanic.xlsx")


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    """Full MNIST where it is here, else the tiny ten-digit set: for tests that need *an* MNIST."""
    return MNIST_DIR if HAVE_MNIST else make_tiny_mnist(tmp_path_factory.mktemp("tiny-mnist-for-full"))


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    return make_tiny_mnist(tmp_path_factory.mktemp("tiny-mnist"))
