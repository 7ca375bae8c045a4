"""``xlmnist export``: a workbook's model -> a readable PyTorch module (``xlmnist import`` is in importer.py).

The compiler finds the objective, the trainable ranges and which blocks depend on them; this module
translates those blocks once more, into Python source: recognised patterns become idiomatic torch
(SUMPRODUCT/MMULT with a Ones column -> ``nn.Linear``, ``IF(x<0,0,x)`` -> ``torch.relu``,
``1/(1+EXP(-x))`` -> ``torch.sigmoid``, EXP/SUM -> ``torch.softmax``, the loss cell -> ``F.mse_loss`` /
``mnist_loss`` / cross-entropy), anything else a literal element-wise translation over row tensors.
Constant cells the model reads per row (features, labels) become the inputs ``x`` and ``y``; in script
mode the exported file recomputes them with numpy from the workbook's raw cells by translating their
formulas too (so stale or missing cached values do not matter), falling back to cached values for
formulas it cannot translate.
"""

from __future__ import annotations

import builtins
import keyword
import os
import re

import numpy as np

from xlmnist.compile.compiler import parse_areas
from xlmnist.compile.functions import NUM
from xlmnist.compile.model import compile_workbook
from xlmnist.export.translate import Expr, Translator, Unsupported, escape, paren
from xlmnist.formula import parser as P
from xlmnist.formula.graph import RefUse, topo_order
from xlmnist.xlsx.refs import area_name, col_letters, split_ref

# names the generated module already uses: a header cell that reads ``torch`` or ``float`` gets a suffix
RESERVED = frozenset(
    {*keyword.kwlist, *keyword.softkwlist, *dir(builtins), "torch", "np", "F", "nn", "json", "sys", "argparse",
     "Path", "Model", "loss_fn", "mnist_loss", "read_data", "main", "loss", "PARAMS", "SOURCE", "SHEET",
     "OBJECTIVE", "PREDICTIONS"}
)  # fmt: skip


def _ident(text: str) -> str:
    """Lower-case ASCII letters, digits and ``_`` only (a workbook's text never becomes code as-is)."""
    return re.sub(r"[^0-9a-z_]+", "_", text.lower())


def _varies(b) -> bool:
    """True when the block's formula reads cells that move with its rows (and columns, if several)."""
    rows = any(u.rrel for u in b.refs) or b.R == 1
    cols = any(u.crel for u in b.refs) or b.C == 1
    return rows and cols


