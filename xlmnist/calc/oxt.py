"""``xlmnist addin build --calc`` / ``install --calc``: the LibreOffice extension ``xlmnist.oxt``.

The extension is the folder ``addin/calc`` zipped (``description.xml``, ``META-INF/manifest.xml``,
``Addons.xcu`` = the xlmnist toolbar and menu, ``CalcWindowState.xcu`` = the toolbar's title "xlmnist"
and place, ``python/xlmnist_calc.py`` = the macros), with one line
of the macro module filled in: ``PATHS``, the folders where this Python finds xlmnist, torch and numpy,
so that LibreOffice's own Python imports the same packages. The zip is deterministic (sorted entries,
fixed timestamps). ``install`` runs ``unopkg add`` (into the user's profile, or ``profile``).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import site
import sys
import tempfile
import zipfile
from pathlib import Path

from xlmnist.errors import XlmnistError

NAME = "xlmnist.oxt"  # the macros' URLs name the deployed package by this file name
MODULE = "python/xlmnist_calc.py"
_STAMP = (2024, 1, 1, 0, 0, 0)


def sources() -> Path:
    """``addin/calc`` of a source checkout, else the copy a wheel installs under ``<prefix>/share``."""
    checkout = Path(__file__).resolve().parents[2] / "addin" / "calc"
    if (checkout / "Addons.xcu").is_file():
        return checkout
    return Path(sys.prefix) / "share" / "xlmnist" / "addin" / "calc"


def python_paths() -> list[str]:
    """Where this Python imports xlmnist, torch and numpy from (first wins), without duplicates."""
    out: list[str] = []
    for mod in ("xlmnist", "torch", "numpy"):
        spec = importlib.util.find_spec(mod)
        if spec is not None and spec.origin:
            out.append(str(Path(spec.origin).resolve().parents[1]))
    out += site.getsitepackages() + [site.getusersitepackages()]
    seen: set[str] = set()
    return [p for p in out if os.path.isdir(p) and not (p in seen or seen.add(p))]


def module_text(paths: list[str]) -> str:
    text = (sources() / MODULE).read_text()
    line = "PATHS = []  # filled in by `xlmnist addin build --calc`"
    if line not in text:
        raise XlmnistError(f"{sources() / MODULE}: the PATHS line is missing")
    return text.replace(line, f"PATHS = {json.dumps(paths)}  # written by `xlmnist addin build --calc`")


def build(out_dir: str | os.PathLike = ".", paths: list[str] | None = None) -> Path:
    """Write ``out_dir/xlmnist.oxt``; return its path."""
    src = sources()
    if not (src / "Addons.xcu").is_file():
        raise XlmnistError(f"{src}: the LibreOffice extension sources are missing")
    files = sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in files:
            rel = p.relative_to(src).as_posix()
            data = (
                module_text(python_paths() if paths is None else paths) if rel == MODULE else p.read_bytes()
            )
            info = zipfile.ZipInfo(rel, _STAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    out = Path(out_dir) / NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".oxt.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, out)
    return out


def install(oxt: str | os.PathLike | None = None, profile: str | os.PathLike | None = None) -> Path:
    """``unopkg add`` the extension (built into a temporary folder when ``oxt`` is None)."""
    from xlmnist.calc.office import add_extension  # deferred: only `addin install --calc` runs soffice

    with tempfile.TemporaryDirectory(prefix="xlmnist-oxt-") as tmp:
        path = Path(oxt) if oxt else build(tmp)
        if path.name != NAME:
            raise XlmnistError(f"{path}: the extension must be named {NAME} (its macros name it)")
        add_extension(path, None if profile is None else Path(profile))
    return path


def cmd_build(args) -> int:
    path = build(args.out)
    print(f"wrote {path} (LibreOffice extension; install with: xlmnist addin install --calc -f {path})")
    return 0


def cmd_install(args) -> int:
    path = install(args.file)
    print(
        f"installed {path.name} into LibreOffice (restart LibreOffice; the xlmnist toolbar appears in Calc)"
    )
    return 0
