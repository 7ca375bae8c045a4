"""The pages Excel on the web needs from the xlwings Server route (:mod:`xlmnist.excel.server`): an Office
add-in manifest, its task pane (Train, Step, Cancel, Reset, Export on the active sheet, sending only that
sheet: the data stay on the server) and the ``/xlwings/alert`` dialog xlwings' Office.js client opens for
``book.app.alert``. Plain strings; every value put into them is escaped."""

from __future__ import annotations

import struct
import uuid
import zlib
from html import escape

ACTIONS_SHOWN = ("train", "step", "cancel", "reset", "export")


def xlwings_js(version: str) -> str:
    """xlwings' Office.js client (``runPython``) for the xlwings version on the server."""
    return f"https://cdn.jsdelivr.net/gh/xlwings/xlwings@{escape(version)}/xlwingsjs/dist/xlwings.min.js"


def taskpane_html(xlwings_version: str) -> str:
    buttons = "\n".join(
        f'  <button id="{a}" type="button" onclick="run(\'{a}\')">{a.capitalize()}</button>'
        for a in ACTIONS_SHOWN
    )
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>xlmnist</title>
  <script src="https://appsforoffice.microsoft.com/lib/1/hosted/office.js"></script>
  <script src="{xlwings_js(xlwings_version)}"></script>
</head>
<body>
  <h3>xlmnist</h3>
  <p>Trains the trainable cells of the active sheet on this server. Only the active sheet is sent;
  the formulas and the data come from the server's copy of this workbook.</p>
{buttons}
  <p><label>Token <input id="token" type="password" autocomplete="off"></label></p>
  <p id="status"></p>
  <script>
    Office.onReady(function () {{
      document.getElementById("token").value = localStorage.getItem("xlmnist-token") || "";
    }});
    async function run(action) {{
      const token = document.getElementById("token").value;
      localStorage.setItem("xlmnist-token", token);
      let sheet = "";
      await Excel.run(async (context) => {{
        const ws = context.workbook.worksheets.getActiveWorksheet();
        ws.load("name");
        await context.sync();
        sheet = ws.name;
      }});
      document.getElementById("status").textContent = action + " " + sheet + "...";
      await xlwings.runPython(
        window.location.origin + "/xlmnist/" + action + "?sheet=" + encodeURIComponent(sheet),
        {{ include: sheet, auth: token ? "Bearer " + token : "" }}
      );
      document.getElementById("status").textContent = action + " " + sheet + ": done";
    }}
  </script>
</body>
</html>
"""


def alert_html(prompt: str, title: str, buttons: str, callback: str) -> str:
    """What xlwings' ``/xlwings/alert`` route shows: the message and its buttons; a click is sent back to
    the task pane (``Office.context.ui.messageParent``)."""
    names = [b for b in ("ok", "yes", "no", "cancel") if b in (buttons or "ok").lower()] or ["ok"]
    body = "".join(
        f'<button id="{b}" type="button" onclick="reply(this.id)">{b.capitalize()}</button>' for b in names
    )
    text = escape(prompt or "").replace("\n", "<br>")
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{escape(title or "xlmnist")}</title>
  <script src="https://appsforoffice.microsoft.com/lib/1/hosted/office.js"></script>
</head>
<body>
  <div id="callback" data-callback="{escape(callback or "", quote=True)}"></div>
  <h2>{escape(title or "xlmnist")}</h2>
  <p>{text}</p>
  {body}
  <script>
    Office.onReady(function () {{}});
    function reply(id) {{
      Office.context.ui.messageParent(id + "|" + document.getElementById("callback").getAttribute("data-callback"));
    }}
  </script>
</body>
</html>
"""


def manifest_xml(base_url: str) -> str:
    """An Office add-in manifest (task pane) served from ``base_url`` (https in production; sideload it)."""
    base = base_url.rstrip("/")
    app_id = uuid.uuid5(uuid.NAMESPACE_URL, base)  # stable per server address
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<OfficeApp xmlns="http://schemas.microsoft.com/office/appforoffice/1.1"
           xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="TaskPaneApp">
  <Id>{app_id}</Id>
  <Version>1.0.0.0</Version>
  <ProviderName>xlmnist</ProviderName>
  <DefaultLocale>en-US</DefaultLocale>
  <DisplayName DefaultValue="xlmnist"/>
  <Description DefaultValue="Excel Solver, but it is PyTorch: train the active sheet on this server"/>
  <IconUrl DefaultValue="{escape(base)}/xlmnist/icon.png"/>
  <HighResolutionIconUrl DefaultValue="{escape(base)}/xlmnist/icon.png"/>
  <AppDomains><AppDomain>{escape(base)}</AppDomain></AppDomains>
  <Hosts><Host Name="Workbook"/></Hosts>
  <DefaultSettings><SourceLocation DefaultValue="{escape(base)}/xlmnist/taskpane.html"/></DefaultSettings>
  <Permissions>ReadWriteDocument</Permissions>
</OfficeApp>
"""


def icon_png(size: int = 32) -> bytes:
    """A plain green square (PNG), the manifest's icon."""
    row = b"\0" + bytes((33, 115, 70)) * size
    raw = zlib.compress(row * size)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
