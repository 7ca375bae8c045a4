"""``xlmnist addin build --calc``: the extension zip, its toolbar/menu and the macros they call."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

from xlmnist.calc.oxt import build

ROOT = Path(__file__).resolve().parents[2]
OOR = "{http://openoffice.org/2001/registry}"
MANIFEST = "{http://openoffice.org/2001/manifest}"
LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def test_build_is_deterministic_and_complete(tmp_path):
    a = build(tmp_path / "a", paths=["/x"])
    b = build(tmp_path / "b", paths=["/x"])
    assert a.name == "xlmnist.oxt" and a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        assert {"description.xml", "META-INF/manifest.xml", "Addons.xcu", "python/xlmnist_calc.py"} <= names
        manifest = zf.read("META-INF/manifest.xml").decode()
        assert 'full-path="python/"' in manifest and "framework-script" in manifest
        module = zf.read("python/xlmnist_calc.py").decode()
        xcu = ET.fromstring(zf.read("Addons.xcu"))
    assert 'PATHS = ["/x"]' in module
    functions = {n.name for n in ast.parse(module).body if isinstance(n, ast.FunctionDef)}
    urls = [v.text for v in xcu.iter("value") if v.text and v.text.startswith("vnd.sun.star.script:")]
    toolbar = next(n for n in xcu.iter("node") if n.get(f"{OOR}name") == "org.xlmnist.calc.toolbar")
    titles = [v.text for v in toolbar.iter("value") if v.get(LANG)]
    assert titles == ["Train", "Step", "Export", "Reset", "Cancel"]
    assert len(urls) == 10  # the toolbar and the menu
    entries = {e.get(f"{MANIFEST}full-path") for e in ET.fromstring(manifest).iter(f"{MANIFEST}file-entry")}
    assert entries <= names | {"python/"} and "CalcWindowState.xcu" in entries
    for url in urls:
        assert url.startswith("vnd.sun.star.script:xlmnist.oxt|python|xlmnist_calc.py$")
        assert url.endswith("?language=Python&location=user:uno_packages")
        assert url.split("$")[1].split("?")[0] in functions


def test_cli_flag(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "xlmnist", "addin", "build", "--calc", "--out", str(tmp_path)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    module = zipfile.ZipFile(tmp_path / "xlmnist.oxt").read("python/xlmnist_calc.py").decode()
    paths = ast.literal_eval(module.split("PATHS = ", 1)[1].split("  #", 1)[0])
    assert str(ROOT) == paths[0]  # the xlmnist this Python imports comes first


def test_the_toolbar_is_titled_xlmnist(tmp_path):
    """LibreOffice titles an add-on toolbar by the UIName of its window state (``addon_`` + the node name
    in Addons.xcu); without one it shows "Add-On 1"."""
    with zipfile.ZipFile(build(tmp_path, paths=[])) as zf:
        xcu = ET.fromstring(zf.read("Addons.xcu"))
        states = ET.fromstring(zf.read("CalcWindowState.xcu"))
    bar = next(n for n in xcu.iter("node") if n.get(f"{OOR}name") == "OfficeToolBar")
    (node,) = list(bar)
    assert (
        states.get(f"{OOR}name") == "CalcWindowState"
        and states.get(f"{OOR}package") == "org.openoffice.Office.UI"
    )
    state = next(
        n for n in states.iter("node") if n.get(f"{OOR}name").startswith("private:resource/toolbar/")
    )
    assert state.get(f"{OOR}name") == f"private:resource/toolbar/addon_{node.get(f'{OOR}name')}"
    props = {p.get(f"{OOR}name"): p.find("value") for p in state.iter("prop")}
    assert props["UIName"].text == "xlmnist" and props["UIName"].get(LANG) == "en-US"
    assert props["Docked"].text == "true" and props["DockingArea"].text == "0"  # at the top
