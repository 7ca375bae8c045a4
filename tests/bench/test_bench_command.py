"""``bench/bench_command.py`` still runs (no timings asserted: benchmarks belong in bench/README.md). Its
``--tiny`` mode builds 20-row titanic and 3-vs-7 workbooks, runs ``xlmnist train`` and the hand-written
script (``bench/hand_train.py``) on each for 2 steps, and fails unless both reach the same loss."""

from __future__ import annotations

import subprocess
import sys

import pytest
from testenv import ROOT


@pytest.mark.slow
def test_bench_command_tiny():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_command.py"), "--tiny", "--io", "xlmnist"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for sheet in ("nnet", "linear"):
        assert f"{sheet:<7} sheet    ratio vs hand (xlmnist): wall" in proc.stdout, proc.stdout
