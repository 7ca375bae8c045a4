"""`xlmnist demo --quick`: offline on the shipped 3-vs-7 data (no MNIST, dead mirrors), and with full MNIST."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from xlmnist import oracle

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
SKIP_MSG = "full MNIST is not available on this machine"


def demo(tmp_path, mnist: bool) -> tuple[subprocess.CompletedProcess, Path]:
    env = {k: v for k, v in os.environ.items() if k not in ("XLMNIST_DATA", "XLMNIST_MNIST_MIRRORS")}
    env["XLMNIST_CACHE"] = str(tmp_path / "empty-cache")  # nothing cached
    env["XLMNIST_MNIST_MIRRORS"] = "http://127.0.0.1:9/"  # a dead port: any download attempt fails
    if mnist:
        env["XLMNIST_DATA"] = str(MNIST)
    out = tmp_path / "books"
    proc = subprocess.run(
        [sys.executable, "-m", "xlmnist", "demo", "--out", str(out), "--quick", "--rows", "40"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, out


def table(stdout: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in stdout.splitlines():
        cols = re.split(r"\s{2,}", line.strip())
        if len(cols) == 7 and cols[0].endswith(".xlsx"):
            rows[(cols[0], cols[1])] = cols
    return rows


@pytest.mark.slow
def test_demo_offline_trains_3v7_on_the_shipped_data(tmp_path):
    proc, out = demo(tmp_path, mnist=False)
    assert SKIP_MSG in proc.stdout
    rows = table(proc.stdout)
    assert set(rows) == {
        ("titanic.xlsx", "linear"), ("titanic.xlsx", "nnet"), ("titanic.xlsx", "mmult"),
        ("mnist_3v7.xlsx", "linear"), ("mnist_3v7.xlsx", "simple_net"),
    }  # fmt: skip
    assert rows[("mnist_3v7.xlsx", "linear")][2:4] == ["785", "12,396 (mnist_3v7)"]
    assert rows[("mnist_3v7.xlsx", "simple_net")][2] == "23,581"
    for key in [("mnist_3v7.xlsx", "linear"), ("mnist_3v7.xlsx", "simple_net")]:
        acc = float(rows[key][5].split("%")[0]) / 100
        assert acc > 0.9 and rows[key][5].endswith("(valid)"), rows[key]
    assert sorted(p.name for p in out.iterdir()) == ["mnist_3v7.xlsx", "titanic.xlsx"]
    assert not (tmp_path / "empty-cache").exists() or not any((tmp_path / "empty-cache").iterdir())
    # the objective printed is what the written workbook computes
    lo = oracle.recalc(out / "mnist_3v7.xlsx")
    assert lo["linear"]["B5"] == pytest.approx(float(rows[("mnist_3v7.xlsx", "linear")][4]), rel=1e-5)


@pytest.mark.slow
def test_demo_with_full_mnist_includes_mnist_xlsx(tmp_path):
    proc, out = demo(tmp_path, mnist=True)
    assert SKIP_MSG not in proc.stdout
    rows = table(proc.stdout)
    digits = {model: cols for (book, model), cols in rows.items() if book == "mnist.xlsx"}
    assert "linear10" in digits, proc.stdout
    assert digits["linear10"][2:4] == ["7,850", "60,000 (mnist)"]
    assert float(digits["linear10"][5].split("%")[0]) > 80
    assert (out / "mnist.xlsx").is_file()
