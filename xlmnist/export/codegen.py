"""Render an :class:`xlmnist.export.Exporter` as a Python module; the ``export`` / ``import`` subcommands."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from xlmnist.compile.model import compile_workbook
from xlmnist.errors import XlmnistError
from xlmnist.export.files import atomic_write, save_state
from xlmnist.export.general import General
from xlmnist.export.module import Exporter, Unsupported
from xlmnist.export.template import BOOK_PARAMS, TEMPLATE_TAIL
from xlmnist.export.translate import escape
from xlmnist.formula import parser as P
from xlmnist.formula.graph import RefUse
from xlmnist.xlsx.refs import area_name

EMBED_LIMIT = 4096  # parameters embedded in the source up to this many numbers, else saved as .pt beside it


def _loss_pattern(ex: Exporter, L):
    """Idiomatic code for the per-row loss block L averaged by the objective, or None."""
    node = L.ast

    def both(a, c):
        ta, tc = ex.num(a, L, "loss").code, ex.num(c, L, "loss").code
        if "pred" in ta and "@Y" in tc and "pred" not in tc:
            return ta, tc
        if "pred" in tc and "@Y" in ta and "pred" not in ta:
            return tc, ta
        return None

    if isinstance(node, P.Binary) and node.op == "^" and node.right == P.Number(2.0):
        d = node.left
        if isinstance(d, P.Binary) and d.op == "-" and (pt := both(d.left, d.right)):
            return f"F.mse_loss({pt[0]}, {pt[1]})", None
    if isinstance(node, P.Call) and node.name == "IF" and len(node.args) == 3:
        c, a, b = node.args
        if (
            isinstance(c, P.Binary)
            and c.op == "="
            and c.right == P.Number(1.0)
            and isinstance(a, P.Binary)
            and a.op == "-"
            and a.left == P.Number(1.0)
            and a.right == b
            and (pt := both(b, c.left))
        ):
            return f"mnist_loss({pt[0]}, {pt[1]})", "mnist_loss"
    if isinstance(node, P.Unary) and node.op == "-" and isinstance(node.operand, P.Call):
        ln = node.operand
        if (
            ln.name == "LN"
            and len(ln.args) == 1
            and isinstance(ln.args[0], P.Call)
            and ln.args[0].name == "SUMPRODUCT"
        ):
            sp = ln.args[0].args
            if len(sp) == 2 and all(isinstance(a, RefUse) for a in sp) and (pt := both(*sp)):
                y = next(
                    a
                    for a in sp
                    if not ex.g.blocks_in(a.sheet, *a.footprint(L.R, L.C))
                    or not any(ex._dyn(i) for i in ex.g.blocks_in(a.sheet, *a.footprint(L.R, L.C)))
                )
                v = ex.c.cnum[y.sheet][slice(*_rows(y, L)), y.c1 : y.c2 + 1]
                if np.isin(v, (0.0, 1.0)).all() and (v.sum(1) == 1).all():
                    return f"F.nll_loss(torch.log({pt[0]}), {pt[1]}.argmax(1))", None
    return None


def _rows(u, b):
    fp = u.footprint(b.R, b.C)
    return fp[0], fp[2] + 1


def _loss(ex: Exporter):
    o = ex.obj
    ex.g.analyse(o)
    node, text = o.ast, ex._text(o)
    if (
        isinstance(node, P.Call)
        and node.name == "AVERAGE"
        and len(node.args) == 1
        and isinstance(node.args[0], RefUse)
    ):
        u = node.args[0]
        fp = (u.sheet, *u.footprint(o.R, o.C))
        ids = ex.g.blocks_in(*fp)
        if len(ids) == 1 and ex.g.blocks[ids[0]].out == fp[1:] and ids[0] not in ex.model_set:
            L = ex.g.blocks[ids[0]]
            ex.g.analyse(L)
            found = _loss_pattern(ex, L)
            if found:
                ex.lines["loss"].append(
                    ("loss", "loss", found[0], f"{o.name}  {text}  of {L.name}  {ex._text(L)}", None)
                )
                return "loss", found[1]
    ex.emit("loss", o.id)
    return ex.vars[("loss", o.id)][0], None


def _headers(ex, sheet, r1, c1, c2):
    vals = ex.wb.sheets[sheet].values
    heads = [vals.get((r1 - 1, c)) for c in range(c1, c2 + 1)]
    if not all(isinstance(h, str) for h in heads):
        return ""
    if len(heads) > 12:  # e.g. 784 pixel names: the first and last few
        return escape(", ".join(heads[:6]) + f", ... ({len(heads) - 8} more), " + ", ".join(heads[-2:]))
    return escape(", ".join(heads))


def _doc(ex, which):
    out = []
    for s, r1, c1, r2, c2, off, _ in ex.inputs[which]:
        h = _headers(ex, s, r1, c1, c2)
        out.append(
            f"{which}[:, {off}:{off + c2 - c1 + 1}] = {escape(area_name(s, r1, c1, r2, c2))}"
            + (f" ({h})" if h else "")
        )
    return out


def _sequential(ex, lines, pred_code):
    """[(module code, comment)] when the forward is a plain chain of Linear/ReLU/Sigmoid/Softmax, else None."""
    prev, out = "x", []
    mods = {"relu": "nn.ReLU()", "sigmoid": "nn.Sigmoid()", "softmax": "nn.Softmax(dim=1)"}
    for kind, var, code, comment, xin in lines:
        if kind == "linear" and xin == prev:
            out.append((code.split("(")[0], comment))
        elif kind in mods and code == (
            f"torch.softmax({prev}, 1)" if kind == "softmax" else f"torch.{kind}({prev})"
        ):
            out.append((mods[kind], comment))
        else:
            return None
        prev = var
    return out if prev == pred_code and out else None


def generate(book, sheet=None, out_path="model.py", objective=None, params=None, state_dict=False) -> Path:
    """Write the module for ``book``'s model sheet to ``out_path`` (and ``<stem>.pt`` for large parameters,
    or always with ``state_dict``: the weights as a state dict ``xlmnist import`` reads)."""
    return export_module(book, sheet, out_path, objective, params, state_dict)[0]


def export_module(
    book, sheet=None, out_path="model.py", objective=None, params=None, state_dict=False, notes=None
):
    """(path, form): the layer form when the sheet is an affine/activation stack, else the general form;
    ``notes`` (a list): what the general form says besides (each recurrence's loop, or why it is not one)."""
    try:
        ex = Exporter(book, sheet, objective, params)
        return _layer_form(ex, book, Path(out_path), state_dict), "layer"
    except Unsupported as layer_err:
        cm = compile_workbook(book, sheet=sheet, objective=objective, params=params)
        try:
            gen = General(cm)
        except Unsupported as exc:
            raise Unsupported(f"{exc} (layer form: {layer_err})") from None
        if notes is not None:
            notes.extend(gen.notes)
        out_path = Path(out_path)
        state = {
            f"p{k}": cm.compiler.cnum[s][r1 : r2 + 1, c1 : c2 + 1]
            for k, (s, r1, c1, r2, c2) in enumerate(cm.compiler.params)
        }
        src = gen.render(os.path.basename(book), out_path.name, _params_src(state, out_path, state_dict))
        atomic_write(out_path, src.encode())
        return out_path, "general"


def _layer_form(ex, book, out_path, state_dict) -> Path:
    pred_code = ex.area("model", *ex.pred)
    loss_var, helper = _loss(ex)
    feats = {
        w: [ex.area("feat", s, r1, c1, r2, c2) for s, r1, c1, r2, c2, _, _ in ex.inputs[w]] for w in "xy"
    }
    width = {w: sum(i[4] - i[2] + 1 for i in ex.inputs[w]) for w in "xy"}

    def fix(code):
        def sub(m):
            w, a, b = m.group(1).lower(), int(m.group(2)), int(m.group(3))
            return w if (a, b) == (0, width[w]) else f"{w}[:, {a}:{b}]"

        return re.sub(r"@([XY])\[(\d+):(\d+)\]@", sub, code)

    mlines = [(k, v, fix(c), cm, None if xi is None else fix(xi)) for k, v, c, cm, xi in ex.lines["model"]]
    pred_code = fix(pred_code)
    seq = _sequential(ex, mlines, pred_code)
    state, recipes, init = {}, {}, []
    if seq is not None:
        init.append("        self.net = nn.Sequential(")
        for i, (mod, comment) in enumerate(seq):
            if mod.startswith("self.lin"):
                lay = ex.layers[int(mod[8:]) - 1]
                mod = _linear_ctor(lay)
                _layer_state(state, recipes, f"net.{i}", lay)
            init.append(f"            {mod},  # {escape(comment)}")
        init.append("        )")
        fwd = ["        return self.net(x)"]
    else:
        for lay in ex.layers:
            init.append(
                f"        self.{lay['attr']} = {_linear_ctor(lay)}  # weight, bias: {escape(', '.join(lay['refs']))}"
            )
            _layer_state(state, recipes, lay["attr"], lay)
        fwd = [f"        {v} = {c}  # {escape(cm)}" for _, v, c, cm, _ in mlines] + [
            f"        return {pred_code}"
        ]
    for k, attr in ex.raw_params.items():
        s, r1, c1, r2, c2 = ex.c.params[k]
        init.append(
            f"        self.{attr} = nn.Parameter(torch.zeros({r2 - r1 + 1}, {c2 - c1 + 1}, dtype=torch.float64))"
            f"  # {escape(area_name(s, r1, c1, r2, c2))}"
        )
        state[attr] = ex.c.cnum[s][r1 : r2 + 1, c1 : c2 + 1]
        recipes[attr] = ("r", [((s, r1, c1, r2, c2), False, None)])
    init.append("        self.load_state_dict(_params() if weights is None else weights)")
    loss_lines = [f"    {v} = {fix(c)}  # {escape(cm)}" for _, v, c, cm, _ in ex.lines["loss"]] + [
        f"    return {loss_var}"
    ]
    feat = [f"    {v} = {c}  # {escape(cm)}" for _, v, c, cm, _ in ex.lines["feat"]]
    for w in "xy":
        parts = feats[w]
        joined = parts[0] if len(parts) == 1 else "np.concatenate([" + ", ".join(parts) + "], 1)"
        feat.append(
            f"    {w} = torch.from_numpy(np.asarray({joined}, dtype=np.float64).reshape({ex.N}, {width[w]}).copy())"
            if parts
            else f"    {w} = torch.zeros({ex.N}, 0, dtype=torch.float64)"
        )
    src = _render(ex, book, init, fwd, loss_lines, feat, helper, state, out_path, recipes, state_dict)
    atomic_write(out_path, src.encode())
    return out_path


def _layer_state(state, recipes, key, lay) -> None:
    """The layer's weights under ``key`` and where BOOK's trainable cells hold them (for ``--weights book``)."""
    state[f"{key}.weight"] = lay["weight"]
    recipes[f"{key}.weight"] = ("w", [(area, t, cols) for area, t, cols, _ in lay["src"]])
    if lay["bias"] is not None:
        state[f"{key}.bias"] = lay["bias"]
        recipes[f"{key}.bias"] = ("b", [(area, t, one) for area, t, _, one in lay["src"]])


def _recipes(recipes) -> str:
    """WEIGHTS = {state key: (kind, [(sheet, r1, c1, r2, c2, transposed, index)])} as source."""
    rows = []
    for key, (kind, parts) in recipes.items():
        items = ", ".join(
            f"({escape(a[0], literal=True)}, {a[1]}, {a[2]}, {a[3]}, {a[4]}, {t!r}, {idx!r})"
            for a, t, idx in parts
        )
        rows.append(f"    {key!r}: ({kind!r}, [{items}]),")
    return "WEIGHTS = {\n" + "\n".join(rows) + "\n}\n"


def _linear_ctor(lay) -> str:
    o, i = lay["weight"].shape
    return f"nn.Linear({i}, {o}{', bias=False' if lay['bias'] is None else ''}, dtype=torch.float64)"


def _params_src(state, out_path: Path, state_dict: bool) -> str:
    """``_params()`` returning the baked weights: a PARAMS literal, or the .pt file beside the module."""
    size = sum(np.asarray(v).size for v in state.values())
    if state_dict or size > EMBED_LIMIT:
        save_state(state, out_path.with_suffix(".pt"))
    if size <= EMBED_LIMIT:
        body = ",\n".join(f"    {k!r}: {np.asarray(v).tolist()!r}" for k, v in state.items())
        return (
            f"PARAMS = {{\n{body},\n}}\n\n\ndef _params():\n"
            "    return {k: torch.tensor(v, dtype=torch.float64) for k, v in PARAMS.items()}\n"
        )
    pt = out_path.with_suffix(".pt")
    return (
        f"def _params():\n    # {size} numbers saved beside this file\n"
        f"    return torch.load(Path(__file__).with_name({escape(pt.name, literal=True)}), weights_only=True)\n"
    )


def _render(ex, book, init, fwd, loss_lines, feat, helper, state, out_path, recipes, state_dict) -> str:
    pred = area_name(*ex.pred)
    params = _params_src(state, out_path, state_dict)
    params += "\n\n" + _recipes(recipes) + BOOK_PARAMS
    xdoc = "\n".join("        " + d for d in _doc(ex, "x")) or "        (no inputs)"
    ydoc = "\n".join("    " + d for d in _doc(ex, "y")) or "    (no labels)"
    mnist = (
        (
            '\n\ndef mnist_loss(predictions, targets):\n    """The book\'s mnist_loss, on probabilities '
            '(the sheet applies the sigmoid itself)."""\n'
            "    return torch.where(targets == 1, 1 - predictions, predictions).mean()\n"
        )
        if helper
        else ""
    )
    name, objective = os.path.basename(book), ex.cm.objective_ref
    head = f'''"""{escape(ex.sheet)} of {escape(name)} as a PyTorch module (exported by xlmnist).

Run as a script: ``python {escape(out_path.name)} BOOK --json`` reads the data rows from BOOK and prints the
objective ({escape(objective)}) and the predictions ({escape(pred)}). The inputs are recomputed from the raw
cells by the feature formulas translated below (cached values are used only for formulas that could
not be translated). Trainable cells: {escape(", ".join(ex.cm.param_refs))}.

Weights: by default the ones baked in at export time (PARAMS, or the .pt file beside this one), NOT the
values now in the workbook; ``--weights book`` reads them from BOOK's trainable cells instead (e.g. after
``xlmnist train BOOK``), as does ``Model(book_weights(BOOK))``.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SOURCE = {escape(name, literal=True)}
SHEET = {escape(ex.sheet, literal=True)}
OBJECTIVE = {escape(objective, literal=True)}
PREDICTIONS = {escape(pred, literal=True)}


class Model(nn.Module):
    """forward(x) -> the predictions {escape(pred)} (float64 [N, {ex.pred[4] - ex.pred[2] + 1}]).

    x: float64 [N, {sum(i[4] - i[2] + 1 for i in ex.inputs["x"])}], one row per example:
{xdoc}
    """

    def __init__(self, weights=None):
        """weights: a state dict (default: the weights baked in at export, see _params / book_weights)."""
        super().__init__()
'''
    return (
        head
        + "\n".join(init)
        + "\n\n    def forward(self, x):\n"
        + "\n".join(fwd)
        + "\n"
        + mnist
        + f'\n\ndef loss_fn(pred, y):\n    """The objective {escape(objective)}; y:\n{ydoc}\n    """\n'
        + "\n".join(loss_lines)
        + "\n\n\n"
        + params
        + TEMPLATE_TAIL.replace("@FEAT@", "\n".join(feat))
    )


def _cmd_export(args) -> int:
    out = Path(args.output)
    if not out.parent.is_dir():
        raise XlmnistError(f"{out.parent}: no such folder")
    notes: list[str] = []
    path, form = export_module(
        args.book, args.sheet, out, args.objective, args.params, args.state_dict, notes
    )
    print(
        f"wrote {path} ({form} form)"
        + (f" and {path.with_suffix('.pt')} (state dict)" if args.state_dict else "")
    )
    for note in notes:
        print(f"  {note}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="write a workbook model sheet as a readable PyTorch module")
    p.add_argument("book", help="the .xlsx workbook")
    p.add_argument("--sheet", default=None, help="the model sheet (default: the active Solver sheet)")
    p.add_argument("-o", "--output", default="model.py", help="the module to write (default model.py)")
    p.add_argument(
        "--objective", default=None, help="the objective cell, e.g. Sheet1!$B$2 (default: the sheet's)"
    )
    p.add_argument(
        "--params", default=None, help="the trainable ranges, e.g. Sheet1!$B$4:$D$4 (default: the sheet's)"
    )
    p.add_argument(
        "--state-dict",
        action="store_true",
        help="also write the weights as a state dict beside it (<stem>.pt)",
    )
    p.set_defaults(func=_cmd_export)


__all__ = ["generate", "register", "Unsupported"]
