"""A LibreOffice process of our own with a UNO pipe: a fresh profile (forced recalculation on load, like
:mod:`xlmnist.oracle`), headless or with the GUI on an X display, extensions installed into that profile
with ``unopkg`` before it starts, documents opened and macros invoked through UNO.

Runs under the Python that ``uno`` serves (Debian: ``/usr/bin/python3``); ``uno`` is imported when the
office starts. :class:`Office` is a context manager: leaving it closes the documents and kills the whole
process group (oosplash and soffice.bin), so no process outlives its test.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from xlmnist.errors import XlmnistError
from xlmnist.oracle import _PROFILE_XCU, soffice_binary

UNO_DIST = "/usr/lib/python3/dist-packages"  # where Debian's python3-uno puts uno.py


def import_uno():
    """``import uno`` (appending Debian's dist-packages when this Python does not have it)."""
    try:
        import uno  # deferred: only a Python with LibreOffice's bindings has it
    except ImportError:
        if UNO_DIST not in sys.path:
            sys.path.append(UNO_DIST)
        import uno  # noqa: F811
    return uno


def unopkg_binary() -> str:
    soffice = soffice_binary()
    if soffice is None:
        raise XlmnistError("LibreOffice (soffice) is not installed: apt-get install -y libreoffice-calc")
    found = shutil.which("unopkg") or str(Path(os.path.realpath(soffice)).with_name("unopkg"))
    if not Path(found).exists():
        raise XlmnistError("unopkg (LibreOffice's extension manager) is not installed")
    return found


def office_env() -> dict:
    """This environment without another Python's traces (pyenv's ``PATH`` entries and variables,
    ``PYTHONPATH``/``PYTHONHOME``): LibreOffice's own Python crashes the office when it finds them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYENV", "PYTHONPATH", "PYTHONHOME"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if "/.pyenv/" not in p)
    return env


def make_profile(folder: Path) -> Path:
    """A fresh user profile in ``folder`` that recalculates every document on load."""
    (folder / "user").mkdir(parents=True, exist_ok=True)
    (folder / "user" / "registrymodifications.xcu").write_text(_PROFILE_XCU)
    return folder


def _chown_tree(folder: Path, uid: int) -> None:
    for top, _, files in os.walk(folder):
        for item in [top, *(os.path.join(top, f) for f in files)]:
            os.chown(item, uid, uid)


def add_extension(oxt: str | os.PathLike, profile: Path | None = None, timeout: float = 180) -> str:
    """``unopkg add`` ``oxt`` (replacing an older copy) into ``profile`` (default: the user's own).

    unopkg refuses user installs as root; for a profile of our own (tests, containers) it then runs as
    the unprivileged user ``nobody`` on a copy of ``oxt`` inside the profile folder, given to that user."""
    oxt = Path(oxt).resolve()
    cmd = [unopkg_binary(), "add", "--force", "--suppress-license"]
    env = office_env()
    if profile is not None:
        profile = Path(profile).resolve()
        cmd.append(f"-env:UserInstallation={profile.as_uri()}")
        if os.geteuid() == 0 and shutil.which("setpriv"):
            staged = profile / oxt.name
            shutil.copyfile(oxt, staged)
            oxt = staged
            _chown_tree(profile, 65534)
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
            env["HOME"] = str(profile)
    cmd.append(str(oxt))
    proc = subprocess.run(  # from the profile: unopkg cds to the current folder, maybe private to root
        cmd, capture_output=True, text=True, timeout=timeout, start_new_session=True, env=env,
        cwd=None if profile is None else profile,
    )  # fmt: skip
    if profile is not None and os.geteuid() == 0:
        _chown_tree(profile, 0)  # root's again: soffice (root) fails to open its X display otherwise
    if proc.returncode != 0:
        msg = [x for x in (proc.stderr or proc.stdout).strip().splitlines() if "javaldx" not in x]
        raise XlmnistError(f"unopkg add {oxt.name} failed: {msg[-1] if msg else proc.returncode}")
    return (proc.stdout or "").strip()


def _pv(name: str, value):
    from com.sun.star.beans import PropertyValue  # deferred: needs uno

    p = PropertyValue()
    p.Name, p.Value = name, value
    return p


class Office:
    """``with Office(profile_dir, headless=True) as office: doc = office.open(path)``."""

    def __init__(self, profile: Path | None = None, headless: bool = True, display: str | None = None):
        self._tmp = None if profile is not None else tempfile.mkdtemp(prefix="xlmnist-calc-")
        self.profile = Path(profile) if profile is not None else make_profile(Path(self._tmp) / "profile")
        self.headless, self.display = headless, display
        self.pipe = f"xlmnist_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.proc = None
        self.ctx = self.desktop = None
        self.docs = []

    def __enter__(self) -> Office:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> None:
        uno = import_uno()
        soffice = soffice_binary()
        if soffice is None:
            raise XlmnistError("LibreOffice (soffice) is not installed")
        args = [soffice, f"-env:UserInstallation={self.profile.resolve().as_uri()}", "--norestore",
                "--nologo", "--nodefault", "--nolockcheck",
                f"--accept=pipe,name={self.pipe};urp;StarOffice.ComponentContext"]  # fmt: skip
        if self.headless:
            args.insert(2, "--headless")
        env = office_env()
        if self.display:
            env["DISPLAY"] = self.display
        self.proc = subprocess.Popen(
            args, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=self._log()
        )
        local = uno.getComponentContext()
        resolver = local.ServiceManager.createInstanceWithContext("com.sun.star.bridge.UnoUrlResolver", local)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ctx = resolver.resolve(f"uno:pipe,name={self.pipe};urp;StarOffice.ComponentContext")
                break
            except Exception as exc:  # noqa: BLE001 - NoConnectException until soffice listens
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise XlmnistError(f"LibreOffice did not open its UNO pipe ({exc})") from None
                time.sleep(0.2)
        smgr = self.ctx.ServiceManager
        self.desktop = smgr.createInstanceWithContext("com.sun.star.frame.Desktop", self.ctx)

    @staticmethod
    def _log():
        """soffice's stderr: the file ``XLMNIST_SOFFICE_LOG`` names (for debugging), else nowhere."""
        path = os.environ.get("XLMNIST_SOFFICE_LOG")
        return open(path, "a") if path else subprocess.DEVNULL  # noqa: SIM115 - owned by the child

    def create(self, service: str):
        return self.ctx.ServiceManager.createInstanceWithContext(service, self.ctx)

    def open(self, path: str | os.PathLike, hidden: bool | None = None):
        """Open ``path`` (no lock file, so the file on disk is never touched) and return the document."""
        uno = import_uno()
        hidden = self.headless if hidden is None else hidden
        url = uno.systemPathToFileUrl(str(Path(path).resolve()))
        doc = self.desktop.loadComponentFromURL(url, "_blank", 0, (_pv("Hidden", hidden),))
        if doc is None:
            raise XlmnistError(f"{path}: LibreOffice could not open the workbook")
        self.docs.append(doc)
        return doc

    def script(self, uri: str, *args):
        """Invoke a macro by its ``vnd.sun.star.script:`` URI; its return value."""
        factory = self.create("com.sun.star.script.provider.MasterScriptProviderFactory")
        result = factory.createScriptProvider("").getScript(uri).invoke(tuple(args), (), ())
        return result[0]

    def dispatch(self, doc, url: str) -> None:
        """Dispatch a command URL (what a toolbar button does) to ``doc``'s frame."""
        helper = self.create("com.sun.star.frame.DispatchHelper")
        helper.executeDispatch(doc.CurrentController.Frame, url, "", 0, ())

    def stop(self) -> None:
        for doc in self.docs:
            try:
                doc.close(True)
            except Exception:  # noqa: BLE001 - already closed, or the office is gone
                pass
        self.docs = []
        if self.desktop is not None:
            try:
                self.desktop.terminate()
            except Exception:  # noqa: BLE001 - the bridge drops when soffice exits
                pass
            self.desktop = None
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # oosplash and soffice.bin alike
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
