"""Resource limits for reading untrusted workbooks, each a module constant overridable by an env var.

A zip bomb (a 1 MB file holding a 1 GB sheet), a range reaching XFD1048576 that would size a dense grid at
17 billion cells, or a formula nested hundreds deep is refused with a one-line error naming the limit
and the variable that raises it, before the memory or the recursion is spent.
"""

from __future__ import annotations

import os
import zipfile

from xlmnist.errors import WorkbookError


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


MAX_MEMBER_MB = _env_int("XLMNIST_MAX_MEMBER_MB", 512)  # one decompressed zip member
MAX_UNZIPPED_MB = _env_int("XLMNIST_MAX_UNZIPPED_MB", 2048)  # all the members read from one workbook
MAX_CELLS = _env_int("XLMNIST_MAX_CELLS", 100_000_000)  # a dense grid: A1 to the farthest cell a model reads
MAX_RANGE_CELLS = _env_int("XLMNIST_MAX_RANGE_CELLS", 20_000_000)  # a trainable or data range
MAX_FORMULA_CHARS = _env_int("XLMNIST_MAX_FORMULA_CHARS", 8192)  # Excel's own limit
MAX_FORMULA_DEPTH = _env_int("XLMNIST_MAX_FORMULA_DEPTH", 200)  # nesting: parentheses, calls, operators
_CHUNK = 1 << 20


class Budget:
    """Decompressed bytes read from one workbook, counted while streaming each member."""

    def __init__(self, label: str):
        self.label, self.total = label, 0

    def _fail(self, name: str, what: str, mb: int, var: str):
        raise WorkbookError(
            f"{self.label}: {name} decompresses to more than {what} {mb} MB ({var}); refused as a zip bomb"
        )

    def check(self, info: zipfile.ZipInfo) -> None:
        """Refuse by the sizes the zip declares, before inflating anything."""
        if info.file_size > MAX_MEMBER_MB << 20:
            self._fail(info.filename, "the per-member limit of", MAX_MEMBER_MB, "XLMNIST_MAX_MEMBER_MB")
        if self.total + info.file_size > MAX_UNZIPPED_MB << 20:
            self._fail(info.filename, "the workbook limit of", MAX_UNZIPPED_MB, "XLMNIST_MAX_UNZIPPED_MB")

    def count(self, name: str, n: int, member_total: int) -> None:
        self.total += n
        if member_total > MAX_MEMBER_MB << 20:
            self._fail(name, "the per-member limit of", MAX_MEMBER_MB, "XLMNIST_MAX_MEMBER_MB")
        if self.total > MAX_UNZIPPED_MB << 20:
            self._fail(name, "the workbook limit of", MAX_UNZIPPED_MB, "XLMNIST_MAX_UNZIPPED_MB")

    def read(self, z: zipfile.ZipFile, name: str | zipfile.ZipInfo) -> bytes:
        """The member's bytes, inflated in chunks with a counter (a lying header cannot get past it)."""
        with self.open(z, name) as fh:
            return b"".join(iter(lambda: fh.read(_CHUNK), b""))

    def open(self, z: zipfile.ZipFile, name: str | zipfile.ZipInfo) -> _Counted:
        info = name if isinstance(name, zipfile.ZipInfo) else z.getinfo(name)
        self.check(info)
        return _Counted(z.open(info), self, info.filename)


class _Counted:
    """A read-only member stream that counts what it hands out."""

    def __init__(self, fh, budget: Budget, name: str):
        self.fh, self.budget, self.name, self.n = fh, budget, name, 0

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(_CHUNK if size is None or size < 0 else min(size, _CHUNK))
        self.n += len(data)
        self.budget.count(self.name, len(data), self.n)
        if size is None or size < 0:  # read all: keep going in counted chunks
            parts = [data]
            while data:
                data = self.read(_CHUNK)
                parts.append(data)
            return b"".join(parts)
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


class LimitedZip:
    """The read side of a ``ZipFile`` (``namelist``, ``getinfo``, ``read``, ``open``) under one Budget."""

    def __init__(self, z: zipfile.ZipFile, label: str):
        self.z, self.budget = z, Budget(label)

    def namelist(self) -> list[str]:
        return self.z.namelist()

    def getinfo(self, name: str) -> zipfile.ZipInfo:
        return self.z.getinfo(name)

    def read(self, name: str | zipfile.ZipInfo) -> bytes:
        return self.budget.read(self.z, name)

    def open(self, name: str | zipfile.ZipInfo) -> _Counted:
        return self.budget.open(self.z, name)
