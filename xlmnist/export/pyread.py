"""Read an exported ``model.py`` WITHOUT running it: its layer list and weights, from the source's syntax tree.

xlmnist never executes a Python file it is given (issue #13). The exporter's own layer form has
``self.net = nn.Sequential(nn.Linear(i, o, ...), nn.ReLU(), ...)`` and either a ``PARAMS = {...}`` literal
(read with :func:`ast.literal_eval`) or a ``.pt`` file beside it named in ``_params()`` (read with
``torch.load(weights_only=True)``). Anything else is refused with one line saying to save a state dict.
"""

from __future__ import annotations

import ast
from pathlib import Path

import torch
from torch import nn

from xlmnist.errors import XlmnistError

LAYERS = {"Linear", "ReLU", "Sigmoid", "Softmax"}
ADVICE = 'save the weights with torch.save(model.state_dict(), "model.pt") and give the layers with --arch'


def _refuse(name: str, why: str) -> XlmnistError:
    return XlmnistError(f"{name}: {why}; xlmnist does not run Python files: {ADVICE}")


def _layer(name: str, call) -> nn.Module:
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
        raise _refuse(name, "nn.Sequential(...) holds something that is not an nn layer")
    kind = call.func.attr
    if kind not in LAYERS:
        raise XlmnistError(f"{name}: unsupported layer {kind} (supported: {', '.join(sorted(LAYERS))})")
    try:
        args = [ast.literal_eval(a) for a in call.args]
        kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg != "dtype"}
    except ValueError:
        raise _refuse(name, f"nn.{kind}(...) has arguments that are not literals") from None
    try:
        if kind == "Linear":
            return nn.Linear(*args, **kw, dtype=torch.float64)
        return nn.Softmax(**kw) if kind == "Softmax" else getattr(nn, kind)()
    except TypeError as exc:
        raise _refuse(name, f"nn.{kind}: {exc}") from None


def _sequential(name: str, tree) -> nn.Sequential:
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "Sequential"
    ]
    if len(calls) != 1:
        raise _refuse(name, "not a layer-form module exported by xlmnist (no single nn.Sequential(...))")
    return nn.Sequential(*[_layer(name, a) for a in calls[0].args])


def _weights(name: str, path: Path, tree) -> dict:
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["PARAMS"]:
            try:
                raw = ast.literal_eval(node.value)
            except ValueError:
                raise _refuse(name, "PARAMS is not a literal") from None
            return {k: torch.tensor(v, dtype=torch.float64) for k, v in raw.items()}
    for node in ast.walk(tree):  # _params() -> torch.load(Path(__file__).with_name('model.pt'), ...)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "with_name" and node.args:
            try:
                pt = path.with_name(Path(ast.literal_eval(node.args[0])).name)
            except ValueError:
                continue
            if not pt.is_file():
                raise XlmnistError(f"{name}: its weights file {pt.name} is missing")
            return torch.load(pt, map_location="cpu", weights_only=True)
    raise _refuse(name, "no PARAMS literal and no weights file")


def read_exported(path) -> nn.Sequential:
    """The exported layer-form module at ``path`` as an ``nn.Sequential`` with its weights (never executed)."""
    path = Path(path)
    name = path.name
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=name)
    except (SyntaxError, UnicodeDecodeError, ValueError) as exc:
        raise _refuse(name, f"cannot parse it ({type(exc).__name__})") from None
    seq = _sequential(name, tree)
    state = {k.removeprefix("net."): v for k, v in _weights(name, path, tree).items()}
    try:
        seq.load_state_dict({k: v.to(torch.float64) for k, v in state.items()})
    except RuntimeError as exc:
        raise _refuse(name, f"its weights do not fit its layers ({str(exc).splitlines()[0]})") from None
    return seq
