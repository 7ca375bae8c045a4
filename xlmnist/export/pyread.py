"""Read an exported ``model.py`` WITHOUT running it: its layers, weights and the cells they came from,
from the source's syntax tree.

xlmnist never executes a Python file it is given (issue #13). The exporter's own layer form has
``self.net = nn.Sequential(nn.Linear(i, o, ...), nn.ReLU(), ...)``; both forms have either a
``PARAMS = {...}`` literal (read with :func:`ast.literal_eval`) or a ``.pt`` file beside it named in
``_params()`` (read with ``torch.load(weights_only=True)``), ``OBJECTIVE = '...'`` and where each weight
lives in the workbook: ``PARAMS_AT = [(sheet, r1, c1, r2, c2), ...]`` (general form: ``p{k}`` is the k-th
range) or ``WEIGHTS = {key: (kind, [(sheet, r1, c1, r2, c2, transposed, index), ...])}`` (layer form).
Anything else is refused with one line saying to save a state dict.
"""

from __future__ import annotations

import ast
from pathlib import Path

import torch
from torch import nn

from xlmnist.errors import XlmnistError
from xlmnist.xlsx.refs import MAX_COL, MAX_ROW

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


def parse_module(path):
    """(name, syntax tree) of the Python file at ``path``: parsed, never executed."""
    path = Path(path)
    name = path.name
    try:
        return name, ast.parse(path.read_text(encoding="utf-8"), filename=name)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as exc:
        raise _refuse(name, f"cannot parse it ({type(exc).__name__})") from None


def constant(tree, var: str):
    """The literal value of the module-level ``var = <literal>``, or None when there is none."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [var]:
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                return None
    return None


def _area(name: str, what: str, a) -> tuple:
    """A (sheet, r1, c1, r2, c2) tuple from a module, checked (a sheet name and a rectangle on the sheet)."""
    ok = (
        isinstance(a, (tuple, list))
        and len(a) >= 5
        and isinstance(a[0], str)
        and all(type(x) is int for x in a[1:5])
        and 1 <= a[1] <= a[3] <= MAX_ROW
        and 1 <= a[2] <= a[4] <= MAX_COL
    )
    if not ok:
        raise XlmnistError(f"{name}: {what} holds {str(a)[:60]!r}, not (sheet, row1, col1, row2, col2)")
    return tuple(a)


def module_form(tree) -> str | None:
    """'general' (PARAMS_AT), 'layer' (WEIGHTS) or None: which form of xlmnist export wrote the module."""
    names = {
        t.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    return "general" if "PARAMS_AT" in names else ("layer" if "WEIGHTS" in names else None)


def read_origin(path):
    """What an exported module records of its workbook, read without running it: ``(form, objective,
    where, tree)``; ``where`` is the general form's PARAMS_AT list of areas, or the layer form's WEIGHTS."""
    name, tree = parse_module(path)
    form = module_form(tree)
    objective = constant(tree, "OBJECTIVE")
    if form is None or not isinstance(objective, str):
        raise XlmnistError(
            f"{name}: not a module written by xlmnist export (no PARAMS_AT or WEIGHTS, or no OBJECTIVE literal)"
        )
    if form == "general":
        where = constant(tree, "PARAMS_AT")
        if not isinstance(where, list):
            raise XlmnistError(f"{name}: PARAMS_AT is not a literal list of areas")
        return form, objective, [_area(name, "PARAMS_AT", a) for a in where], tree
    where = constant(tree, "WEIGHTS")
    if not isinstance(where, dict):
        raise XlmnistError(f"{name}: WEIGHTS is not a literal dict")
    for key, spec in where.items():
        if not (isinstance(key, str) and isinstance(spec, tuple) and len(spec) == 2 and spec[0] in "rwb"):
            raise XlmnistError(f"{name}: WEIGHTS[{key!r}] is not (kind, parts)")
        for part in spec[1]:
            _area(name, f"WEIGHTS[{key!r}]", part)
            if len(part) != 7:
                raise XlmnistError(f"{name}: WEIGHTS[{key!r}] holds a part that is not 7 items")
    return form, objective, where, tree


def module_weights(path, tree) -> dict:
    """The weights baked into the exported module at ``path`` (its PARAMS literal or its .pt file)."""
    path = Path(path)
    return _weights(path.name, path, tree)


def read_exported(path) -> nn.Sequential:
    """The exported layer-form module at ``path`` as an ``nn.Sequential`` with its weights (never executed)."""
    path = Path(path)
    name, tree = parse_module(path)
    if module_form(tree) == "general":
        raise XlmnistError(
            f"{name}: a general-form module (a forward over the sheet's cells, not a chain of layers): its "
            f"weights go back into the workbook it was exported from: xlmnist import {name} BOOK"
        )
    seq = _sequential(name, tree)
    state = {k.removeprefix("net."): v for k, v in _weights(name, path, tree).items()}
    try:
        seq.load_state_dict({k: v.to(torch.float64) for k, v in state.items()})
    except RuntimeError as exc:
        raise _refuse(name, f"its weights do not fit its layers ({str(exc).splitlines()[0]})") from None
    return seq
