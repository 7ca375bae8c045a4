"""2-D windows in the lowered program: a copied block whose formula reads a window sliding over a grid
(a convolution sheet: down and across, or along one row or column) as one tensor op instead of a closure
over ``[R, C, h, w]`` windows.

* ``SUMPRODUCT(window, kernel)`` / ``SUM(window*kernel)`` (either order), the kernel a fixed range of the
  window's size -> ``conv2d`` (a cross-correlation: what the sheet computes); the blocks of several kernels
  over the same grid -> one ``conv2d`` with a channel per kernel (:func:`fuse_channels`);
* ``MAX``/``MIN``/``SUM``/``AVERAGE`` over a moving window (pooling with stride 1) -> ``max_pool2d`` /
  ``avg_pool2d``; with a stride, as course sheets pool 2 x 2 windows with stride 2: a contiguous block
  whose windows are ``OFFSET($B$2, 2*(ROW()-ROW($K$2)), 2*(COLUMN()-COLUMN($K$2)), 2, 2)``
  (:func:`strided_pool`), or the formula written in every other cell, each cell its own block
  (:func:`fuse_lattice`) -> one pooling op with that stride. The same values; where several cells of a window hold exactly the maximum, max_pool2d
  gives the gradient to one of them and the closures (``amax``) split it: a different subgradient only
  where the tied cells depend differently on the parameters (equal inputs, e.g. a blank background,
  give equal ones).

Only numbers and empty cells (0 for SUMPRODUCT and products) in the grid and the kernel; anything else
raises :class:`Unsupported` and the block runs its closure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from xlmnist.compile.functions import EMPTY, NUM
from xlmnist.compile.ir import Op, Stmt, names
from xlmnist.compile.sources import Area, N, Unsupported
from xlmnist.formula import parser as P
from xlmnist.formula.graph import RefUse

if TYPE_CHECKING:
    from xlmnist.compile.lower import Lowerer


def _grid(L: Lowerer, use: RefUse, b) -> tuple[str, int, int]:
    """The rectangle a reference covers over the whole block, as a 2-D variable, and its size."""
    fp = use.footprint(b.R, b.C)
    e, kind, strs = L.comp.area(use.sheet, *fp, owner=b.id)
    if strs is not None or (kind is not None and not np.isin(kind, (NUM, EMPTY)).all()):
        raise Unsupported("a window over text, logical or error cells")
    fh, fw = fp[2] - fp[0] + 1, fp[3] - fp[1] + 1
    area = Area(L, e, fh, fw)
    if area.fh == -1:
        raise Unsupported("a 2-D window over the data rows")
    return L.code(area.node(), "2d"), fh, fw


def sliding(use: RefUse, b) -> bool:
    """Whether a reference is a window that slides over a grid: it moves with the cells along an axis in
    which it is wider than one cell, and along every axis in which the block has several cells."""
    h, w = use.r2 - use.r1 + 1, use.c2 - use.c1 + 1
    moves = (use.rrel and h > 1) or (use.crel and w > 1)
    return moves and (use.rrel or b.R == 1) and (use.crel or b.C == 1)


def conv_call(L: Lowerer, node: P.Call, b) -> N | None:
    """``SUMPRODUCT(window, kernel)`` or ``SUM(window*kernel)`` with a sliding window -> conv2d;
    None where the call is not of that form."""
    args = node.args
    if b.array or b.R * b.C == 1:
        return None
    if node.name == "SUMPRODUCT" and len(args) == 2:
        pair = args
    elif node.name == "SUM" and len(args) == 1 and type(args[0]) is P.Binary and args[0].op == "*":
        pair = (args[0].left, args[0].right)
    else:
        return None
    if not all(type(a) is RefUse for a in pair):
        return None
    moving = [a for a in pair if sliding(a, b)]
    fixed = [a for a in pair if not a.rrel and not a.crel]
    if len(moving) != 1 or len(fixed) != 1:
        return None
    win, ker = moving[0], fixed[0]
    h, w = win.r2 - win.r1 + 1, win.c2 - win.c1 + 1
    if (ker.r2 - ker.r1 + 1, ker.c2 - ker.c1 + 1) != (h, w):
        raise Unsupported("a kernel of another size than its window")
    x, _, _ = _grid(L, win, b)
    k, _, _ = _grid(L, ker, b)
    L.note(f"conv2d: {b.name} = a {h}x{w} window times a fixed kernel -> one conv2d")
    return N(L.tmp(Op("conv2d", x, k, h=h, w=w)), b.R, b.C, "2d")


def pool(L: Lowerer, fn: str, n: N, b) -> N:
    """A reduction over a sliding window (``MAX(B2:C3)`` copied over a grid): stride 1."""
    area, h, w, rrel, crel = n.win
    if area.fh == -1:
        raise Unsupported("a 2-D window over the data rows")
    x = L.code(area.node(), "2d")
    L.note(
        f"pool: {b.name} = {fn} over {h}x{w} windows -> {'max' if fn in ('amax', 'amin') else 'avg'}_pool2d"
    )
    return N(L.tmp(Op("winreduce", x, fn=fn, h=h, w=w)), n.r, n.c, "2d")


def strided_pool(L: Lowerer, fn: str, call: P.Call, b) -> N | None:
    """``MAX(OFFSET($B$2, 2*(ROW()-ROW($K$2)), 2*(COLUMN()-COLUMN($K$2)), 2, 2))`` copied over a grid
    (the graph's ``_OFFSET`` with offsets from the cell's position): windows of a fixed size at offsets
    that step by a fixed stride down the rows and across the columns -> one pooling op with that stride
    (2 x 2 windows with stride 2: ``max_pool2d(x, 2, 2)``); None where the offsets are not of that form."""
    reach, rows, cols, *rest = call.args
    if type(reach) is not RefUse or reach.rrel or reach.crel or b.array:
        return None
    comp = L.comp
    offs = []
    for node in (rows, cols):
        e = comp.expr(node, b)
        if e.const is None or e.const.kind is not None and (e.const.kind != NUM).any():
            return None
        t = e.const.t
        if t.shape[2:] != (1, 1):
            return None
        offs.append(np.broadcast_to(t[:, :, 0, 0].detach().cpu().numpy(), (b.R, b.C)))
    top, left, h, w = (int(x.value) if type(x) is P.Number else None for x in rest)
    if None in (top, left, h, w):
        return None
    ro, co = offs
    sr = int(ro[1, 0] - ro[0, 0]) if b.R > 1 else h
    sc = int(co[0, 1] - co[0, 0]) if b.C > 1 else w
    want_r = ro[0, 0] + sr * np.arange(b.R).reshape(-1, 1)
    want_c = co[0, 0] + sc * np.arange(b.C).reshape(1, -1)
    if sr < 1 or sc < 1 or (ro != want_r).any() or (co != want_c).any():
        return None
    r0, c0 = top + int(ro[0, 0]), left + int(co[0, 0])
    r1, c1 = r0 + sr * (b.R - 1) + h, c0 + sc * (b.C - 1) + w
    fp = reach.footprint(1, 1)
    if r0 < 0 or c0 < 0 or r1 > fp[2] - fp[0] + 1 or c1 > fp[3] - fp[1] + 1:
        return None
    _, kind, strs = comp.area(reach.sheet, fp[0] + r0, fp[1] + c0, fp[0] + r1 - 1, fp[1] + c1 - 1, owner=b.id)
    if strs is not None or (kind is not None and not (kind == NUM).all()):
        raise Unsupported("a pooling window over empty, text, logical or error cells")
    x, _, _ = _grid(L, reach, b)
    x = L.tmp(Op("index", x, (slice(r0, r1), slice(c0, c1))))
    L.note(
        f"pool: {b.name} = {fn} over {h}x{w} windows (OFFSET) with stride {sr}x{sc} -> "
        f"{'max' if fn in ('amax', 'amin') else 'avg'}_pool2d"
    )
    return N(L.tmp(Op("winreduce", x, fn=fn, h=h, w=w, sh=sr, sw=sc)), b.R, b.C, "2d")


def fuse_lattice(L: Lowerer) -> None:
    """Single-cell blocks ``=MAX(B2:C3)``, ``=MAX(D2:E3)``, ... (a pooling formula written in every other
    cell, so each cell is its own block) whose windows tile a lattice over one grid -> one pooling op with
    that stride, each block an item of its result."""
    defs = L.defs
    groups: dict[tuple, list[tuple[int, int, int]]] = {}
    for i, s in enumerate(L.stmts):
        op = s.op
        if not (isinstance(op, Op) and op.kind == "reduce" and "dim" not in op.attrs and s.name):
            continue
        win = defs.get(op.args[0]) if isinstance(op.args[0], str) else None
        if not (isinstance(win, Op) and win.kind == "index" and isinstance(win.args[0], str)):
            continue
        idx = win.args[1]
        if not (isinstance(idx, tuple) and len(idx) == 2 and all(isinstance(x, slice) for x in idx)):
            continue
        (ra, rb), (ca, cb) = (idx[0].start, idx[0].stop), (idx[1].start, idx[1].stop)
        if None in (ra, rb, ca, cb):
            continue
        groups.setdefault((win.args[0], op.attrs["fn"], rb - ra, cb - ca), []).append((i, ra, ca))
    done = set()
    for (src, fn, h, w), cells in groups.items():
        if len(cells) < 2:
            continue
        rows, cols = sorted({a for _, a, _ in cells}), sorted({c for _, _, c in cells})
        sr = rows[1] - rows[0] if len(rows) > 1 else h
        sc = cols[1] - cols[0] if len(cols) > 1 else w
        if rows != list(range(rows[0], rows[0] + sr * len(rows), sr)) or sr < 1:
            continue
        if cols != list(range(cols[0], cols[0] + sc * len(cols), sc)) or sc < 1:
            continue
        if len(cells) != len(rows) * len(cols) or len({(a, c) for _, a, c in cells}) != len(cells):
            continue
        first = min(i for i, _, _ in cells)
        L.n += 1
        grid, out = f"t{L.n}", f"t{L.n + 1}"
        L.n += 1
        r1, c1 = rows[0] + sr * (len(rows) - 1) + h, cols[0] + sc * (len(cols) - 1) + w
        gop = Op("index", src, (slice(rows[0], r1), slice(cols[0], c1)))
        pop = Op("winreduce", grid, fn=fn, h=h, w=w, sh=sr, sw=sc)
        for i, a, c in cells:
            s = L.stmts[i]
            s.op = defs[s.name] = Op("index", out, ((a - rows[0]) // sr, (c - cols[0]) // sc))
        L.stmts[first:first] = [Stmt((grid,), gop), Stmt((out,), pop)]
        defs[grid], defs[out] = gop, pop
        done.add(src)
        L.note(
            f"pool lattice: {len(cells)} single-cell {fn} blocks over {h}x{w} windows of {src} with stride "
            f"{sr}x{sc} -> one {'max' if fn in ('amax', 'amin') else 'avg'}_pool2d"
        )


def fuse_channels(L: Lowerer) -> None:
    """The conv2d of several kernels over the same grid -> one conv2d with a channel per kernel (placed at
    the first of them; only where every kernel is defined before it)."""
    groups: dict[str, list[str]] = {}
    for s in L.stmts:
        if isinstance(s.op, Op) and s.op.kind == "conv2d" and isinstance(s.op.args[0], str):
            groups.setdefault(s.op.args[0], []).append(s.name)
    for x, outs in groups.items():
        ops = [L.defs[o] for o in outs]
        if len(outs) < 2 or len({(o.attrs["h"], o.attrs["w"]) for o in ops}) != 1:
            continue
        kernels = [o.args[1] for o in ops]
        h_w = (ops[0].attrs["h"], ops[0].attrs["w"])
        at = {s.name: i for i, s in enumerate(L.stmts) if s.name}
        first = at[outs[0]]
        for v in sorted({v for k in kernels for v in names(k) if at.get(v, -1) > first}, key=at.get):
            i = at[v]  # a kernel computed after the first conv (a slice of one parameter area): earlier
            if any(at.get(u, -1) >= first for u in names(L.stmts[i].op)):
                break
            L.stmts.insert(first, L.stmts.pop(i))
            at = {s.name: i for i, s in enumerate(L.stmts) if s.name}
            first = at[outs[0]]
        if any(at.get(v, -1) >= first for k in kernels for v in names(k)):
            continue
        uniq = list(dict.fromkeys(kernels))  # the same kernel twice over one grid: one channel
        if len(uniq) == 1:
            for o in outs[1:]:
                L.stmts[at[o]].op = L.defs[o] = outs[0]
            L.note(f"conv2d: {len(outs)} equal conv2d over {x} -> one")
            continue
        L.n += 1
        out = f"t{L.n}"
        op = Op("conv2dn", x, _stacked(L, uniq, *h_w) or Op("kernels", *uniq))
        for o, kern in zip(outs, kernels):
            L.stmts[at[o]].op = L.defs[o] = Op("index", out, uniq.index(kern))
        L.stmts.insert(first, Stmt((out,), op))
        L.defs[out] = op
        L.note(f"conv2d channels: {len(outs)} conv2d over {x} -> one conv2d with {len(uniq)} channels")
        if len(uniq) == len(outs):
            batch_channels(L, out, len(outs), outs)


def _stacked(L: Lowerer, kernels: list, h: int, w: int):
    """The kernels as ``p.reshape(K, 1, h, w)`` where they are the h-row slices of one parameter area, in
    order (kernels stacked one under the other on the sheet), else None."""
    ops = [L.defs.get(k) if isinstance(k, str) else None for k in kernels]
    if not all(isinstance(o, Op) and o.kind == "index" and isinstance(o.args[1], tuple) for o in ops):
        return None
    p = ops[0].args[0]
    if not (isinstance(p, str) and p[0] == "p" and p[1:].isdigit()):
        return None
    _, r1, c1, r2, c2 = L.comp.params[int(p[1:])]
    if (r2 - r1 + 1, c2 - c1 + 1) != (len(kernels) * h, w):
        return None
    want = [(slice(j * h, (j + 1) * h), slice(0, w)) for j in range(len(kernels))]
    if [o.args[0] for o in ops] != [p] * len(ops) or [o.args[1] for o in ops] != want:
        return None
    return Op("view4", p, len(kernels), 1, h, w)


# ---- channels -------------------------------------------------------------------------------------------
_EW = {"neg", "exp", "log", "log10", "abs", "sqrt", "tanh", "sign", "square", "sigmoid", "to_dt"}
_EW |= {"add", "sub", "mul", "div", "pow", "maximum", "minimum", "relu", "where"}
_EW |= {"eq", "ne", "lt", "le", "gt", "ge"}


def batch_channels(L: Lowerer, out: str, k: int, xs: list[str]) -> None:
    """After one conv2d with ``k`` channels, the same ops applied to each channel ``xs[j] = out[j]`` (the
    ReLU, the pooling, the error against a target, the sum) -> one op over all channels, step by step,
    while every channel does the same thing; differing constants are stacked."""
    rank = 2
    while True:
        pos = {s.name: i for i, s in enumerate(L.stmts) if s.name}
        users: dict[str, list[int]] = {}
        for i, s in enumerate(L.stmts):
            for v in names(s.op):
                users.setdefault(v, []).append(i)
        chain = []
        for x in xs:
            u = users.get(x, [])
            while len(u) == 1 and isinstance(L.stmts[u[0]].op, str):  # a block variable aliasing it
                x = L.stmts[u[0]].name
                u = users.get(x, [])
            if len(u) != 1:
                return
            chain.append((x, u[0]))
        ops = [L.stmts[i].op for _, i in chain]
        if not all(isinstance(o, Op) for o in ops) or len({(o.kind, len(o.args)) for o in ops}) != 1:
            return
        if len({tuple(sorted(o.attrs.items())) for o in ops}) != 1:
            return
        first = chain[0][1]
        if ops[0].kind == "as11" and rank == 0:
            _rows(L, chain, out, k, users)
            return
        new = _batched(L, ops, [x for x, _ in chain], out, rank, k, pos, first)
        if new is None:
            return
        op, rank = new
        L.n += 1
        y = f"t{L.n}"
        for j, (_, i) in enumerate(chain):
            s = L.stmts[i]
            s.op = L.defs[s.name] = Op("index", y, j)
        L.stmts.insert(first, Stmt((y,), op))
        L.defs[y] = op
        L.note(f"channels: {ops[0].kind} of {k} channels -> one op over {out}")
        out, xs = y, [L.stmts[i + (i >= first)].name for _, i in chain]


def _batched(L: Lowerer, ops: list[Op], xs: list[str], out: str, rank: int, k: int, pos: dict, first: int):
    """(the op over all channels, the rank per channel after it), or None."""
    op0 = ops[0]
    kind, attrs = op0.kind, op0.attrs
    at = [[a == x for a in o.args] for o, x in zip(ops, xs)]
    if len({tuple(a) for a in at}) != 1 or sum(at[0]) != 1:
        return None
    p = at[0].index(True)
    if kind in ("flat", "reduce", "winreduce") and (p != 0 or "dim" in attrs):
        return None
    args = []
    for q in range(len(op0.args)):
        if q == p:
            args.append(out)
            continue
        vals = [o.args[q] for o in ops]
        if all(v == vals[0] for v in vals) and not isinstance(vals[0], Op):
            if isinstance(vals[0], str) and pos.get(vals[0], -1) >= first:
                return None
            args.append(vals[0])
            continue
        c = _stack_consts(L, vals, rank)
        if c is None:
            return None
        args.append(c)
    if kind in _EW:
        return Op(kind, *args, **attrs), rank
    if kind == "winreduce" and rank == 2:
        return Op("winreduce", out, chan=True, **attrs), 2
    if kind == "reduce" and rank == 2:
        return Op("chanreduce", out, fn=attrs["fn"]), 0
    if kind == "flat" and rank == 2:
        return Op("chanflat", out), 1
    if kind == "dot" and rank == 1:
        return Op("rowdot", *args), 0
    return None


def _stack_consts(L: Lowerer, vals: list, rank: int):
    """Per-channel constant tensors of one shape (rank at most ``rank``) -> one stacked constant."""
    ts = [L.g.get(v) if isinstance(v, str) and v[0] == "k" else None for v in vals]
    if any(t is None for t in ts) or len({tuple(t.shape) for t in ts}) != 1 or ts[0].dim() > rank:
        return None
    shape = (1,) * (rank - ts[0].dim()) + tuple(ts[0].shape)
    a = np.stack([t.reshape(shape).cpu().numpy() for t in ts])
    return L.const(a, dtype=ts[0].dtype)


def _rows(L: Lowerer, chain, out: str, k: int, users) -> None:
    """``cat([x0.reshape(1, 1), ...])`` of the channels in order -> ``out.reshape(1, -1)``."""
    ops = [L.stmts[i].op for _, i in chain]
    if not all(o.kind == "as11" for o in ops):
        return
    heads = [L.stmts[i].name for _, i in chain]
    u = {tuple(users.get(h, [])) for h in heads}
    if len(u) != 1 or len(next(iter(u))) != 1:
        return
    s = L.stmts[next(iter(u))[0]]
    if s.op.kind != "cat" or list(s.op.args) != heads:
        return
    s.op = L.defs[s.name] = Op("row", out)
    L.note(f"channels: the {k} channel results side by side -> {out}.reshape(1, -1)")
