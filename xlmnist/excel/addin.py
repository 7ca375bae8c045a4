"""``xlmnist addin build|install``: the xlmnist ribbon add-in (``xlmnist.xlam``) for desktop Excel.

The add-in is built from xlwings' own ribbon add-in template (``quickstart_addin_ribbon.xlam``, the
BSD-licensed part of xlwings, which carries xlwings' ``RunPython`` VBA module) by editing the zip; the
sources are package data (``xlmnist/excel/addin_src/``), so this works from any install (venv, --user,
conda):

* ``customUI/customUI.xml`` is replaced by ``addin_src/customUI.xml`` (the "xlmnist" ribbon tab);
* in ``xl/vbaProject.bin`` (an OLE2 compound file, :mod:`xlmnist.excel.vba`) the template's ribbon module
  ``RibbonMyAddin`` is replaced by ``addin_src/xlmnist.bas`` (module ``XlmnistRibbon``), and xlwings' own
  module gets ``PROJECT_NAME = "xlmnist"`` (the template's is ``"myaddin"``: it would read only
  ``myaddin.conf``). Both are MS-OVBA-compressed source with ``MODULEOFFSET 0`` (no p-code: the template's
  ``_VBA_PROJECT`` is version-independent, 0xFFFF, so Excel compiles the VBA from source on load);
  ``PROJECT``/``PROJECTwm`` are renamed to match and the compound file is written anew. Every other stream
  (Dictionary, ThisWorkbook, Sheet2) is copied byte for byte;
* the config sheet ``_myaddin.conf`` becomes ``xlmnist.conf`` (the sheet xlwings' VBA looks for:
  ``PROJECT_NAME & ".conf"``), pre-filled with the Python that runs the build (``Interpreter_Win`` on
  Windows, ``Interpreter_Mac`` on macOS, or ``--interpreter``), ``Conda Path``/``Conda Env`` when it runs
  in a conda environment, and ``Use UDF Server`` with ``--warm`` (Windows: one Python process stays alive).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

from xlmnist.errors import XlmnistError
from xlmnist.excel.vba import compress, decompress, module_offsets, rewrite_dir, write_cfb

ADDIN_DIR = Path(__file__).resolve().parent / "addin_src"  # package data
TEMPLATE_NAME = "quickstart_addin_ribbon.xlam"
OLD_MODULE, OLD_PROJECT = "RibbonMyAddin", "MyAddin"
NEW_PROJECT = "xlmnist"
XLWINGS_MODULE = "xlwings"
OLD_CONF_SHEET, CONF_SHEET = "_myaddin.conf", "xlmnist.conf"


def interpreter_settings(
    interpreter: str | None = None, platform: str = sys.platform, environ=os.environ, warm: bool = False
) -> dict[str, str]:
    """The config sheet's pre-filled rows {label: value}: the Python running this command (or
    ``interpreter``) under the key of this platform, conda's base folder and environment when it runs in
    one, and ``Use UDF Server`` when ``warm``."""
    out: dict[str, str] = {}
    exe = interpreter or sys.executable
    windows = platform.startswith("win") or (interpreter is not None and ("\\" in exe or exe[1:2] == ":"))
    if platform.startswith("win") or (interpreter and windows):
        pythonw = Path(exe).with_name("pythonw.exe")
        out["Interpreter_Win"] = str(pythonw) if interpreter is None and pythonw.is_file() else exe
    elif platform == "darwin" or interpreter:
        out["Interpreter_Mac"] = exe
    prefix, conda = environ.get("CONDA_PREFIX"), environ.get("CONDA_EXE")
    if prefix and conda and interpreter is None and Path(prefix).resolve() == Path(sys.prefix).resolve():
        out["Conda Path"] = str(Path(conda).resolve().parents[1])
        out["Conda Env"] = environ.get("CONDA_DEFAULT_ENV") or Path(prefix).name
    if warm:
        out["Use UDF Server"] = "TRUE"
    return out


def template_path() -> Path:
    import xlwings  # deferred: only `addin install` needs xlwings

    path = Path(xlwings.__file__).parent / TEMPLATE_NAME
    if not path.is_file():
        raise XlmnistError(f"{path}: xlwings' ribbon add-in template is missing (reinstall xlwings)")
    return path


def _source(name: str) -> bytes:
    path = ADDIN_DIR / name
    if not path.is_file():
        raise XlmnistError(f"{path}: add-in source file missing (reinstall xlmnist)")
    return path.read_bytes()


def module_name(bas: str) -> str:
    first = bas.splitlines()[0]
    if not first.startswith("Attribute VB_Name = "):
        raise XlmnistError('xlmnist.bas: the first line must be Attribute VB_Name = "..."')
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
    dir_data = decompress(streams["VBA/dir"])
    offset = module_offsets(dir_data)[XLWINGS_MODULE]
    xlw = decompress(streams[f"VBA/{XLWINGS_MODULE}"][offset:])
    named = xlw.replace(
        b'PROJECT_NAME As String = "myaddin"', f'PROJECT_NAME As String = "{NEW_PROJECT}"'.encode()
    )
    if named == xlw:
        raise XlmnistError('vbaProject.bin: xlwings\' module has no PROJECT_NAME = "myaddin" to rename')
    streams.pop(f"VBA/{OLD_MODULE}")
    streams[f"VBA/{new}"] = compress(code)
    streams[f"VBA/{XLWINGS_MODULE}"] = compress(named)
    modules = {OLD_MODULE: new, XLWINGS_MODULE: XLWINGS_MODULE}
    streams["VBA/dir"] = compress(rewrite_dir(dir_data, modules, NEW_PROJECT))
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


def config_workbook(workbook_xml: bytes) -> bytes:
    """xl/workbook.xml with the config sheet named ``xlmnist.conf``."""
    out = workbook_xml.replace(f'name="{OLD_CONF_SHEET}"'.encode(), f'name="{CONF_SHEET}"'.encode())
    if out == workbook_xml:
        raise XlmnistError(f"xl/workbook.xml: the template has no sheet {OLD_CONF_SHEET!r}")
    return out


def config_sheet(sheet_xml: bytes, shared_xml: bytes, settings: dict[str, str]) -> bytes:
    """The config sheet holding exactly the rows of ``settings`` (label in A, value in B, from row 1 down
    without gaps: xlwings reads A1 down to the first empty cell). Rows left out matter: a row with an
    empty value would hide the same key in the user's ``xlmnist.conf`` file."""
    labels = [re.sub(r"<[^>]+>", "", si) for si in re.findall(r"<si>(.*?)</si>", shared_xml.decode(), re.S)]
    index = {label.lower(): k for k, label in enumerate(labels)}
    rows = []
    for key, value in settings.items():
        if key.lower() not in index:
            raise XlmnistError(f"{CONF_SHEET}: the template's config sheet has no row {key!r}")
        r = len(rows) + 1
        cell = (f'<c r="B{r}" s="1" t="b"><v>1</v></c>' if value == "TRUE" else
                f'<c r="B{r}" s="1" t="inlineStr"><is><t>{escape(value)}</t></is></c>')  # fmt: skip
        rows.append(f'<row r="{r}"><c r="A{r}" s="1" t="s"><v>{index[key.lower()]}</v></c>{cell}</row>')
    text = re.sub(r"<sheetData>.*?</sheetData>|<sheetData\s*/>", lambda _: f"<sheetData>{''.join(rows)}</sheetData>",
                  sheet_xml.decode(), count=1, flags=re.S)  # fmt: skip
    return re.sub(
        r'<dimension ref="[^"]*"\s*/>', f'<dimension ref="A1:B{max(len(rows), 1)}" />', text
    ).encode()


