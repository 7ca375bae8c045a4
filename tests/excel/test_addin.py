"""The built xlmnist.xlam: a valid zip from xlwings' ribbon template with our ribbon and our VBA module."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import olefile
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xlmnist import oracle
from xlmnist.excel import addin, vba

with warnings.catch_warnings():  # oletools' pyparsing deprecation noise at import
    warnings.simplefilter("ignore")
    from oletools.olevba import VBA_Parser, decompress_stream

UI = "{http://schemas.microsoft.com/office/2006/01/customui}"


@pytest.fixture(scope="module")
def xlam(tmp_path_factory):
    out = tmp_path_factory.mktemp("addin")
    proc = subprocess.run([sys.executable, "-m", "xlmnist", "addin", "build", "--out", str(out),
                           "--interpreter", r"C:\Users\Ann Lee\venv\Scripts\python.exe"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    path = out / "xlmnist.xlam"
    assert proc.stdout.strip() == str(path)
    return path


@pytest.fixture(scope="module")
def macros(xlam):
    parser = VBA_Parser(str(xlam))
    try:
        return {name: code for _, _, name, code in parser.extract_macros()}
    finally:
        parser.close()


def test_zip_is_the_template_with_two_parts_replaced(xlam):
    with zipfile.ZipFile(xlam) as z, zipfile.ZipFile(addin.template_path()) as t:
        assert z.testzip() is None
        assert z.namelist() == t.namelist()
        changed = {n for n in t.namelist() if z.read(n) != t.read(n)}
        assert changed == {
            "customUI/customUI.xml",
            "xl/vbaProject.bin",
            "xl/workbook.xml",
            "xl/worksheets/sheet1.xml",
        }
        assert b"customUI/customUI.xml" in z.read("_rels/.rels")


def test_ribbon_names_xlmnist_and_every_button_has_a_vba_callback(xlam, macros):
    with zipfile.ZipFile(xlam) as z:
        root = ET.fromstring(z.read("customUI/customUI.xml"))
    (tab,) = root.iter(f"{UI}tab")
    assert tab.get("label") == "xlmnist"
    buttons = {b.get("label"): b.get("onAction") for b in root.iter(f"{UI}button")}
    assert set(buttons) == {"Train", "Step", "Export", "Reset", "Cancel"}
    code = macros["XlmnistRibbon.bas"]
    for label, action in buttons.items():
        module, sub = action.split(".")
        assert module == "XlmnistRibbon"
        call = "CancelRun" if label == "Cancel" else f'RunXlmnist "{label.lower()}"'
        assert re.search(rf"^Sub {sub}\(control As IRibbonControl\)\r?\n\s+{call}\r?\n", code, re.M)
    # Cancel writes the flag file xlmnist.excel.runs polls, without Python
    assert '"." & ActiveWorkbook.Name & ".xlmnist-cancel"' in code


def test_vba_calls_xlmnist_through_xlwings_runpython(macros):
    code = macros["XlmnistRibbon.bas"]
    assert code.startswith('Attribute VB_Name = "XlmnistRibbon"')
    assert 'RunPython "import xlmnist.excel as x; x.run(\'" & action & "\')"' in code
    assert code.replace("\r\n", "\n").strip() == (addin.ADDIN_DIR / "xlmnist.bas").read_text().strip()
    assert "Public Function RunPython(" in macros["xlwings.bas"]  # xlwings' own module, kept as is
    assert not any("RibbonMyAddin" in name or "RibbonMyAddin" in c for name, c in macros.items())


def test_vba_project_streams(xlam):
    with zipfile.ZipFile(xlam) as z, zipfile.ZipFile(addin.template_path()) as t:
        new = olefile.OleFileIO(io.BytesIO(z.read("xl/vbaProject.bin")))
        old = olefile.OleFileIO(io.BytesIO(t.read("xl/vbaProject.bin")))
    names = {"/".join(e) for e in new.listdir()}
    assert names == {"/".join(e) for e in old.listdir()} - {"VBA/RibbonMyAddin"} | {"VBA/XlmnistRibbon"}
    for name in names - {"VBA/XlmnistRibbon", "VBA/xlwings", "VBA/dir", "PROJECT", "PROJECTwm"}:
        assert new.openstream(name).read() == old.openstream(name).read(), name
    project = new.openstream("PROJECT").read().decode("latin-1")
    assert "Module=XlmnistRibbon\r\n" in project and 'Name="xlmnist"' in project
    assert "Module=RibbonMyAddin" not in project
    assert new.openstream("VBA/_VBA_PROJECT").read()[2:4] == b"\xff\xff"  # compiled from source on load
    # dir stream: our module has no p-code (offset 0); the other modules keep theirs
    recs = vba._records(bytes(decompress_stream(bytearray(new.openstream("VBA/dir").read()))))
    modules = [b.decode() for r, b in recs if r == 0x19]
    offsets = [int.from_bytes(b, "little") for r, b in recs if r == 0x31]
    assert dict(zip(modules, offsets))["XlmnistRibbon"] == dict(zip(modules, offsets))["xlwings"] == 0
    assert [b for r, b in recs if r == 0x04] == [b"xlmnist"]


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.binary(max_size=9000), st.text(alphabet="ab \r\nSubEnd", max_size=9000).map(str.encode)))
def test_compression_round_trips_through_oletools(data):
    packed = vba.compress(data)
    assert bytes(decompress_stream(bytearray(packed))) == data
    assert vba.decompress(packed) == data


def test_cfb_writer_round_trips_streams_of_every_size():
    streams = {
        "A": b"",
        "VBA/x": b"1" * 63,
        "VBA/y": b"2" * 4095,
        "VBA/z": b"3" * 4096,
        "B/C/d": bytes(range(256)) * 80,
    }
    ole = olefile.OleFileIO(io.BytesIO(vba.write_cfb(streams)))
    assert {"/".join(e): ole.openstream("/".join(e)).read() for e in ole.listdir()} == streams


@pytest.mark.skipif(sys.platform.startswith("win") or sys.platform == "darwin", reason="Linux behaviour")
def test_install_on_linux_says_excel_is_not_here():
    proc = subprocess.run(
        [sys.executable, "-m", "xlmnist", "addin", "install"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Excel is not available" in proc.stderr


@pytest.mark.libreoffice
def test_libreoffice_reads_the_vba_project(xlam, tmp_path):
    """An independent OLE2 + MS-OVBA reader: LibreOffice imports our module from the built add-in."""
    book = tmp_path / "addin.xlsm"  # LibreOffice opens macro workbooks, not add-ins: same parts, other type
    with zipfile.ZipFile(xlam) as zin, zipfile.ZipFile(book, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "[Content_Types].xml":
                data = data.replace(b"ms-excel.addin.macroEnabled", b"ms-excel.sheet.macroEnabled")
            zout.writestr(info, data)
    cmd = [oracle.soffice_binary(), f"-env:UserInstallation={(tmp_path / 'profile').as_uri()}", "--headless",
           "--convert-to", "ods", "--outdir", str(tmp_path), str(book)]  # fmt: skip
    subprocess.run(cmd, capture_output=True, timeout=300, check=True)
    with zipfile.ZipFile(tmp_path / "addin.ods") as ods:
        basic = {n for n in ods.namelist() if n.startswith("Basic/xlmnist/")}
        module = ods.read("Basic/xlmnist/XlmnistRibbon.xml").decode()
    assert {"Basic/xlmnist/XlmnistRibbon.xml", "Basic/xlmnist/xlwings.xml"} <= basic
    assert "Sub XlmnistTrain(control As IRibbonControl)" in module
    assert "import xlmnist.excel as x; x.run(" in module


def test_the_addin_reads_its_own_config(xlam, macros):
    """PROJECT_NAME "xlmnist": xlwings' VBA reads the sheet xlmnist.conf and the files xlmnist.conf (not the
    template's myaddin); the sheet holds the interpreter given, and only filled rows (an empty row would
    hide the user's xlmnist.conf file)."""
    assert 'Public Const PROJECT_NAME As String = "xlmnist"' in macros["xlwings.bas"]
    assert "myaddin" not in macros["xlwings.bas"].lower()
    with zipfile.ZipFile(xlam) as z:
        assert b'<sheet name="xlmnist.conf"' in z.read("xl/workbook.xml")
        sheet = z.read("xl/worksheets/sheet1.xml").decode()
        labels = re.findall(r"<si><t>(.*?)</t></si>", z.read("xl/sharedStrings.xml").decode())
    rows = re.findall(
        r'<row r="(\d+)"><c r="A\1" s="1" t="s"><v>(\d+)</v></c><c r="B\1"[^>]*>(.*?)</c></row>', sheet
    )
    got = {labels[int(k)]: re.sub(r"<[^>]+>", "", v) for _, k, v in rows}
    assert got == {"Interpreter_Win": r"C:\Users\Ann Lee\venv\Scripts\python.exe"}
    assert [r for r, _, _ in rows] == ["1"]


