"""The one way xlmnist writes a workbook file: locked, re-read inside the lock, atomic, durable.

``write_file(dest, produce)`` (a new workbook) and ``replace_file(src, dest, produce)`` (an edit) take an advisory lock beside the real target (a ``.NAME.lock``
file holding ``pid host``), opens ``src`` *inside* the lock (so a change is applied to the freshest
file: two runs writing different sheets of one workbook both keep their results), lets ``produce(zin,
fh)`` write the new file into a temporary file in the same folder, fsyncs it, keeps the original's
permission bits, moves it over the target with ``os.replace`` and fsyncs the folder.

* a symbolic link is followed: the real target file is replaced and the link stays;
* a file with several hard links is refused (replacing it would silently split the links);
* a read-only workbook (no write bit in its mode, whatever the user: root too) is refused;
* SIGINT, SIGTERM and SIGHUP during the write remove the temporary file and the lock, then the signal
  is delivered as before; any failure leaves the original untouched.

A lock whose process is gone (same host) or older than ``XLMNIST_LOCK_STALE_S`` seconds (default 600)
is stale and taken over; a live one is waited for up to ``XLMNIST_LOCK_WAIT_S`` seconds (default 30),
then the write fails with "another xlmnist run is writing NAME".
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from xlmnist.errors import WorkbookError

_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class _Signalled(BaseException):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_raise():
    """SIGTERM/SIGHUP raise inside the block (so cleanup runs), and are re-delivered after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}

    def handler(signum, frame):
        raise _Signalled(signum)

    for sig in _SIGNALS:
        old[sig] = signal.signal(sig, handler)
    try:
        yield
    except _Signalled as exc:
        for sig, h in old.items():
            signal.signal(sig, h)
        old = {}
        os.kill(os.getpid(), exc.signum)  # the previous handler (or the default action) now runs
        raise WorkbookError(f"interrupted by signal {exc.signum}; the workbook was not written") from None
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C there: rely on the lock's age
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(lock: Path) -> bool:
    try:
        text = lock.read_text(encoding="ascii", errors="replace").split()
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return True
    if age > _env_float("XLMNIST_LOCK_STALE_S", 600):
        return True
    if len(text) >= 2 and text[1] == socket.gethostname() and text[0].isdigit():
        return not _alive(int(text[0]))
    return len(text) < 2 and age > 5  # an empty/garbled lock: its writer died while creating it


@contextlib.contextmanager
def lock(target: Path):
    """Hold ``.NAME.lock`` beside ``target`` (created exclusively) for the block."""
    path = target.with_name("." + target.name + ".lock")
    deadline = time.monotonic() + _env_float("XLMNIST_LOCK_WAIT_S", 30)
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            if _stale(path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                continue
            if time.monotonic() > deadline:
                raise WorkbookError(
                    f"{target.name}: another xlmnist run is writing {target.name} "
                    f"(lock {path}; delete it if no run is active)"
                ) from None
            time.sleep(0.05)
        except OSError as exc:
            raise WorkbookError(f"{target}: cannot write in {target.parent} ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(f"{os.getpid()} {socket.gethostname()}\n")
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _check_target(dest: Path) -> None:
    try:
        st = dest.stat()
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        return  # os.replace reports it
    if not st.st_mode & 0o222:
        raise WorkbookError(f"{dest}: the workbook is read-only (mode {st.st_mode & 0o777:o}); not written")
    if st.st_nlink > 1:
        raise WorkbookError(
            f"{dest}: the workbook has {st.st_nlink} hard links; replacing it would split them; "
            "write to a copy (--out) instead"
        )


def _fsync_dir(folder: Path) -> None:
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(dest: Path, produce: Callable[[object], None]) -> Path:
    """Write ``produce(fh)``'s output over ``dest`` (its real path), under the lock, atomically."""
    real = Path(os.path.realpath(dest))
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkbookError(f"{dest}: cannot write in {real.parent} ({exc.strerror})") from exc
    with _signals_raise(), lock(real):
        _check_target(real)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix="." + real.name + ".", suffix=".tmp", dir=real.parent)
            with os.fdopen(fd, "wb") as fh:
                produce(fh)
                fh.flush()
                os.fsync(fh.fileno())
            mode = real.stat().st_mode & 0o7777 if real.is_file() else 0o666 & ~_umask()
            os.chmod(tmp, mode)
            try:
                os.replace(tmp, real)
            except OSError as exc:
                raise WorkbookError(
                    f"{dest}: cannot replace the file ({exc.strerror}); is it open in Excel?"
                ) from exc
            tmp = None
            _fsync_dir(real.parent)
        except OSError as exc:
            raise WorkbookError(f"{dest}: cannot write in {real.parent} ({exc.strerror})") from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
    return dest


def replace_file(src: Path, dest: Path, produce: Callable[[zipfile.ZipFile, object], None]) -> Path:
    """:func:`write_file` of ``produce(zin, fh)``, with ``src`` opened inside the lock (the freshest file)."""
    same = os.path.realpath(src) == os.path.realpath(dest)

    def write(fh) -> None:
        try:
            zin = zipfile.ZipFile(os.path.realpath(dest) if same else src)
        except (zipfile.BadZipFile, OSError) as exc:
            raise WorkbookError(f"{src}: not an xlsx file (not a readable zip archive)") from exc
        with zin:
            produce(zin, fh)

    return write_file(dest, write)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
