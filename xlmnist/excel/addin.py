"""``xlmnist addin build|install``: the xlmnist ribbon add-in (``xlmnist.xlam``) for desktop Excel.

The add-in is built from xlwings' own ribbon add-in template (``quickstart_addin_ribbon.xlam``, the
BSD-licensed part of xlwings, which carries xlwings' ``RunPython`` VBA module) by editing the zip:

* ``customUI/customUI.xml`` is replaced by ``addin/customUI.xml`` (the "xlmnist" ribbon tab);
* in ``xl/vbaProject.bin`` (an OLE2 compound file) the template's ribbon module ``RibbonMyAddin`` is
  replaced by ``addin/xlmnist.bas`` (module ``XlmnistRibbon``): its source is MS-OVBA-compressed into
  a new module stream, the ``dir`` stream is rewritten with the new module name and ``MODULEOFFSET 0``
  (no p-code: the template's ``_VBA_PROJECT`` is already version-independent, 0xFFFF, so Excel compiles
  the VBA from source on load), ``PROJECT``/``PROJECTwm`` are renamed to match, and the compound file is
  written anew. Every other stream (xlwings, Dictionary, ThisWorkbook, Sheet2) is copied byte for byte.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from xlmnist.errors import XlmnistError


def _addin_dir() -> Path:
    """``addin/`` of a source checkout, else the copy a wheel installs under ``<prefix>/share/xlmnist/addin``."""
    checkout = Path(__file__).resolve().parents[2] / "addin"
    if (checkout / "xlmnist.bas").is_file():
        return checkout
    return Path(sys.prefix) / "share" / "xlmnist" / "addin"


ADDIN_DIR = _addin_dir()
TEMPLATE_NAME = "quickstart_addin_ribbon.xlam"
OLD_MODULE, OLD_PROJECT = "RibbonMyAddin", "MyAddin"
NEW_PROJECT = "xlmnist"

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


def rewrite_dir(dir_data: bytes, old: str, new: str, project: str) -> bytes:
    """Rename module ``old`` to ``new`` (name, unicode name, stream names), its offset to 0, the project."""
    recs, out, current = _records(dir_data), [], None
    for rid, body in recs:
        if rid == 0x19:  # MODULENAME starts a module record
            current = body.decode("latin-1")
        mine = current == old
        if rid == 0x04:
            body = project.encode("latin-1")
        elif mine and rid in (0x19, 0x1A):
            body = new.encode("latin-1")
        elif mine and rid in (0x47, 0x32):
            body = new.encode("utf-16-le")
        elif mine and rid == 0x31:
            body = struct.pack("<I", 0)
        out.append((rid, body))
    if old not in {b.decode("latin-1") for r, b in recs if r == 0x19}:
        raise XlmnistError(f"vbaProject.bin: the template has no module {old!r}")
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


# ---------------------------------------------------------------- the add-in


def template_path() -> Path:
    import xlwings  # deferred: only `addin install` needs xlwings

    path = Path(xlwings.__file__).parent / TEMPLATE_NAME
    if not path.is_file():
        raise XlmnistError(f"{path}: xlwings' ribbon add-in template is missing (reinstall xlwings)")
    return path


def _source(name: str) -> bytes:
    path = ADDIN_DIR / name
    if not path.is_file():
        raise XlmnistError(f"{path}: add-in source file missing (run from an xlmnist source checkout)")
    return path.read_bytes()


def module_name(bas: str) -> str:
    first = bas.splitlines()[0]
    if not first.startswith("Attribute VB_Name = "):
        raise XlmnistError('addin/xlmnist.bas: the first line must be Attribute VB_Name = "..."')
    return first.split("=", 1)[1].strip().strip('"')


def build_vba_project(template_bin: bytes, bas: str) -> bytes:
    """The template's vbaProject.bin with its ribbon module replaced by ``bas`` (VBA source text)."""
    import olefile  # deferred: optional dependency, only to read a VBA project

    new = module_name(bas)
    ole = olefile.OleFileIO(io.BytesIO(template_bin))
    streams, clsids = {}, {}
    for parts in ole.listdir(streams=True, storages=True):
        path = "/".join(parts)
        if ole.get_type(path) == olefile.STGTY_STREAM:
            streams[path] = ole.openstream(path).read()
        clsids[path] = bytes.fromhex(ole.getclsid(path).replace("-", "") or "00" * 16)
    clsids[""] = bytes.fromhex(ole.root.clsid.replace("-", "") or "00" * 16)
    ole.close()
    if streams.get("VBA/_VBA_PROJECT", b"")[2:4] != b"\xff\xff":
        raise XlmnistError("vbaProject.bin: the template's VBA is not version-independent (_VBA_PROJECT)")
    code = "\r\n".join(bas.replace("\r\n", "\n").split("\n")).encode("cp1252")
    streams.pop(f"VBA/{OLD_MODULE}")
    streams[f"VBA/{new}"] = compress(code)
    streams["VBA/dir"] = compress(rewrite_dir(decompress(streams["VBA/dir"]), OLD_MODULE, new, NEW_PROJECT))
    project = streams["PROJECT"].decode("latin-1")
    project = project.replace(f"Module={OLD_MODULE}\r\n", f"Module={new}\r\n")
    project = project.replace(f'Name="{OLD_PROJECT}"', f'Name="{NEW_PROJECT}"')
    project = project.replace(f"\r\n{OLD_MODULE}=", f"\r\n{new}=")
    streams["PROJECT"] = project.encode("latin-1")
    wm = streams["PROJECTwm"]
    streams["PROJECTwm"] = wm.replace(
        OLD_MODULE.encode() + b"\0" + OLD_MODULE.encode("utf-16-le") + b"\0\0",
        new.encode() + b"\0" + new.encode("utf-16-le") + b"\0\0",
    )
    clsids[f"VBA/{new}"] = clsids.pop(f"VBA/{OLD_MODULE}", b"\0" * 16)
    return write_cfb(streams, clsids)