@pytest.mark.parametrize(
    "platform, env, want",
    [
        ("win32", {}, {"Interpreter_Win"}),
        ("darwin", {}, {"Interpreter_Mac"}),
        ("linux", {}, set()),
        ("darwin", {"CONDA_PREFIX": sys.prefix, "CONDA_EXE": "/opt/conda/bin/conda", "CONDA_DEFAULT_ENV": "fastai"},
         {"Interpreter_Mac", "Conda Path", "Conda Env"}),
    ],
)  # fmt: skip
def test_interpreter_settings_name_the_python_running_the_command(platform, env, want):
    got = addin.interpreter_settings(platform=platform, environ=env)
    assert set(got) == want
    for key in want & {"Interpreter_Win", "Interpreter_Mac"}:
        assert got[key] in (sys.executable, str(Path(sys.executable).with_name("pythonw.exe")))
    if env:
        assert got["Conda Env"] == "fastai" and got["Conda Path"] == str(Path("/opt/conda").resolve())
    assert addin.interpreter_settings(platform=platform, environ=env, warm=True)["Use UDF Server"] == "TRUE"


def test_sources_are_package_data():
    """Found inside the installed package (venv, --user, conda alike), and declared as package data."""
    import tomllib

    import xlmnist

    assert addin.ADDIN_DIR == Path(xlmnist.__file__).parent / "excel" / "addin_src"
    assert {"xlmnist.bas", "customUI.xml"} <= {p.name for p in addin.ADDIN_DIR.iterdir()}
    root = Path(xlmnist.__file__).parents[1] / "pyproject.toml"
    if root.is_file():  # a source checkout: the wheel ships the folder
        data = tomllib.loads(root.read_text())["tool"]["setuptools"]["package-data"]["xlmnist"]
        assert "excel/addin_src/*" in data
