"""Write-back copies unchanged zip members as their original compressed bytes (no inflate/deflate)."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import openpyxl
import pytest

from xlmnist.xlsx.writeback import write_values

LOCAL = struct.Struct("<4s5H3L2H")


def raw_members(path: Path) -> dict[str, tuple]:
    """{name: (compressed bytes, compress_type, CRC, sizes, date, external_attr)} read from the file itself."""
    out = {}
    data = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            head = LOCAL.unpack_from(data, info.header_offset)
            start = info.header_offset + LOCAL.size + head[-2] + head[-1]
            out[info.filename] = (
                data[start : start + info.compress_size],
                info.compress_type,
                info.CRC,
                info.compress_size,
                info.file_size,
                info.date_time,
                info.external_attr,
            )
        assert zf.testzip() is None  # every member inflates and matches its CRC
    return out


def book(path: Path, stored: bool = False) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "data"
    for i in range(1, 50):
        ws.append([i, i * i, f"text {i}"])
    other = wb.create_sheet("other")
    other["A1"] = "untouched"
    wb.save(path)
    # the same members deflated at level 1 (a re-deflate at the default level would differ); ``stored``:
    # every other member STORED and each with a data descriptor (written to a stream)
    with zipfile.ZipFile(path) as zf:
        items = [(i, zf.read(i)) for i in zf.infolist()]
    with open(path, "wb") as fh:
        if not stored:
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zout:
                for info, b in items:
                    zout.writestr(info.filename, b)
        else:

            class Stream:  # not seekable: zipfile writes data descriptors (flag bit 3)
                def write(self, b):
                    return fh.write(b)

                def flush(self):
                    fh.flush()

                def tell(self):
                    return fh.tell()

            with zipfile.ZipFile(Stream(), "w") as zout:
                for n, (info, b) in enumerate(items):
                    info.compress_type = zipfile.ZIP_STORED if n % 2 else zipfile.ZIP_DEFLATED
                    zout.writestr(info, b, compresslevel=1)
    return path


@pytest.mark.parametrize("stored", [False, True])
def test_unchanged_members_keep_their_compressed_bytes(tmp_path, stored):
    src = book(tmp_path / "in.xlsx", stored)
    out = tmp_path / "out.xlsx"
    before = raw_members(src)
    if stored:
        with zipfile.ZipFile(src) as zf:
            assert any(i.flag_bits & 8 for i in zf.infolist())
    write_values(src, {"data!B2:B3": [[7.5], [8.5]]}, out=out)
    after = raw_members(out)
    assert list(after) == list(before)
    changed = {n for n in before if before[n] != after[n]}
    # workbook.xml gets fullCalcOnLoad (re-deflated); everything else is the source's own bytes
    assert changed - {"xl/workbook.xml"} == {"xl/worksheets/sheet1.xml"}
    with zipfile.ZipFile(out) as zf:
        assert not any(i.flag_bits & 8 for i in zf.infolist())
    wb = openpyxl.load_workbook(out)
    assert [wb["data"]["B2"].value, wb["data"]["B3"].value, wb["other"]["A1"].value] == [
        7.5,
        8.5,
        "untouched",
    ]
    # written twice in place: still a valid zip, the same bytes for what did not change
    write_values(out, {"data!C2": 1.25})
    again = raw_members(out)
    assert {n for n in after if after[n] != again[n]} <= {"xl/worksheets/sheet1.xml", "xl/workbook.xml"}
    assert before["xl/styles.xml"] == again["xl/styles.xml"]
