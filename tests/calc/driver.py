"""The tests' hands on LibreOffice: a JSON-lines server run under the Python that ``uno`` serves
(Debian's ``/usr/bin/python3``; pyenv's Python cannot invoke scripts over the bridge).

Each request is one line ``{"op": ..., ...}``, each answer one line ``{"ok": true, "value": ...}`` or
``{"ok": false, "error": "..."}``. ``start`` installs the extension into a fresh profile (``unopkg add``)
and starts the office (headless, or with the GUI on ``display``); ``stop`` (also at EOF) kills it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from xlmnist.calc.office import Office, add_extension, make_profile  # noqa: E402

office = None
docs = {}
running = {}  # script_start's threads, then their answers


def _script(doc, uri):
    provider = doc.getScriptProvider() if doc is not None else None
    if provider is None:
        return office.script(uri)
    return provider.getScript(uri).invoke((), (), ())[0]


def _range(doc, sheet, ref):
    return doc.Sheets.getByName(sheet).getCellRangeByName(ref)


def handle(req: dict):
    global office
    op = req["op"]
    if op == "start":
        profile = make_profile(Path(req["profile"]))
        if req.get("oxt"):
            add_extension(req["oxt"], profile)
        office = Office(profile, headless=req.get("headless", True), display=req.get("display"))
        office.start()
        return True
    if op == "open":
        doc = office.open(req["path"], hidden=req.get("hidden"))
        docs[req["name"]] = doc
        if req.get("sheet"):
            doc.CurrentController.setActiveSheet(doc.Sheets.getByName(req["sheet"]))
        return True
    doc = docs.get(req.get("doc"))
    if op == "activate":
        doc.CurrentController.setActiveSheet(doc.Sheets.getByName(req["sheet"]))
        return True
    if op == "get":
        return [list(r) for r in _range(doc, req["sheet"], req["ref"]).getDataArray()]
    if op == "formulas":
        return [list(r) for r in _range(doc, req["sheet"], req["ref"]).getFormulaArray()]
    if op == "set":
        _range(doc, req["sheet"], req["ref"]).setDataArray(tuple(tuple(r) for r in req["values"]))
        return True
    if op == "script":
        return _script(doc, req["uri"])
    if op == "script_start":  # in a thread of its own: the test presses other buttons meanwhile

        def run(tag=req["tag"], uri=req["uri"]):
            try:
                running[tag] = {"ok": True, "value": _script(doc, uri)}
            except Exception as exc:  # noqa: BLE001 - reported by script_join
                running[tag] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

        running[req["tag"]] = threading.Thread(target=run, daemon=True)
        running[req["tag"]].start()
        return True
    if op == "script_join":
        thread = running[req["tag"]]
        thread.join(req.get("timeout", 600))
        if thread.is_alive():
            raise TimeoutError(f"script {req['tag']} still running")
        answer = running.pop(req["tag"])
        if not answer["ok"]:
            raise RuntimeError(answer["error"])
        return answer["value"]
    if op == "dispatch":
        t0 = time.monotonic()
        office.dispatch(doc, req["url"])
        return time.monotonic() - t0
    if op == "window":  # the document's window at a known place and size (GUI)
        frame = doc.CurrentController.Frame
        frame.ContainerWindow.setPosSize(0, 0, req["width"], req["height"], 15)
        frame.ContainerWindow.setVisible(True)
        return True
    if op == "toolbars":
        return [e.ResourceURL for e in doc.CurrentController.Frame.LayoutManager.getElements()]
    if op == "toolbar_title":  # the title LibreOffice gives a toolbar: its window state, its window
        states = office.create("com.sun.star.ui.WindowStateConfiguration")
        calc = states.getByName("com.sun.star.sheet.SpreadsheetDocument")
        state = {p.Name: p.Value for p in calc.getByName(req["url"])} if calc.hasByName(req["url"]) else {}
        window = None
        if doc is not None:
            element = doc.CurrentController.Frame.LayoutManager.getElement(req["url"])
            if element is not None:
                window = element.getRealInterface().getAccessibleContext().getAccessibleName()
        return {"state": state.get("UIName"), "window": window}
    if op == "select":
        doc.CurrentController.select(_range(doc, req["sheet"], req["ref"]))
        return True
    if op == "pdf":  # the sheet's used area as PDF pages, as LibreOffice prints it
        import uno

        from xlmnist.calc.office import _pv

        sheet = doc.Sheets.getByName(req["sheet"])
        cur = sheet.createCursor()
        cur.gotoEndOfUsedArea(False)
        end = cur.RangeAddress
        area = (
            sheet.getCellRangeByName(req["ref"])
            if req.get("ref")
            else sheet.getCellRangeByPosition(0, 0, end.EndColumn, end.EndRow)
        )
        data = uno.Any("[]com.sun.star.beans.PropertyValue", (_pv("Selection", area),))
        props = (_pv("FilterName", "calc_pdf_Export"), _pv("FilterData", data))
        uno.invoke(doc, "storeToURL", (uno.systemPathToFileUrl(req["path"]), props))
        return True
    if op == "chart_ranges":  # every data sequence and category range of the sheet's charts
        out = []
        charts = doc.Sheets.getByName(req["sheet"]).Charts
        for name in charts.ElementNames:
            chart = charts.getByName(name).EmbeddedObject
            for system in chart.getFirstDiagram().getCoordinateSystems():
                for kind in system.getChartTypes():
                    for series in kind.getDataSeries():
                        out += [s.getValues().SourceRangeRepresentation for s in series.getDataSequences()]
                cats = system.getAxisByDimension(0, 0).getScaleData().Categories
                if cats is not None:
                    out.append(cats.getValues().SourceRangeRepresentation)
        return out
    if op == "modified":
        return bool(doc.isModified())
    if op == "names":
        sh = doc.Sheets.getByName(req["sheet"])
        return {n: sh.NamedRanges.getByName(n).Content for n in sh.NamedRanges.ElementNames}
    if op == "stop":
        if office is not None:
            office.stop()
            office = None
        return True
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    try:
        for line in sys.stdin:
            req = json.loads(line)
            try:
                answer = {"ok": True, "value": handle(req)}
            except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
                answer = {
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}",
                    "trace": traceback.format_exc(),
                }
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
            if req["op"] == "stop":
                break
    finally:
        if office is not None:
            office.stop()


if __name__ == "__main__":
    main()