def build(out_dir: str | os.PathLike = ".", name: str = "xlmnist.xlam") -> Path:
    """Write ``out_dir/xlmnist.xlam`` (atomically) and return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / name
    ui, bas = _source("customUI.xml"), _source("xlmnist.bas").decode("utf-8")
    with zipfile.ZipFile(template_path()) as zin:
        vba = build_vba_project(zin.read("xl/vbaProject.bin"), bas)
        fd, tmp = tempfile.mkstemp(prefix=".xlmnist-", suffix=".xlam", dir=out_dir)
        try:
            with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zout:
                for info in zin.infolist():
                    data = zin.read(info)
                    if info.filename == "customUI/customUI.xml":
                        data = ui
                    elif info.filename == "xl/vbaProject.bin":
                        data = vba
                    zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return target


def install(path: str | os.PathLike | None = None) -> int:
    if not (sys.platform.startswith("win") or sys.platform == "darwin"):
        raise XlmnistError(
            f"addin install: Excel is not available on {sys.platform}; build the add-in here "
            "(xlmnist addin build) and install it on Windows or macOS"
        )
    if path is None:
        path = build(tempfile.mkdtemp(prefix="xlmnist-addin-"))
    exe = shutil.which("xlwings")
    cmd = [exe] if exe else [sys.executable, "-m", "xlwings.cli"]
    return subprocess.call([*cmd, "addin", "install", "-f", str(path)])


def cmd_build(args) -> int:
    path = build(args.out)
    print(path)
    return 0


def cmd_install(args) -> int:
    return install(args.file)


def register(sub) -> None:
    p = sub.add_parser("addin", help="build or install the xlmnist Excel ribbon add-in (xlwings)")
    asub = p.add_subparsers(dest="addin_command", metavar="ACTION", required=True)
    b = asub.add_parser("build", help="write xlmnist.xlam (from xlwings' ribbon add-in template)")
    b.add_argument("--out", default=".", help="folder for xlmnist.xlam (default: current folder)")
    b.add_argument("--calc", action="store_true", help="the LibreOffice Calc extension xlmnist.oxt instead")
    b.set_defaults(func=lambda a: _calc("cmd_build", a) if a.calc else cmd_build(a))
    i = asub.add_parser("install", help="install the add-in into Excel (Windows/macOS, via xlwings)")
    i.add_argument("-f", "--file", default=None, help="an xlmnist.xlam to install (default: build one)")
    i.add_argument("--calc", action="store_true", help="install xlmnist.oxt into LibreOffice (unopkg add)")
    i.set_defaults(func=lambda a: _calc("cmd_install", a) if a.calc else cmd_install(a))


def _calc(command: str, args) -> int:
    from xlmnist.calc import oxt

    return getattr(oxt, command)(args)
