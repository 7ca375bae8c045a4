"""xlmnist's macros for LibreOffice Calc: the xlmnist toolbar and menu call train, step, export, reset and
cancel on the document they were pressed in (Tools > Macros > Run Macro lists them too).

LibreOffice runs this file in its own Python. ``PATHS`` (written by ``xlmnist addin build --calc``) are
the folders of the Python that built the extension, where xlmnist, torch and numpy are installed; they
go in front of ``sys.path``, so both Pythons must be the same minor version (see addin/README.md).
"""

import json
import sys

PATHS = []  # filled in by `xlmnist addin build --calc`


def _actions():
    for path in reversed(PATHS):
        if path not in sys.path:
            sys.path.insert(0, path)
    from xlmnist.calc import actions

    return actions


def _call(action):
    ctx = XSCRIPTCONTEXT.getComponentContext()  # noqa: F821 - provided by LibreOffice's script provider
    doc = XSCRIPTCONTEXT.getDocument()  # noqa: F821
    try:
        actions = _actions()
    except Exception as exc:  # xlmnist/torch not importable from LibreOffice's Python
        text = (
            f"xlmnist cannot be imported by LibreOffice's Python {sys.version.split()[0]} ({exc}); "
            "run `xlmnist addin build --calc` with a Python of the same version that has xlmnist installed"
        )
        try:
            from com.sun.star.awt.MessageBoxType import ERRORBOX

            toolkit = ctx.ServiceManager.createInstanceWithContext("com.sun.star.awt.Toolkit", ctx)
            box = toolkit.createMessageBox(
                doc.CurrentController.Frame.ContainerWindow, ERRORBOX, 1, "xlmnist", text
            )
            box.execute()
        except Exception:
            pass
        return json.dumps({"ok": False, "action": action, "error": text})
    if action == "cancel":
        return actions.cancel(ctx, doc)
    return actions.run(ctx, doc, action)


def train(*args):
    return _call("train")


def step(*args):
    return _call("step")


def export(*args):
    return _call("export")


def reset(*args):
    return _call("reset")


def cancel(*args):
    return _call("cancel")


g_exportedScripts = (train, step, export, reset, cancel)
