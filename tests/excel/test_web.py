"""The server route as Excel on the web uses it (TestClient): CORS for Office Scripts, the alert dialog,
a manifest and task pane, and a payload holding only the model sheet (the data stay on the server)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import xlwings as xw  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from test_session import file_values  # noqa: E402
from xlbook import make_payload  # noqa: E402

from xlmnist.excel import server  # noqa: E402
from xlmnist.lessons import build_all  # noqa: E402

ORIGIN = "https://contoso.officescripts.microsoftusercontent.com"


@pytest.fixture(scope="module")
def web(tiny_mnist, tmp_path_factory):
    folder = tmp_path_factory.mktemp("books")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XLMNIST_DATA", str(tiny_mnist))
        mp.setenv("XLMNIST_SERVER_BOOKS", str(folder))
        (path,) = build_all(folder, rows=40, only=["mnist_3v7.xlsx"])
        yield TestClient(server.create_app()), path


def model_sheet_only(path, sheet: str) -> dict:
    """What xlwings' client sends with ``include: sheet``: the other sheets' values are ``[[]]``."""
    payload = make_payload(file_values(path), "mnist_3v7.xlsx", sheet)
    for s in payload["sheets"]:
        if s["name"] != sheet:
            s["values"] = [[]]
    return payload


def test_train_with_only_the_model_sheet_sent(web, tiny_mnist, monkeypatch):
    monkeypatch.setenv("XLMNIST_DATA", str(tiny_mnist))
    client, path = web
    monkeypatch.setenv("XLMNIST_SERVER_BOOKS", str(path.parent))
    full = make_payload(file_values(path), "mnist_3v7.xlsx", "linear")
    payload = model_sheet_only(path, "linear")
    sizes = [len(str(p).encode()) for p in (full, payload)]
    assert sizes[1] < sizes[0] / 5  # the data sheet is not in the request
    before = path.read_bytes()
    r = client.post(
        "/xlmnist/train", params={"sheet": "linear"}, json={**payload}, headers={"Origin": ORIGIN}
    )
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN
    body = r.json()
    assert body["result"]["ok"] is True, body["result"]
    assert body["result"]["dataset"] == "mnist_3v7" and body["result"]["valid_rows"]
    funcs = [a["func"] for a in body["actions"]]
    assert funcs.count("setValues") == 4 and funcs[-1] == "calculate"
    assert path.read_bytes() == before


def test_cors_preflight_from_office_scripts_and_not_from_elsewhere(web):
    client, _ = web
    ask = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    ok = client.options("/xlmnist/train", headers={"Origin": ORIGIN, **ask})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    bad = client.options("/xlmnist/train", headers={"Origin": "https://evil.example", **ask})
    assert "access-control-allow-origin" not in bad.headers


def test_alert_route_escapes_and_offers_the_buttons(web):
    client, _ = web
    r = client.get(
        "/xlwings/alert",
        params={"prompt": "<b>x</b>\nline 2", "title": "xlmnist", "buttons": "ok_cancel", "callback": '"x'},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "&lt;b&gt;x&lt;/b&gt;<br>line 2" in r.text and "<b>x</b>" not in r.text
    assert 'id="ok"' in r.text and 'id="cancel"' in r.text and 'id="yes"' not in r.text
    assert 'data-callback="&quot;x"' in r.text and "messageParent" in r.text


def test_manifest_and_task_pane(web):
    client, _ = web
    m = client.get("/xlmnist/manifest.xml")
    assert m.status_code == 200 and "xml" in m.headers["content-type"]
    assert '<SourceLocation DefaultValue="http://testserver/xlmnist/taskpane.html"/>' in m.text
    from xml.etree import ElementTree as ET

    ET.fromstring(m.text)
    t = client.get("/xlmnist/taskpane.html").text
    assert f"xlwings@{xw.__version__}/xlwingsjs/dist/xlwings.min.js" in t
    assert "include: sheet" in t and all(f"run('{a}')" in t for a in ("train", "step", "cancel", "reset"))
    png = client.get("/xlmnist/icon.png")
    assert png.content.startswith(b"\x89PNG") and png.headers["content-type"] == "image/png"
