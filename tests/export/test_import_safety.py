"""``xlmnist import`` never unpickles code: a file whose objects would run code while loading is refused
with one line saying how to save a state dict, and the code does not run."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from test_general_form import lookup_book
from torch import nn

from xlmnist.cli import main
from xlmnist.errors import XlmnistError
from xlmnist.export.codegen import export_module
from xlmnist.export.importer import load_model
from xlmnist.export.restore import import_into


class Evil:
    """Unpickling this calls open(marker, "w"): a marker file proves code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class EvilSequential(nn.Sequential):
    def __init__(self, marker: Path):
        super().__init__(nn.Linear(3, 1, dtype=torch.float64))
        self.marker = marker

    def __reduce_ex__(self, protocol):
        return (open, (str(self.marker), "w"))


def save_torch(obj, path):
    torch.save(obj, path)


def save_pickle(obj, path):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


@pytest.mark.parametrize(
    "make, save",
    [
        (Evil, save_torch),  # torch.save of a malicious object
        (Evil, save_pickle),  # a plain pickle file
        (EvilSequential, save_torch),  # a pickled nn.Sequential subclass
        (lambda marker: {"0.weight": Evil(marker)}, save_torch),  # hidden inside a state dict
    ],
    ids=["torch-save", "plain-pickle", "sequential-subclass", "inside-state-dict"],
)
def test_malicious_pickles_are_refused_and_nothing_runs(tmp_path, make, save):
    marker = tmp_path / "MARKER"
    path = tmp_path / "model.pt"
    save(make(marker), path)
    assert not marker.exists()
    with pytest.raises(XlmnistError) as exc:
        load_model(path, arch="3-1")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("model.pt: ")
    assert "torch.save(model.state_dict(), path)" in msg and "--arch" in msg
    assert not marker.exists()
    # the same file through plain pickle does run the code: the test above could fail
    with open(path, "rb") as fh:
        try:
            pickle.load(fh)
        except Exception:  # noqa: BLE001 - torch's zip format is not a plain pickle
            pass
    if save is save_pickle:
        assert marker.exists()


def test_whole_module_is_refused_state_dict_loads(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1), nn.Sigmoid()).double()
    whole = tmp_path / "whole.pt"
    torch.save(model, whole)
    with pytest.raises(XlmnistError, match=r"whole\.pt: .*state_dict"):
        load_model(whole)
    state = tmp_path / "state.pt"
    torch.save(model.state_dict(), state)
    layers = load_model(state, arch="3-2-relu-1-sigmoid")
    assert [type(m).__name__ for m in layers] == ["Linear", "ReLU", "Linear", "Sigmoid"]
    torch.testing.assert_close(layers[0].weight, model[0].weight)


def test_model_py_is_read_not_run(tmp_path):
    """An exported model.py with a side effect at import: its layers and weights load, the code never runs."""
    from xlmnist.export.codegen import generate
    from xlmnist.export.importer import build_workbook

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    X = torch.rand(6, 3, dtype=torch.float64).numpy()
    book = tmp_path / "b.xlsx"
    build_workbook(list(net), X, X[:, 0] * 2.0, ["a", "b", "c"], book)
    module = tmp_path / "model.py"
    generate(book, "model", module)
    marker = tmp_path / "MARKER"
    src = module.read_text()
    module.write_text(f"open({str(marker)!r}, 'w').close()\n" + src)
    layers = load_model(module)
    assert not marker.exists()
    assert [type(m).__name__ for m in layers] == ["Linear", "ReLU", "Linear"]
    x = torch.from_numpy(X)
    torch.testing.assert_close(nn.Sequential(*layers)(x), net(x), rtol=1e-12, atol=1e-12)
    hostile = tmp_path / "hostile.py"
    hostile.write_text(f"import os\nos.system('touch {marker}')\nclass Model: pass\n")
    with pytest.raises(XlmnistError) as exc:
        load_model(hostile)
    msg = str(exc.value)
    assert "\n" not in msg and "state_dict()" in msg and "--arch" in msg and not marker.exists()


def test_general_form_module_is_read_not_run(tmp_path):
    """``xlmnist import model.py BOOK`` of a general-form module: PARAMS_AT, OBJECTIVE and the weights come
    from its syntax tree; a side effect at import never runs. Wrong tensors are one-line errors."""
    book, module = tmp_path / "emb.xlsx", tmp_path / "model.py"
    lookup_book(book)
    assert export_module(book, out_path=module)[1] == "general"
    marker = tmp_path / "MARKER"
    module.write_text(f"open({str(marker)!r}, 'w').close()\n" + module.read_text())
    got = import_into(module, book, out=tmp_path / "back.xlsx")
    assert got["form"] == "general" and got["params"] == ["emb!B2:E7", "emb!G2:J7"] and not marker.exists()
    with pytest.raises(
        XlmnistError, match=r"model\.py: a general-form module .* xlmnist import model\.py BOOK"
    ):
        load_model(module)  # a new workbook needs layers
    pt = tmp_path / "trained.pt"
    torch.save({"p0": torch.zeros(6, 4, dtype=torch.float64)}, pt)
    with pytest.raises(XlmnistError, match=r"trained\.pt: a state dict does not say which cells .*--module"):
        import_into(pt, book)
    with pytest.raises(
        XlmnistError, match=r"trained\.pt: the state dict has p0; the module's parameters are p0, p1"
    ):
        import_into(pt, book, module=module)
    torch.save({"p0": torch.zeros(6, 4), "p1": torch.zeros(4, 6)}, pt)
    with pytest.raises(XlmnistError, match=r"trained\.pt: p1 has shape \(4, 6\); its range emb!G2:J7 is 6x4"):
        import_into(pt, book, module=module)
    save_torch(Evil(marker), pt)
    with pytest.raises(XlmnistError, match=r"trained\.pt: holds pickled Python objects"):
        import_into(pt, book, module=module)
    hostile = tmp_path / "hostile.py"
    hostile.write_text("PARAMS_AT = __import__('os').listdir('.')\nOBJECTIVE = 'emb!L25'\n")
    with pytest.raises(XlmnistError, match=r"hostile\.py: PARAMS_AT is not a literal list"):
        import_into(hostile, book)
    assert not marker.exists()


def test_import_command_says_which_workbook(tmp_path, capsys):
    """``xlmnist import``: BOOK (write back) or -o NEW.xlsx (a new workbook), each with its own flags; a
    general-form module cannot become a new workbook. Each mistake is one line, exit status 2."""
    book, module = tmp_path / "emb.xlsx", tmp_path / "model.py"
    lookup_book(book)
    export_module(book, out_path=module)
    cases = [
        ([module], "give the workbook: BOOK"),
        ([module, "-o", tmp_path / "new.xlsx"], "a general-form module has no layers"),
        ([module, book, "--arch", "3-1"], "--arch builds a new workbook"),
    ]
    for args, text in cases:
        assert main(["import", *map(str, args)]) == 2
        err = capsys.readouterr().err.strip()
        assert text in err and "\n" not in err, err
