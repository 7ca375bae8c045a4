"""The VBA project inside an .xlam, read and written without Office: MS-OVBA compression (2.4.1), the
``dir`` stream's records (2.3.4.2) and a compound-file (OLE2/CFB v3) writer. Used by
:mod:`xlmnist.excel.addin` to put xlmnist's ribbon module into xlwings' add-in template."""

from __future__ import annotations

import struct

from xlmnist.errors import XlmnistError

# ---------------------------------------------------------------- MS-OVBA compression (2.4.1)


def _copy_token_bits(pos: int) -> int:
    """Bits of a copy token used for the offset at ``pos`` bytes into the decompressed chunk."""
    return max((pos - 1).bit_length(), 4)


def decompress(data: bytes) -> bytes:
    if not data or data[0] != 1:
        raise XlmnistError("vbaProject.bin: a VBA stream is not MS-OVBA compressed")
    out, i = bytearray(), 1
    while i < len(data):
        header = struct.unpack_from("<H", data, i)[0]
        size, compressed, i = (header & 0x0FFF) + 3, header & 0x8000, i + 2
        end, start = min(i + size - 2, len(data)), len(out)
        if not compressed:
            out += data[i : i + 4096]
            i += 4096
            continue
        while i < end:
            flags, i = data[i], i + 1
            for bit in range(8):
                if i >= end:
                    break
                if not flags >> bit & 1:
                    out.append(data[i])
                    i += 1
                    continue
                token = struct.unpack_from("<H", data, i)[0]
                i += 2
                bits = _copy_token_bits(len(out) - start)
                length, offset = (token & (0xFFFF >> bits)) + 3, (token >> (16 - bits)) + 1
                for _ in range(length):
                    out.append(out[-offset])
    return bytes(out)


def _compress_chunk(chunk: bytes) -> bytes:
    out, pos, n, seen = bytearray(), 0, len(chunk), {}
    while pos < n:
        flag_at, flags = len(out), 0
        out.append(0)
        for bit in range(8):
            if pos >= n:
                break
            bits = _copy_token_bits(pos)
            max_len, max_off = min((0xFFFF >> bits) + 3, n - pos), 1 << bits
            best_len = best_off = 0
            for cand in reversed(seen.get(chunk[pos : pos + 3], [])):
                if pos - cand > max_off:
                    break
                k = 0
                while k < max_len and chunk[cand + k] == chunk[pos + k]:
                    k += 1
                if k > best_len:
                    best_len, best_off = k, pos - cand
            step = best_len if best_len >= 3 else 1
            if best_len >= 3:
                flags |= 1 << bit
                out += struct.pack("<H", ((best_off - 1) << (16 - bits)) | (best_len - 3))
            else:
                out.append(chunk[pos])
            for p in range(pos, pos + step):
                seen.setdefault(chunk[p : p + 3], []).append(p)
            pos += step
        out[flag_at] = flags
    return bytes(out)


def compress(data: bytes) -> bytes:
    out = bytearray(b"\x01")
    for start in range(0, len(data), 4096):
        chunk = data[start : start + 4096]
        body = _compress_chunk(chunk)
        if len(body) > 4096:  # incompressible: a raw chunk (always 4096 bytes)
            out += struct.pack("<H", 0x3FFF) + chunk.ljust(4096, b"\0")
        else:
            out += struct.pack("<H", 0x8000 | 0x3000 | (len(body) - 1)) + body
    return bytes(out)


# ---------------------------------------------------------------- dir stream records (2.3.4.2)


def _records(dir_data: bytes) -> list[tuple[int, bytes]]:
    recs, i = [], 0
    while i < len(dir_data):
        rid, size = struct.unpack_from("<HI", dir_data, i)
        if rid == 0x09:  # PROJECTVERSION: Reserved(4)=4, then 4 + 2 bytes
            size = 6
        recs.append((rid, dir_data[i + 6 : i + 6 + size]))
        i += 6 + size
    return recs


def _pack_records(recs: list[tuple[int, bytes]]) -> bytes:
    return b"".join(struct.pack("<HI", rid, 4 if rid == 0x09 else len(body)) + body for rid, body in recs)


def module_offsets(dir_data: bytes) -> dict[str, int]:
    """{module name: MODULEOFFSET}: where each module stream's compressed source starts (after p-code)."""
    out, current = {}, None
    for rid, body in _records(dir_data):
        if rid == 0x19:
            current = body.decode("latin-1")
        elif rid == 0x31 and current is not None:
            out[current] = struct.unpack("<I", body)[0]
    return out


def rewrite_dir(dir_data: bytes, modules: dict[str, str], project: str) -> bytes:
    """Rename each module ``old`` of ``modules`` to ``modules[old]`` (name, unicode name, stream names)
    and set its offset to 0 (source only, no p-code); name the project ``project``."""
    recs, out, current = _records(dir_data), [], None
    for rid, body in recs:
        if rid == 0x19:  # MODULENAME starts a module record
            current = body.decode("latin-1")
        new = modules.get(current)
        if rid == 0x04:
            body = project.encode("latin-1")
        elif new is not None and rid in (0x19, 0x1A):
            body = new.encode("latin-1")
        elif new is not None and rid in (0x47, 0x32):
            body = new.encode("utf-16-le")
        elif new is not None and rid == 0x31:
            body = struct.pack("<I", 0)
        out.append((rid, body))
    missing = set(modules) - {b.decode("latin-1") for r, b in recs if r == 0x19}
    if missing:
        raise XlmnistError(f"vbaProject.bin: the template has no module {sorted(missing)[0]!r}")
    return _pack_records(out)


