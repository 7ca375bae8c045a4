"""Shared fixtures of the Excel add-in tests."""

from __future__ import annotations

import pytest

from xlmnist.lessons import build_all


@pytest.fixture(scope="module")
def built(tiny_mnist, tmp_path_factory):
    """mnist_3v7.xlsx (40 visible rows; dataset mnist_3v7, batch_size 256, history/confusion/gradients),
    built once per test module from the tiny MNIST."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XLMNIST_DATA", str(tiny_mnist))
        (path,) = build_all(tmp_path_factory.mktemp("books"), rows=40, only=["mnist_3v7.xlsx"])
    return path
