"""The optional xlwings Server route, through FastAPI's TestClient and xlwings' real remote engine."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

from conftest import COURSE_TITANIC as COURSE  # noqa: E402
from conftest import HAVE_COURSE  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
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
    module = Path(body["result"]["path"])
    assert module.parent == path.parent and module.suffix == ".py"
    text = module.read_text()
    assert "nn.Module" in text and "nnet!" in text
