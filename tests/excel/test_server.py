"""The optional xlwings Server route, through FastAPI's TestClient and xlwings' real remote engine."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

from fastapi.testclient import TestClient  # noqa: E402
from testenv import COURSE_TITANIC as COURSE  # noqa: E402
from testenv import HAVE_COURSE  # noqa: E402
from xlbook import make_payload  # noqa: E402

from xlmnist import oracle  # noqa: E402
from xlmnist.compile import compile_workbook  # noqa: E402
from xlmnist.excel import server  # noqa: E402
from xlmnist.train.optim import train  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory, request):
    """The course workbook on the server; without ../shared the tests' course-style one."""
    folder = tmp_path_factory.mktemp("books")
    path = folder / "titanic.xlsx"
    shutil.copyfile(COURSE if HAVE_COURSE else request.getfixturevalue("coursebook"), path)
    path.chmod(0o644)
    values = oracle.recalc(path)
    old = os.environ.get("XLMNIST_SERVER_BOOKS")
    os.environ["XLMNIST_SERVER_BOOKS"] = str(folder)
    yield TestClient(server.create_app()), path, values
    if old is None:
        del os.environ["XLMNIST_SERVER_BOOKS"]
    else:
        os.environ["XLMNIST_SERVER_BOOKS"] = old


def _set_values(response: dict) -> list[dict]:
    return [a for a in response["actions"] if a["func"] == "setValues"]


@pytest.mark.libreoffice
def test_train_returns_the_trained_parameters_as_actions(served):
    client, path, values = served
    before = path.read_bytes()
    live = {"linear!R4:AA4": np.zeros((1, 10))}  # the user typed zeros into the weights, unsaved
    payload = make_payload(values, r"C:\Users\someone\Downloads\titanic.xlsx", "linear", live)
    r = client.post("/xlmnist/train", json=payload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["result"]["ok"] is True
    writes = _set_values(body)
    assert len(writes) == 1  # one range call for the one parameter block
    got = np.array(writes[0]["values"], dtype=float)
    # the same training, directly: from the live zeros, same defaults
    model = compile_workbook(path, sheet="linear")
    want = train(model, params=[torch.zeros(1, 10, dtype=torch.float64)], progress=False)
    np.testing.assert_allclose(got, want.params[0].numpy(), rtol=1e-10, atol=1e-12)
    assert body["result"]["objective"] == pytest.approx(0.1442271493073191, rel=1e-9)
    assert path.read_bytes() == before  # the server's file is not modified: results go back to Excel


@pytest.mark.libreoffice
def test_unknown_action_is_404(served):
    client, _, values = served
    r = client.post("/xlmnist/solve", json=make_payload(values, "titanic.xlsx", "linear"))
    assert r.status_code == 404 and "unknown action" in r.json()["detail"]


@pytest.mark.libreoffice
def test_malformed_payload_is_400(served):
    client, _, _ = served
    r = client.post("/xlmnist/train", json={"hello": 1})
    assert r.status_code == 400


@pytest.mark.libreoffice
def test_workbook_not_on_the_server_is_an_alert_and_no_writes(served):
    client, _, values = served
    r = client.post("/xlmnist/train", json=make_payload(values, "../../etc/other.xlsx", "linear"))
    body = r.json()
    assert body["result"]["ok"] is False and "no such workbook on the server" in body["result"]["error"]
    assert _set_values(body) == []
    assert any(a["func"] == "alert" for a in body["actions"])


@pytest.mark.libreoffice
def test_sheet_without_objective_is_an_alert_and_no_writes(served):
    client, _, values = served
    r = client.post(
        "/xlmnist/train", params={"sheet": "all_rows"}, json=make_payload(values, "titanic.xlsx", "linear")
    )
    body = r.json()
    assert body["result"]["ok"] is False and "all_rows" in body["result"]["error"]
    assert _set_values(body) == []


def test_health_and_default_bind_address():
    client = TestClient(server.create_app())
    assert client.get("/xlmnist/health").json()["ok"] is True
    from xlmnist.cli import make_parser

    args = make_parser("serve").parse_args(["serve"])
    assert args.host == "127.0.0.1"


@pytest.mark.libreoffice
def test_export_writes_a_pytorch_module_beside_the_server_copy(served):
    client, path, values = served
    r = client.post(
        "/xlmnist/export", params={"sheet": "nnet"}, json=make_payload(values, "titanic.xlsx", "nnet")
    )
    body = r.json()
    assert body["result"]["ok"] is True, body
    assert str(path.parent) not in r.text  # the server's folder is never named
    module = path.parent / body["result"]["path"]
    assert module.is_file() and module.suffix == ".py"
    text = module.read_text()
    assert "nn.Module" in text and "nnet!" in text


@pytest.mark.libreoffice
def test_bad_sheet_and_active_sheet_index_are_400(served):
    client, _, values = served
    payload = make_payload(values, "titanic.xlsx", "linear")
    r = client.post("/xlmnist/train", params={"sheet": "../../x"}, json=payload)
    assert r.status_code == 400 and "../../x" in r.json()["detail"]
    for index in (len(payload["sheets"]), -1, "0", None):
        bad = {**payload, "book": {**payload["book"], "active_sheet_index": index}}
        r = client.post("/xlmnist/step", json=bad)
        assert r.status_code == 400 and "active_sheet_index" in r.json()["detail"], (index, r.text)


@pytest.mark.libreoffice
def test_errors_never_name_the_server_folder(served, monkeypatch):
    client, path, values = served
    monkeypatch.setenv("XLMNIST_SERVER_BOOKS", str(path.parent / "missing"))
    r = client.post("/xlmnist/train", json=make_payload(values, "titanic.xlsx", "linear"))
    body = r.json()
    assert r.status_code == 200 and body["result"]["ok"] is False
    assert str(path.parent) not in r.text and "no such workbook on the server" in body["result"]["error"]


@pytest.mark.libreoffice
def test_body_size_limit(served, monkeypatch):
    _, path, values = served
    monkeypatch.setenv("XLMNIST_SERVER_MAX_BYTES", "1000")
    client = TestClient(server.create_app())
    r = client.post("/xlmnist/train", json=make_payload(values, "titanic.xlsx", "linear"))
    assert r.status_code == 413
    r = client.post("/xlmnist/train", content=b'{"a": 1}', headers={"content-type": "application/json"})
    assert r.status_code == 400  # small enough: read, then refused as not a book payload
    assert client.get("/xlmnist/health").status_code == 200


@pytest.mark.libreoffice
def test_token_authentication(served, monkeypatch):
    _, path, values = served
    payload = make_payload(values, "titanic.xlsx", "linear")
    monkeypatch.setenv("XLMNIST_SERVER_TOKEN", "s3cret")
    for client in (TestClient(server.create_app()), TestClient(server.create_app(token="s3cret"))):
        assert client.post("/xlmnist/step", json=payload).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert client.post("/xlmnist/step", json=payload, headers=wrong).status_code == 401
        ok = client.post("/xlmnist/step", json=payload, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["result"]["ok"] is True, ok.text
    from xlmnist.cli import make_parser

    assert make_parser("serve").parse_args(["serve", "--token", "t"]).token == "t"