# ---------------------------------------------------------------- compound file (OLE2/CFB v3) writer

FREE, END, FATSECT = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD


def _tree(names: list[str]) -> tuple[int | None, dict]:
    """Balanced BST over ``names`` in CFB order; returns (root, {name: (left, right, red)})."""
    order = sorted(names, key=lambda s: (len(s), s.upper()))
    links, depth = {}, {}

    def build(lo, hi, d):
        if lo >= hi:
            return None
        mid = (lo + hi) // 2
        depth[order[mid]] = d
        links[order[mid]] = (build(lo, mid, d + 1), build(mid + 1, hi, d + 1))
        return order[mid]

    root = build(0, len(order), 0)
    deepest = max(depth.values(), default=0)
    full = len(order) == 2 ** (deepest + 1) - 1
    return root, {k: (lr[0], lr[1], depth[k] == deepest and not full) for k, lr in links.items()}


def write_cfb(streams: dict[str, bytes], clsids: dict[str, bytes] | None = None) -> bytes:
    """A compound file holding ``streams`` ({"VBA/dir": data, ...}); storages are implied by the paths."""
    clsids = clsids or {}
    entries = {"": {"type": 5, "kids": []}}  # path -> entry
    for path in sorted(streams):
        parts = path.split("/")
        for k in range(1, len(parts) + 1):
            p = "/".join(parts[:k])
            if p not in entries:
                entries[p] = {"type": 2 if k == len(parts) else 1, "kids": []}
                entries["/".join(parts[: k - 1])]["kids"].append(p)
    ids = {p: i for i, p in enumerate(entries)}
    sectors, mini = bytearray(), bytearray()
    fat: list[int] = []
    minifat: list[int] = []

    def chain(table, start, count):
        table += [start + k + 1 for k in range(count - 1)] + [END]

    for p, e in entries.items():
        data = streams.get(p, b"")
        e["size"] = len(data)
        if e["type"] != 2 or not data:
            e["start"] = END if e["type"] == 2 else 0
        elif len(data) < 4096:
            e["start"], n = len(mini) // 64, -(-len(data) // 64)
            chain(minifat, e["start"], n)
            mini += data.ljust(n * 64, b"\0")
    if mini:
        entries[""]["start"], entries[""]["size"] = 0, len(mini)
        n = len(mini) // 512 + (len(mini) % 512 > 0)
        chain(fat, 0, n)
        sectors += mini.ljust(n * 512, b"\0")
    else:
        entries[""]["start"] = END
    for p, e in entries.items():
        data = streams.get(p, b"")
        if e["type"] == 2 and len(data) >= 4096:
            e["start"], n = len(fat), -(-len(data) // 512)
            chain(fat, e["start"], n)
            sectors += data.ljust(n * 512, b"\0")
    minifat_start = len(fat) if minifat else END
    mf = b"".join(struct.pack("<I", x) for x in minifat)
    n_mf = -(-len(mf) // 512)
    if minifat:
        chain(fat, minifat_start, n_mf)
        sectors += mf.ljust(n_mf * 512, b"\xff")
    dirdata = bytearray()
    for e in entries.values():
        root, links = _tree(e["kids"])
        e["child"] = ids[root] if root is not None else FREE
        for kid, (left, right, red) in links.items():
            entries[kid].update(
                left=ids[left] if left else FREE, right=ids[right] if right else FREE, red=red
            )
    for p, e in entries.items():
        name = (p.rsplit("/", 1)[-1] if p else "Root Entry").encode("utf-16-le")
        dirdata += struct.pack(
            "<64sHBBIII16sIQQIQ", name, len(name) + 2, e["type"], 0 if e.get("red") else 1,
            e.get("left", FREE), e.get("right", FREE), e["child"], clsids.get(p, b"\0" * 16), 0, 0, 0,
            e["start"], e["size"],
        )  # fmt: skip
    while len(dirdata) % 512:
        dirdata += struct.pack(
            "<64sHBBIII16sIQQIQ", b"", 0, 0, 0, FREE, FREE, FREE, b"\0" * 16, 0, 0, 0, 0, 0
        )
    dir_start, n_dir = len(fat), len(dirdata) // 512
    chain(fat, dir_start, n_dir)
    sectors += dirdata
    n_fat = 1
    while (len(fat) + n_fat) > n_fat * 128:
        n_fat += 1
    if n_fat > 109:
        raise XlmnistError("vbaProject.bin: too large for this writer (more than 109 FAT sectors)")
    fat_start = len(fat)
    fat += [FATSECT] * n_fat
    fat += [FREE] * (n_fat * 128 - len(fat))
    sectors += b"".join(struct.pack("<I", x) for x in fat)
    difat = [fat_start + k for k in range(n_fat)] + [FREE] * (109 - n_fat)
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"\0" * 16, 0x3E, 3, 0xFFFE, 9, 6,
        b"\0" * 6, 0, n_fat, dir_start, 0, 4096, minifat_start, n_mf, END, 0,
    ) + struct.pack("<109I", *difat)  # fmt: skip
    return header + bytes(sectors)