class Exporter(Translator):
    def __init__(self, path, sheet=None, objective=None, params=None):
        self.path = os.fspath(path)
        self.cm = compile_workbook(self.path, sheet=sheet, objective=objective, params=params)
        self.c = self.cm.compiler  # graph, constant grids, parameter areas
        self.g, self.wb = self.c.graph, self.c.wb
        self.sheet, orow, ocol, _, _ = split_ref(self.cm.objective_ref)
        self.vars: dict = {}  # (ctx, block id) -> (name, column offset inside the variable)
        self.lines = {"model": [], "loss": [], "feat": []}
        self.names: set[str] = {"x", "y", "pred", "wb", "self"}
        self.inputs = {"x": [], "y": []}  # [sheet, r1, c1, r2, c2, offset, values]
        self.layers: list[dict] = []
        self.raw_params: dict[int, str] = {}
        self.width: dict[str, int] = {}
        obj = self.g.block_at(self.sheet, orow, ocol)
        self.obj = obj
        self.pdep: set[int] = set()  # blocks that depend on a trainable cell
        for bid in topo_order(self.g, [obj.id]):
            b = self.g.blocks[bid]
            if set(b.deps) & self.pdep or any(self._touches_param(u, b) for u in b.refs):
                self.pdep.add(bid)
        self.pred = self._pred_area()
        pred_ids = self.g.blocks_in(*self.pred)
        self.model_set = {i for i in topo_order(self.g, pred_ids) if self._dyn(i)}
        self.N = self.pred[3] - self.pred[1] + 1

    # ---- what is the prediction -------------------------------------------------------------------
    def _dyn(self, bid) -> bool:
        return bid in self.pdep

    def _touches_param(self, u, b) -> bool:
        r1, c1, r2, c2 = u.footprint(b.R, b.C)
        return any(
            ps == u.sheet and p1 <= r2 and r1 <= p2 and q1 <= c2 and c1 <= q2
            for ps, p1, q1, p2, q2 in self.c.params
        )

    def _pred_area(self):
        needed = set(topo_order(self.g, [self.obj.id]))
        text = self.wb.names.get((self.sheet, "XLMNIST_PREDICTIONS"))
        if text:
            area = parse_areas(self.wb, text, self.sheet)[0]
            ids = self.g.blocks_in(*area)
            if ids and all(i in needed and self._dyn(i) and i != self.obj.id for i in ids):
                return area
        loss = [i for i in self.obj.deps if self._dyn(i) and self.g.blocks[i].R > 1]
        if not loss:
            raise Unsupported(
                f"{self.obj.anchor}: cannot find the per-row loss column the objective averages"
            )
        lb = self.g.blocks[loss[0]]
        preds = [self.g.blocks[i] for i in lb.deps if self._dyn(i) and self.g.blocks[i].R > 1]
        if not preds:
            return (lb.sheet, *lb.out)
        r1, r2 = preds[0].out[0], preds[0].out[2]
        return (preds[0].sheet, r1, min(b.out[1] for b in preds), r2, max(b.out[3] for b in preds))

    # ---- names, inputs, constants --------------------------------------------------------------------
    def _name(self, b) -> str:
        head = self.wb.sheets[b.sheet].values.get((b.r0 - 1, b.c0)) if b.C == 1 and not b.array else None
        base = _ident(head).strip("_") if isinstance(head, str) else ""
        if not base or not base[0].isalpha() or len(base) > 20:
            base = "_".join(dict.fromkeys([col_letters(b.out[1]), col_letters(b.out[3])])).lower()
        if b.sheet != self.sheet:
            base = _ident(b.sheet) + "_" + base
        name, k = base, 2
        while name in self.names or name in RESERVED or not name.isidentifier():
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def _input(self, which, sheet, r1, c1, r2, c2) -> str:
        vals = self.c.cnum[sheet][r1 : r2 + 1, c1 : c2 + 1]
        kind = self.c.ckind[sheet][r1 : r2 + 1, c1 : c2 + 1]
        known = all(self.c.compiled.get(i) is False for i in self.g.blocks_in(sheet, r1, c1, r2, c2))
        bad = np.argwhere((kind != NUM) & (kind != 0))
        if known and len(bad):
            where = area_name(sheet, r1 + bad[0][0], c1 + bad[0][1], r1 + bad[0][0], c1 + bad[0][1])
            raise Unsupported(f"{where}: the model reads a cell that is not a number")
        lst = self.inputs[which]
        for s, a1, b1, a2, b2, off, _v in lst:
            if s == sheet and (a1, a2) == (r1, r2) and b1 <= c1 and c2 <= b2:
                return f"@{which.upper()}[{off + c1 - b1}:{off + c2 - b1 + 1}]@"
        for *_, off, v in lst:
            if known and v is not None and v.shape == vals.shape and np.array_equal(v, vals):
                return f"@{which.upper()}[{off}:{off + c2 - c1 + 1}]@"
        off = sum(i[4] - i[2] + 1 for i in lst)
        lst.append([sheet, r1, c1, r2, c2, off, vals.copy() if known else None])
        return f"@{which.upper()}[{off}:{off + c2 - c1 + 1}]@"

    def _const(self, sheet, r1, c1, r2, c2) -> str:
        v = np.nan_to_num(self.c.cnum[sheet][r1 : r2 + 1, c1 : c2 + 1])
        if v.size == 1:
            return repr(float(v[0, 0]))
        if v.size > 64:
            raise Unsupported(f"{area_name(sheet, r1, c1, r2, c2)}: a large constant range inside the model")
        return f"torch.tensor({v.tolist()!r}, dtype=torch.float64)"

    # ---- areas -------------------------------------------------------------------------------------
    def _src(self, sheet, r1, c1, r2, c2, ctx):
        """Column runs [(key, c1, c2)] of one source each: ('p', k), ('b', id) or ('k', None) constants."""
        grid = self.g.ids(sheet, r1, c1, r2, c2)
        runs = []
        for c in range(c1, c2 + 1):
            col = grid[:, c - c1]
            ids = set(int(i) for i in np.unique(col)) if col.size else {-1}
            keys = set()
            for k, (ps, p1, q1, p2, q2) in enumerate(self.c.params):
                if ps == sheet and q1 <= c <= q2 and p1 <= r2 and r1 <= p2:
                    keys.add(("p", k))
                    ids.discard(-1)
            for i in ids:
                if i >= 0 and (self._dyn(i) or ctx == "feat"):
                    keys.add(("b", i))
                else:
                    keys.add(("k", -1 if ctx == "feat" else None))
            if len(keys) != 1:
                raise Unsupported(
                    f"{area_name(sheet, r1, c, r2, c)}: a column mixing formulas of different kinds"
                )
            key = keys.pop()
            if runs and runs[-1][0] == key:
                runs[-1][2] = c
            else:
                runs.append([key, c, c])
        return runs

    def area(self, ctx, sheet, r1, c1, r2, c2) -> str:
        pieces = []
        for (kind, k), a, b in self._src(sheet, r1, c1, r2, c2, ctx):
            if kind == "p":
                pieces.append(self._param_slice(k, sheet, r1, a, r2, b))
            elif kind == "b":
                pieces.append(self._block_slice(ctx, k, r1, a, r2, b))
            elif ctx == "feat":
                pieces.append(f"_area(wb, {escape(sheet, literal=True)}, {r1}, {a}, {r2}, {b})")
            elif r2 - r1 + 1 == self.N and self.N > 1:
                pieces.append(self._input("x" if ctx == "model" else "y", sheet, r1, a, r2, b))
            else:
                pieces.append(self._const(sheet, r1, a, r2, b))
        merged = []
        for piece in pieces:
            m0 = re.fullmatch(r"(\w+)\[(:|\d+:\d+), (\d+):(\d+)\]", merged[-1]) if merged else None
            m1 = re.fullmatch(r"(\w+)\[(:|\d+:\d+), (\d+):(\d+)\]", piece)
            if m0 and m1 and m0.group(1, 2) == m1.group(1, 2) and m0.group(4) == m1.group(3):
                a, z = int(m0.group(3)), int(m1.group(4))
                full = m0.group(2) == ":" and a == 0 and z == self.width.get(m0.group(1))
                merged[-1] = m0.group(1) if full else f"{m0.group(1)}[{m0.group(2)}, {a}:{z}]"
            else:
                merged.append(piece)
        pieces = merged
        if len(pieces) == 1:
            return pieces[0]
        return ("np.concatenate([" if ctx == "feat" else "torch.cat([") + ", ".join(pieces) + "], 1)"

    def _param_slice(self, k, sheet, r1, c1, r2, c2) -> str:
        ps, p1, q1, p2, q2 = self.c.params[k]
        if k not in self.raw_params:
            self.raw_params[k] = _ident(f"p_{area_name(*self.c.params[k])}")
        name = "self." + self.raw_params[k]
        if (r1, c1, r2, c2) == (p1, q1, p2, q2):
            return name
        return f"{name}[{r1 - p1}:{r2 - p1 + 1}, {c1 - q1}:{c2 - q1 + 1}]"

    def _block_slice(self, ctx, bid, r1, c1, r2, c2) -> str:
        b = self.g.blocks[bid]
        if ctx == "loss" and bid in self.model_set:
            s, a1, b1, a2, b2 = self.pred
            if not (s == b.sheet and (r1, r2) == (a1, a2) and b1 <= c1 and c2 <= b2):
                raise Unsupported(
                    f"{area_name(b.sheet, r1, c1, r2, c2)}: the loss reads model cells outside the predictions"
                )
            name, off, (o1, oc1, o2, oc2) = "pred", 0, (a1, b1, a2, b2)
        else:
            if (ctx, bid) not in self.vars:
                self.emit(ctx, bid)
            name, off = self.vars[(ctx, bid)]
            o1, oc1, o2, oc2 = b.out
        if (r1, r2) == (o1, o2) and (c1, c2) == (oc1, oc2) and off == 0 and (ctx, bid, "w") not in self.vars:
            return name
        rows = ":" if (r1, r2) == (o1, o2) else f"{r1 - o1}:{r2 - o1 + 1}"
        return f"{name}[{rows}, {off + c1 - oc1}:{off + c2 - oc1 + 1}]"

    # ---- recognised layers ----------------------------------------------------------------------------
    def _linear_spec(self, b):
        """(data RefUse, weight area, transposed?) when ``b`` is SUMPRODUCT/MMULT of data rows and parameters."""
        node = b.ast
        if not (isinstance(node, P.Call) and node.name in ("SUMPRODUCT", "MMULT") and len(node.args) == 2):
            return None
        if not all(isinstance(a, RefUse) for a in node.args):
            return None
        for d, w in (node.args, node.args[::-1]):
            wfp = (w.sheet, *w.footprint(b.R, b.C))
            k = self._param_of(wfp)
            if k is None or (w.rrel and b.R > 1):
                continue
            dh, dw = d.r2 - d.r1 + 1, d.c2 - d.c1 + 1
            wh, ww = wfp[3] - wfp[1] + 1, wfp[4] - wfp[2] + 1
            if b.array and node.name == "MMULT" and dh == self.N and d is node.args[0] and dw == wh:
                return d, wfp, False
            if b.array or not d.rrel or dh != 1 or d.crel and b.C > 1:
                continue
            if node.name == "SUMPRODUCT" and wh == 1 and ww == dw and b.C == 1:
                return d, wfp, True
            if node.name == "MMULT" and d is node.args[0] and ww == (b.C if w.crel else 1) and wh == dw:
                return d, wfp, False
        return None

    def _param_of(self, fp):
        s, r1, c1, r2, c2 = fp
        for k, (ps, p1, q1, p2, q2) in enumerate(self.c.params):
            if ps == s and p1 <= r1 and r2 <= p2 and q1 <= c1 and c2 <= q2:
                return k
        return None

    def _linear_parts(self, b):
        spec = self._linear_spec(b)
        if spec is None:
            return None
        d, (ws, w1, wc1, w2, wc2), transposed = spec
        s, r1, c1, r2, c2 = d.sheet, *d.footprint(b.R, b.C)
        W = self.c.cnum[ws][w1 : w2 + 1, wc1 : wc2 + 1]
        W = W.T if transposed else W  # [in (+1), out]
        ones = []
        for (kind, _), a, z in self._src(s, r1, c1, r2, c2, "model"):
            if kind == "k":
                for c in range(a, z + 1):
                    col = self.c.cnum[s][r1 : r2 + 1, c]
                    if (self.c.ckind[s][r1 : r2 + 1, c] == NUM).all() and (col == 1.0).all():
                        ones.append(c)
        ones = ones[:1]
        keep = [c for c in range(c1, c2 + 1) if c not in ones]
        runs, cols = [], [c - c1 for c in keep]
        for c in keep:
            if runs and runs[-1][1] == c - 1:
                runs[-1][1] = c
            else:
                runs.append([c, c])
        xcode = [self.area("model", s, r1, a, r2, z) for a, z in runs]
        xcode = xcode[0] if len(xcode) == 1 else "torch.cat([" + ", ".join(xcode) + "], 1)"
        bias = W[ones[0] - c1] if ones else None
        wref = area_name(ws, w1, wc1, w2, wc2)
        src = ((ws, w1, wc1, w2, wc2), transposed, cols, None if bias is None else ones[0] - c1)
        return xcode, W[cols].T.copy(), (None if bias is None else bias.copy()), wref, src

    def emit_linear(self, b):
        """nn.Linear for ``b`` merged with the neighbouring blocks that are the same layer's other units."""
        first = self._linear_parts(b)
        if first is None:
            return False
        chain, parts = [b], [first]
        for step in (-1, 1):
            while True:
                edge = chain[0] if step < 0 else chain[-1]
                col = edge.out[1] - 1 if step < 0 else edge.out[3] + 1
                nb = self.g.block_at(edge.sheet, edge.r0, col)
                if (
                    nb is None
                    or nb.out[0] != b.out[0]
                    or nb.out[2] != b.out[2]
                    or not self._dyn(nb.id)
                    or nb.array
                ):
                    break
                self.g.analyse(nb)
                pp = self._linear_parts(nb)
                if pp is None or pp[0] != first[0] or (pp[2] is None) != (first[2] is None):
                    break
                chain.insert(0, nb) if step < 0 else chain.append(nb)
                parts.insert(0, pp) if step < 0 else parts.append(pp)
        weight = np.concatenate([p[1] for p in parts], 0)
        bias = None if first[2] is None else np.concatenate([np.atleast_1d(p[2]) for p in parts])
        attr = f"lin{len(self.layers) + 1}"
        var = self._name(chain[0]) if len(chain) == 1 else f"{attr}_out"
        self.names.add(var)
        self.width[var] = weight.shape[0]
        self.layers.append(
            {
                "attr": attr,
                "weight": weight,
                "bias": bias,
                "refs": [p[3] for p in parts],
                "src": [p[4] for p in parts],
            }
        )
        off = 0
        for blk in chain:
            self.vars[("model", blk.id)] = (var, off)
            if len(chain) > 1:
                self.vars[("model", blk.id, "w")] = True
            off += blk.C if not blk.array else blk.out[3] - blk.out[1] + 1
        area = area_name(b.sheet, chain[0].out[0], chain[0].out[1], chain[-1].out[2], chain[-1].out[3])
        formulas = "; ".join(dict.fromkeys(self._text(x) for x in chain[:2])) + (
            " ..." if len(chain) > 2 else ""
        )
        self.lines["model"].append(
            ("linear", var, f"self.{attr}({first[0]})", f"{area}  {formulas}", first[0])
        )
        return True

    def _text(self, b):
        return self.wb.sheets[b.sheet].formula((b.r0, b.c0))

    def emit(self, ctx, bid):
        b = self.g.blocks[bid]
        self.g.analyse(b)
        if ctx == "model" and self.emit_linear(b):
            return
        kind, code = "general", None
        if ctx == "model":
            sm = self._softmax(b)
            if sm is not None:
                kind, code = "softmax", f"torch.softmax({sm}, 1)"
        if code is None:
            try:
                e = self.tr(b.ast, b, ctx)
            except Unsupported:
                if ctx != "feat":
                    raise
                e, kind = (
                    Expr(
                        f"_area(wb, {escape(b.sheet, literal=True)}, {b.out[0]}, {b.out[1]}, {b.out[2]}, {b.out[3]}, cached=True)"
                    ),
                    "cached",
                )
            code = e.code
            if e.bool:
                code = f"{paren(code)}" + (".astype(float)" if ctx == "feat" else ".double()")
            if e.win and not b.array and ctx != "feat":
                raise Unsupported(f"{b.anchor}: the formula gives a range, not one value per cell")
            m = re.fullmatch(r"torch\.(relu|sigmoid)\((\w+)\)", code)
            if m:
                kind = m.group(1)
            if ctx == "feat" and b.R * b.C > 1 and not e.win and kind != "cached" and not _varies(b):
                code = f"np.broadcast_to({code}, ({b.R}, {b.C}))"
        var = self._name(b)
        self.width[var] = b.out[3] - b.out[1] + 1
        self.vars[(ctx, bid)] = (var, 0)
        text = self._text(b)
        self.lines[ctx].append((kind, var, code, f"{b.name}  {text}", None))
