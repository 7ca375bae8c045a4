"""Paths and small test data shared by the tests, importable as ``from testenv import ...`` from any
test folder (a module, not ``conftest``: tests/calc has a conftest of its own and ``from testenv import``
would find whichever was imported last).

``../shared`` (the course workbook, full MNIST) is what CI has beside the clone; a person who clones the
repository has neither it nor a network. ``XLMNIST_SHARED`` points elsewhere (``.ci/run``'s second pass
hides it that way); tests reach it only through this module and the fixtures in conftest.py.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XLMNIST_SHARED") or ROOT.parent / "shared")
COURSE_TITANIC = SHARED / "course" / "titanic.xlsx"
MNIST_DIR = SHARED / "data" / "mnist"
HAVE_COURSE = COURSE_TITANIC.is_file()
HAVE_MNIST = all(
    (MNIST_DIR / f"{s}-{k}.idx{d}-ubyte.gz").is_file()
    for s in ("train", "t10k")
    for k, d in (("images", 3), ("labels", 1))
)
NO_COURSE = f"the course workbook is not here ({COURSE_TITANIC} is missing)"
NO_MNIST = f"full MNIST is not here ({MNIST_DIR} is missing)"
NO_SOFFICE = "LibreOffice is not installed (no soffice on PATH): apt-get install -y libreoffice-calc-nogui"

needs_course = pytest.mark.skipif(not HAVE_COURSE, reason=NO_COURSE)
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason=NO_MNIST)


def write_idx(path: Path, arr: np.ndarray) -> None:
    """An MNIST IDX file (gzip): magic 0x803 for uint8 images [N,28,28], 0x801 for labels [N]."""
    magic = 0x800 | arr.ndim
    header = struct.pack(">i", magic) + struct.pack(f">{arr.ndim}i", *arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes(), compresslevel=1))


def make_tiny_mnist(folder: Path, per_digit: int = 500, test_per_digit: int = 30, seed: int = 0) -> Path:
    """A small ten-digit MNIST in the four canonical IDX files: each digit a blurred random stroke
    pattern plus noise, so the models can learn it. ``per_digit`` 500 gives 5,000 train images, enough
    for the default 1,000 visible rows of both MNIST workbooks (500 3s and 500 7s)."""
    rng = np.random.default_rng(seed)
    protos = rng.random((10, 28, 28)) ** 4 * 255

    def split(n):
        y = np.repeat(np.arange(10, dtype=np.uint8), n)
        rng.shuffle(y)
        x = protos[y] * rng.uniform(0.6, 1.0, (len(y), 1, 1)) + rng.normal(0, 30, (len(y), 28, 28))
        return np.clip(x, 0, 255).astype(np.uint8), y

    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", per_digit), ("t10k", test_per_digit)):
        x, y = split(n)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    return folder