def build(out_dir: str | os.PathLike = ".", name: str = "xlmnist.xlam", settings=None) -> Path:
    """Write ``out_dir/xlmnist.xlam`` (atomically) and return its path. ``settings``: the config sheet's
    rows to fill (default :func:`interpreter_settings`)."""
    settings = interpreter_settings() if settings is None else settings
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
                    elif info.filename == "xl/workbook.xml":
                        data = config_workbook(data)
                    elif info.filename == "xl/worksheets/sheet1.xml":
                        data = config_sheet(data, zin.read("xl/sharedStrings.xml"), settings)
                    zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return target


def install(path: str | os.PathLike | None = None, settings=None) -> int:
    if not (sys.platform.startswith("win") or sys.platform == "darwin"):
        raise XlmnistError(
            f"addin install: Excel is not available on {sys.platform}; build the add-in here "
            "(xlmnist addin build) and install it on Windows or macOS"
        )
    if path is None:
        path = build(tempfile.mkdtemp(prefix="xlmnist-addin-"), settings=settings)
    exe = shutil.which("xlwings")
    cmd = [exe] if exe else [sys.executable, "-m", "xlwings.cli"]
    # on macOS, xlwings' addin install also installs the AppleScript RunPython needs
    return subprocess.call([*cmd, "addin", "install", "-f", str(path)])


def _settings(args) -> dict[str, str]:
    return interpreter_settings(args.interpreter, warm=args.warm)


def cmd_build(args) -> int:
    settings = _settings(args)
    path = build(args.out, settings=settings)
    print(path)
    for key, value in settings.items():
        print(f"  {CONF_SHEET}: {key} = {value}", file=sys.stderr)
    if not any(k.startswith("Interpreter") for k in settings):
        print(f"  {CONF_SHEET}: no Interpreter filled in (built on {sys.platform}); use --interpreter PATH "
              "with the Python of the Windows/macOS machine", file=sys.stderr)  # fmt: skip
    return 0


def cmd_install(args) -> int:
    return install(args.file, settings=_settings(args))


def _config_flags(p) -> None:
    p.add_argument("--interpreter", default=None,
                   help="Python for the add-in's config sheet (default: the Python running this command)")  # fmt: skip
    p.add_argument("--warm", action="store_true",
                   help="Windows: set Use UDF Server: one Python process stays alive between clicks (warm "
                   "Step/Train), and Train runs in the background so Cancel works")  # fmt: skip


def register(sub) -> None:
    p = sub.add_parser("addin", help="build or install the xlmnist Excel ribbon add-in (xlwings)")
    asub = p.add_subparsers(dest="addin_command", metavar="ACTION", required=True)
    b = asub.add_parser("build", help="write xlmnist.xlam (from xlwings' ribbon add-in template)")
    b.add_argument("--out", default=".", help="folder for xlmnist.xlam (default: current folder)")
    _config_flags(b)
    b.add_argument("--calc", action="store_true", help="the LibreOffice Calc extension xlmnist.oxt instead")
    b.set_defaults(func=lambda a: _calc("cmd_build", a) if a.calc else cmd_build(a))
    i = asub.add_parser("install", help="install the add-in into Excel (Windows/macOS, via xlwings)")
    i.add_argument("-f", "--file", default=None, help="an xlmnist.xlam to install (default: build one)")
    _config_flags(i)
    i.add_argument("--calc", action="store_true", help="install xlmnist.oxt into LibreOffice (unopkg add)")
    i.set_defaults(func=lambda a: _calc("cmd_install", a) if a.calc else cmd_install(a))


def _calc(command: str, args) -> int:
    from xlmnist.calc import oxt  # deferred: the Calc side is only needed for --calc

    return getattr(oxt, command)(args)
