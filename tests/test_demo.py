"""`xlmnist demo`: every workbook `xlmnist build` writes at the default size trains with its stored settings.

Offline (no full MNIST, dead mirrors) the demo trains titanic and the shipped 3-vs-7 data; with a small
ten-digit IDX set the test writes itself (the real loader, tiny data) it also builds and trains mnist.xlsx at
the default 1,000 visible rows; with ../shared's full MNIST it runs end to end as a user runs it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from testenv import ROOT

from xlmnist import oracle
from xlmnist.demo import model_sheets

SKIP_MSG = "full MNIST is not available on this machine"
ALL_MODELS = {
    ("titanic.xlsx", "linear"), ("titanic.xlsx", "nnet"), ("titanic.xlsx", "mmult"),
    ("mnist_3v7.xlsx", "linear"), ("mnist_3v7.xlsx", "simple_net"),
    ("mnist.xlsx", "linear10"), ("mnist.xlsx", "mlp"),
}  # fmt: skip


def demo(tmp_path, mnist: Path | None, *args: str, timeout=900) -> tuple[subprocess.CompletedProcess, Path]:
    env = {k: v for k, v in os.environ.items() if k not in ("XLMNIST_DATA", "XLMNIST_MNIST_MIRRORS")}
    env["XLMNIST_CACHE"] = str(tmp_path / "empty-cache")  # nothing cached
    env["XLMNIST_MNIST_MIRRORS"] = "http://127.0.0.1:9/"  # a dead port: any download attempt fails
    if mnist is not None:
        env["XLMNIST_DATA"] = str(mnist)
    out = tmp_path / "books"
    proc = subprocess.run(
        [sys.executable, "-m", "xlmnist", "demo", "--out", str(out), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return proc, out


def table(stdout: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in stdout.splitlines():
        cols = re.split(r"\s{2,}", line.strip())
        if len(cols) == 7 and cols[0].endswith(".xlsx"):
            rows[(cols[0], cols[1])] = cols
    return rows


def pct(cell: str) -> float:
    return float(cell.split("%")[0]) / 100


@pytest.mark.libreoffice
@pytest.mark.slow
def test_demo_offline_trains_3v7_on_the_shipped_data(tmp_path):
    proc, out = demo(tmp_path, None, "--quick", "--rows", "40")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert SKIP_MSG in proc.stdout
    rows = table(proc.stdout)
    assert set(rows) == {m for m in ALL_MODELS if m[0] != "mnist.xlsx"}
    assert rows[("mnist_3v7.xlsx", "linear")][2:4] == ["785", "12,396 (mnist_3v7)"]
    assert rows[("mnist_3v7.xlsx", "simple_net")][2] == "23,581"
    for key in [("mnist_3v7.xlsx", "linear"), ("mnist_3v7.xlsx", "simple_net")]:
        assert pct(rows[key][5]) > 0.9 and rows[key][5].endswith("(valid)"), rows[key]
    assert sorted(p.name for p in out.iterdir()) == ["mnist_3v7.xlsx", "titanic.xlsx"]
    assert not (tmp_path / "empty-cache").exists() or not any((tmp_path / "empty-cache").iterdir())
    # the objective printed is what the written workbook computes
    lo = oracle.recalc(out / "mnist_3v7.xlsx")
    assert lo["linear"]["B5"] == pytest.approx(float(rows[("mnist_3v7.xlsx", "linear")][4]), rel=1e-5)


@pytest.mark.slow
def test_demo_at_the_default_size_trains_every_model_sheet(tmp_path, tiny_mnist):
    """Issue 10: the default build (1,000 visible rows) with ten-digit data present: 7 models, exit 0."""
    proc, out = demo(tmp_path, tiny_mnist, "--quick")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error" not in proc.stdout + proc.stderr
    rows = table(proc.stdout)
    assert set(rows) == ALL_MODELS, proc.stdout
    # every model sheet of every written workbook is in the table: none was skipped silently
    announced = {(p.name, s) for p in out.glob("*.xlsx") for s in model_sheets(p)}
    assert announced == ALL_MODELS
    digits = {model: cols for (book, model), cols in rows.items() if book == "mnist.xlsx"}
    assert digits["linear10"][2:4] == ["7,850", "5,000 (mnist)"]
    assert digits["mlp"][2:4] == [f"{785 * 256 + 257 * 10:,}", "5,000 (mnist)"]
    for cols in digits.values():  # one epoch on the synthetic digits already separates them
        assert pct(cols[5]) > 0.5 and cols[5].endswith("(valid)"), cols
    assert rows[("mnist_3v7.xlsx", "linear")][3] == "1,000 (mnist_3v7)"  # 3s and 7s of the same files


@pytest.mark.slow
def test_demo_end_to_end_on_full_mnist(tmp_path, full_mnist):
    """The README's main command as a user with full MNIST runs it: default build, stored settings."""
    proc, out = demo(tmp_path, full_mnist, timeout=1500)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert SKIP_MSG not in proc.stdout
    rows = table(proc.stdout)
    assert set(rows) == ALL_MODELS, proc.stdout
    expect = {  # model -> (parameters, rows trained on, minimum accuracy)
        ("titanic.xlsx", "linear"): ("10", "712", 0.75),
        ("titanic.xlsx", "nnet"): ("20", "712", 0.75),
        ("titanic.xlsx", "mmult"): ("20", "712", 0.75),
        ("mnist_3v7.xlsx", "linear"): ("785", "12,396 (mnist_3v7)", 0.97),
        ("mnist_3v7.xlsx", "simple_net"): ("23,581", "12,396 (mnist_3v7)", 0.97),
        ("mnist.xlsx", "linear10"): ("7,850", "60,000 (mnist)", 0.91),
        ("mnist.xlsx", "mlp"): (f"{785 * 256 + 257 * 10:,}", "60,000 (mnist)", 0.98),
    }
    for key, (n_params, trained_on, min_acc) in expect.items():
        cols = rows[key]
        assert cols[2:4] == [n_params, trained_on], cols
        assert float(cols[4]) > 0 and pct(cols[5]) >= min_acc, cols
    assert sorted(p.name for p in out.iterdir()) == ["mnist.xlsx", "mnist_3v7.xlsx", "titanic.xlsx"]
