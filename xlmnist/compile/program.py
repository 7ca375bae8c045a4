"""The lowered objective as one program: lowering (:mod:`xlmnist.compile.lower`), the rewrites
(:mod:`xlmnist.compile.fuse`, dead code), rendering (:func:`xlmnist.compile.ir.render`) and compiling it
once; :func:`retarget` reuses a program (validated in float64) for another dtype or device.
"""

from __future__ import annotations

import re

import torch

from xlmnist.compile.areas import DATA
from xlmnist.compile.conv import fuse_channels, fuse_lattice
from xlmnist.compile.fuse import fuse_softmax
from xlmnist.compile.ir import Op, Stmt, names, render
from xlmnist.compile.lower import Lowerer
from xlmnist.compile.sources import relu_t

_TB = re.compile(r"[tb]\d+")  # temporaries and block variables (names of our own program)
_TWO_D = {"2d": lambda v: v, "col": lambda v: Op("unsqueeze", v), "0": lambda v: Op("as11", v)}


def lower_program(comp, steps, obj):
    """``steps``: [(block id, closure)] in dependency order; ``obj``: (block id, row, col), or a list of
    block ids: then the function returns ``{block id: its 2-D tensor}`` (what ``env`` holds)."""
    L = Lowerer(comp)
    for bid, e in steps:
        L.g[f"S{bid}"] = e
        L.block(comp.graph.blocks[bid])
    fuse_softmax(L)
    fuse_lattice(L)
    fuse_channels(L)
    need = set()  # blocks a compiled closure reads from env
    for bid in L.fallback:
        need |= comp.reads.get(bid, set())
    body = []
    for s in L.stmts:
        body.append(s)
        t = s.name
        if t and t[0] == "b" and len(s.targets) == 1 and int(t[1:]) in need:
            body.append(Stmt((int(t[1:]),), _TWO_D[L.lay[int(t[1:])][0]](t)))
    if isinstance(obj, list):
        vals = [Op("env", bid) if bid in L.fallback else _TWO_D[L.lay[bid][0]](f"b{bid}") for bid in obj]
        ret = Op("dict", *vals, keys=tuple(obj))
    else:
        bid, i, j = obj
        ret = {"2d": Op("index", f"b{bid}", (i, j)), "col": Op("index", f"b{bid}", i), "0": f"b{bid}"}[
            L.lay[bid][0]
        ]
    n = len(body)
    body = dead_code(body, ret)
    if len(body) < n:
        L.note(f"dead code: {n - len(body)} assignments nothing reads")
    head = [Stmt((f"p{k}",), Op("env", -(k + 2))) for k in range(len(comp.params))]
    if comp.data is not None:
        head += [Stmt(("D",), Op("env", DATA)), Stmt(("M",), Op("rows", "D"))]
    if any("TR" in names(s.op) for s in body):
        head.append(Stmt(("TR",), Op("trusted")))
    src = render(head, body, ret, L.guards) + "".join(f"\n\n{x}" for x in L.extra)
    return _make(src, L.g, sorted(L.fallback), list(L.notes))


def checked_evaluator(comp, steps, env: dict):
    """The blocks of ``steps`` as one program returning ``{block id: 2-D tensor}``, checked once against
    the block closures on ``env``; None where it disagrees or cannot be built."""
    try:
        prog = lower_program(comp, steps, [bid for bid, _ in steps])
        with torch.no_grad():
            check = dict(env)
            for bid, e in steps:
                check[bid] = e(check)
            got = prog(dict(env))
    except Exception:  # noqa: BLE001 - any lowering problem: the closures are the reference
        return None
    rtol, atol = (1e-9, 1e-12) if comp.ctx.dtype == torch.float64 else (1e-4, 1e-6)
    for bid, _ in steps:
        want, have = check[bid], got[bid]
        if have.shape != want.shape or not torch.allclose(have, want, rtol=rtol, atol=atol, equal_nan=True):
            return None
    return prog


def dead_code(body: list[Stmt], ret) -> list[Stmt]:
    """Drop assignments to temporaries and block variables that nothing later reads (a closure call,
    which writes ``env``, always stays)."""
    used = names(ret)
    keep = []
    for s in reversed(body):
        t = s.targets[0]
        if len(s.targets) == 1 and isinstance(t, str) and _TB.fullmatch(t) and t not in used:
            continue
        used |= names(s.op)
        keep.append(s)
    return keep[::-1]


def _make(src: str, g: dict, fallback: list[int], notes: list[str]):
    ns = dict(g)
    exec(compile(src, "<xlmnist objective>", "exec"), ns)  # our own generated code, not formula text
    fn = ns["program"]
    fn.source, fn.namespace, fn.fallback, fn.notes = src, g, fallback, notes
    fn.check = ns.get("check")
    return fn


def retarget(prog, dtype, device, steps):
    """The same program (the same source) for another dtype/device: its constants converted, ``steps``
    ([(block id, closure)] of the target model) for the blocks that run their closures."""
    g = {}
    for k, v in prog.namespace.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
        g[k] = v
    g["DT"], g["RELU_T"] = dtype, relu_t(dtype)
    for bid, e in steps:
        if f"S{bid}" in g:
            g[f"S{bid}"] = e
    return _make(prog.source, g, prog.fallback, prog.notes)
