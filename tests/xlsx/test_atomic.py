"""Data safety of every write: lock, re-read inside the lock, symlinks, hard links, read-only files,
permission bits, and no temporary file left behind on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import openpyxl
import pytest

from xlmnist.errors import WorkbookError
from xlmnist.xlsx.writeback import write_values

ROOT = Path(__file__).resolve().parents[2]


def two_sheets(path: Path, rows: int = 2) -> Path:
    wb = openpyxl.Workbook()
    a = wb.active
    a.title = "a"
    b = wb.create_sheet("b")
    for r in range(1, rows + 1):
        a.cell(r, 1, r)
        b.cell(r, 1, r)
    wb.save(path)
    return path


def value(path: Path, sheet: str, ref: str = "B1"):
    return openpyxl.load_workbook(path)[sheet][ref].value


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_concurrent_runs_on_different_sheets_both_keep_their_results(tmp_path):
    book = two_sheets(tmp_path / "book.xlsx", rows=3000)
    code = (
        "import sys; from xlmnist.xlsx.writeback import write_values\n"
        "for i in range(8): write_values(sys.argv[1], {sys.argv[2] + '!B1': float(i)})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(book), s], env=env) for s in "ab"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert value(book, "a") == 7 and value(book, "b") == 7
    assert leftovers(tmp_path) == []


def test_live_lock_is_reported_and_stale_lock_taken_over(tmp_path, monkeypatch):
    book = two_sheets(tmp_path / "book.xlsx")
    lock = tmp_path / ".book.xlsx.lock"
    lock.write_text(f"{os.getpid()} {socket.gethostname()}\n")  # a live process: this one
    monkeypatch.setenv("XLMNIST_LOCK_WAIT_S", "0.2")
    before = book.read_bytes()
    with pytest.raises(WorkbookError, match="another xlmnist run is writing book.xlsx"):
        write_values(book, {"a!B1": 1.0})
    assert book.read_bytes() == before and lock.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{dead.pid} {socket.gethostname()}\n")  # its process is gone: stale
    write_values(book, {"a!B1": 2.0})
    assert value(book, "a") == 2 and leftovers(tmp_path) == []
    lock.write_text(f"{os.getpid()} other-host\n")
    old = time.time() - 3600
    os.utime(lock, (old, old))  # too old: stale whatever its host
    write_values(book, {"a!B1": 3.0})
    assert value(book, "a") == 3 and leftovers(tmp_path) == []


def test_symlink_replaces_the_real_file(tmp_path):
    real = two_sheets(tmp_path / "real.xlsx")
    link = tmp_path / "link.xlsx"
    link.symlink_to(real)
    write_values(link, {"a!B1": 5.0})
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert value(real, "a") == 5 and leftovers(tmp_path) == []


def test_hard_linked_workbook_is_refused(tmp_path):
    book = two_sheets(tmp_path / "book.xlsx")
    other = tmp_path / "other.xlsx"
    os.link(book, other)
    before = book.read_bytes()
    with pytest.raises(WorkbookError, match="2 hard links"):
        write_values(book, {"a!B1": 1.0})
    assert book.read_bytes() == before and os.stat(book).st_nlink == 2
    write_values(book, {"a!B1": 1.0}, out=tmp_path / "copy.xlsx")  # a copy is fine
    assert value(tmp_path / "copy.xlsx", "a") == 1


def test_read_only_refused_and_mode_kept(tmp_path):
    book = two_sheets(tmp_path / "book.xlsx")
    book.chmod(0o444)
    before = book.read_bytes()
    with pytest.raises(WorkbookError, match=r"book.xlsx: the workbook is read-only \(mode 444\)"):
        write_values(book, {"a!B1": 1.0})
    assert book.read_bytes() == before and leftovers(tmp_path) == []
    book.chmod(0o640)
    write_values(book, {"a!B1": 1.0})
    assert stat.S_IMODE(book.stat().st_mode) == 0o640 and value(book, "a") == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_during_a_write_leaves_no_temp_file(tmp_path, sig):
    book = two_sheets(tmp_path / "book.xlsx", rows=20000)
    before = book.read_bytes()
    code = (
        "import sys; from xlmnist.xlsx.writeback import write_values\n"
        "while True: write_values(sys.argv[1], {'a!B1': 1.0}, out=sys.argv[2])\n"
    )
    out = tmp_path / "out.xlsx"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(book), str(out)], env=env)
    deadline = time.monotonic() + 60
    while not any(n.endswith(".tmp") for n in leftovers(tmp_path)):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.005)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == -sig  # the signal's own action still ends the process
    assert leftovers(tmp_path) == []
    assert book.read_bytes() == before
    if out.exists():  # an earlier complete write
        with zipfile.ZipFile(out) as z:
            assert z.testzip() is None
