"""The tests' side of ``driver.py``: :class:`Driver` (one driver process, one office), and why the live
tests cannot run on this machine (``uno_python_ok``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
UNO_PYTHON = "/usr/bin/python3"
PREVIEW = ROOT / "workbooks" / "preview"
TRAIN = "vnd.sun.star.script:xlmnist.oxt|python|xlmnist_calc.py${}?language=Python&location=user:uno_packages"


def uno_python_ok() -> str | None:
    """Why the live tests cannot run here, or None."""
    if shutil.which("soffice") is None:
        return "LibreOffice (soffice) is not installed"
    if not os.path.exists(UNO_PYTHON):
        return f"{UNO_PYTHON} (the Python of python3-uno) is missing"
    probe = subprocess.run([UNO_PYTHON, "-c", "import uno"], capture_output=True)
    if probe.returncode != 0:
        return "python3-uno is not installed"
    if not os.path.exists("/usr/lib/libreoffice/program/pythonscript.py"):
        return "libreoffice-script-provider-python is not installed (Python macros)"
    return None


class Driver:
    """One ``driver.py`` process; ``call(op, **args)`` returns the answer's value or fails the test."""

    def __init__(self, env=None):
        self.proc = subprocess.Popen(
            [UNO_PYTHON, str(ROOT / "tests" / "calc" / "driver.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True,
        )  # fmt: skip

    def call(self, op: str, **args):
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"driver died during {op}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise AssertionError(f"{op}: {answer['error']}\n{answer.get('trace', '')}")
        return answer["value"]

    def macro(self, doc: str, name: str) -> dict:
        return json.loads(self.call("script", doc=doc, uri=TRAIN.format(name)))

    def close(self) -> None:
        try:
            self.call("stop")
        except (AssertionError, BrokenPipeError, OSError, ValueError):
            pass
        try:
            self.proc.stdin.close()
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()


def render(calc, doc: str, sheet: str, folder, name: str, ref: str | None = None) -> np.ndarray:
    """The first page of ``sheet`` as an RGB array; also kept as ``workbooks/preview/<name>.png``."""
    if shutil.which("pdftoppm") is None or shutil.which("convert") is None:
        pytest.skip("pdftoppm (poppler-utils) and ImageMagick are needed to look at the pictures")
    pdf = folder / f"{name}.pdf"
    calc.call("pdf", doc=doc, sheet=sheet, path=str(pdf), ref=ref)
    subprocess.run(["pdftoppm", "-png", "-r", "96", "-singlefile", str(pdf), str(folder / name)], check=True)
    png = folder / f"{name}.png"
    PREVIEW.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(png, PREVIEW / png.name)
    w, h = (int(x) for x in subprocess.run(["identify", "-format", "%w %h", str(png)], capture_output=True,
                                           text=True, check=True).stdout.split())  # fmt: skip
    raw = subprocess.run(
        ["convert", str(png), "-depth", "8", "rgb:-"], capture_output=True, check=True
    ).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3).astype(int)
