"""The extension in LibreOffice's GUI on a virtual screen (Xvfb): the xlmnist toolbar is there, titled
"xlmnist" (not "Add-On 1"), its Train command (the button's URL, dispatched to the document's frame)
trains the edited sheet, and a screenshot of the trained sheet is kept in
``workbooks/preview/calc_trained.png``."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from calclive import ROOT, TRAIN, Driver, uno_python_ok

pytestmark = [pytest.mark.calc_live, pytest.mark.libreoffice, pytest.mark.slow]
WIDTH, HEIGHT = 1280, 800
SHOT = ROOT / "workbooks" / "preview" / "calc_trained.png"
BAR = "private:resource/toolbar/addon_org.xlmnist.calc.toolbar"


@pytest.fixture
def display():
    if not all(shutil.which(p) for p in ("Xvfb", "import", "xwd")):
        pytest.skip(
            "Xvfb, ImageMagick's import and xwd are needed (apt-get install xvfb imagemagick x11-apps)"
        )
    proc, n = None, None
    for k in range(100 + os.getpid() % 500, 1000):  # the first display number Xvfb can take
        if os.path.exists(f"/tmp/.X{k}-lock") or os.path.exists(f"/tmp/.X11-unix/X{k}"):
            continue
        proc = subprocess.Popen(
            ["Xvfb", f":{k}", "-screen", "0", f"{WIDTH}x{HEIGHT}x24", "-nolisten", "tcp", "-noreset"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        for _ in range(50):
            if os.path.exists(f"/tmp/.X11-unix/X{k}") or proc.poll() is not None:
                break
            time.sleep(0.1)
        time.sleep(0.5)  # a display another Xvfb took first: ours exits ("server already active")
        # -noreset: without it the server resets when the probe disconnects, and soffice's connection
        # during the reset fails ("Can't open display")
        probe = ["xwd", "-root", "-display", f":{k}", "-out", os.devnull]
        if proc.poll() is None and subprocess.run(probe, capture_output=True).returncode == 0:
            n = k
            break
        proc.kill()
        proc.wait()
    if n is None:
        pytest.fail("Xvfb did not start on any display")
    try:
        yield f":{n}"
    finally:
        proc.terminate()  # SIGTERM: Xvfb removes its lock file and socket
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_train_button_in_the_gui(display, workdir, oxt, books):
    reason = uno_python_ok()
    if reason:
        pytest.skip(reason)
    if not Path("/usr/lib/libreoffice/program/libvclplug_genlo.so").exists():
        pytest.skip(
            "LibreOffice without its X11 GUI (libreoffice-calc-nogui); apt-get install libreoffice-calc"
        )
    folder = workdir / "gui"
    folder.mkdir()
    path = folder / "titanic.xlsx"
    shutil.copyfile(books / "titanic.xlsx", path)
    before = path.read_bytes()
    driver = Driver()
    try:
        driver.call("start", profile=str(folder / "profile"), oxt=str(oxt), headless=False, display=display)
        driver.call("open", name="gui", path=str(path), sheet="linear", hidden=False)
        driver.call("window", doc="gui", width=WIDTH, height=HEIGHT)
        toolbars = driver.call("toolbars", doc="gui")
        assert BAR in toolbars
        assert driver.call("toolbar_title", doc="gui", url=BAR) == {"state": "xlmnist", "window": "xlmnist"}
        driver.call("set", doc="gui", sheet="linear", ref="R4", values=[[0.9]])
        edited = driver.call("get", doc="gui", sheet="linear", ref="AA7")[0][0]
        driver.call("dispatch", doc="gui", url=TRAIN.format("train"))  # what the Train button does
        trained = driver.call("get", doc="gui", sheet="linear", ref="AA7")[0][0]
        assert trained < edited * 0.5
        driver.call("select", doc="gui", sheet="linear", ref="AA7")
        time.sleep(1.5)  # let the window repaint
        SHOT.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["import", "-display", display, "-window", "root", str(SHOT)], check=True, timeout=60)
        info = subprocess.run(["identify", "-format", "%w %h %k", str(SHOT)], capture_output=True, text=True)
        w, h, colours = (int(x) for x in info.stdout.split())
        assert (w, h) == (WIDTH, HEIGHT) and colours > 50  # a drawn window, not a blank screen
        assert driver.call("modified", doc="gui") is True
    finally:
        driver.close()
    assert path.read_bytes() == before  # nothing saved
