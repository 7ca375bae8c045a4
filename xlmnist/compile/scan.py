"""A running recurrence down the rows compiled once and run as one loop over its rows (issue #12 item 3).

The graph splits an unrolled optimiser sheet (``C5 = C4 - lr*D4``, Adam's m, v and w side by side) into
one block per row and member (:mod:`xlmnist.formula.cycles`), and records the group as a
:class:`~xlmnist.formula.cycles.ScanPlan`. Compiling those steps one by one costs the same analysis and
closure building a thousand times; here each member's formula is compiled **once**, for its whole
column:

* the parts of the formula that do not read the recurrence (``$B$1``, ``1-$C$1^A5``, a gradient over
  constant data) are compiled for all rows at once, as any copied block, and evaluated once per call;
  each step takes its row;
* a reference to the recurrence's own cells (``B4`` from ``B5``, ``F5`` from ``B5``) reads, at each
  step, the values the loop computed in earlier rows (or earlier in the same row), or the cells above the
  recurrence (its initial values: constants, trainable cells, other blocks).

The loop computes the rows in order, the members of a row in dependency order, with the same builders as
the block closures (the same values), and autograd differentiates through it. Every step block's value
(``env[step]``) is its row of the loop's result: the rest of the compiler, the write-back and ``verify``
see the steps as before. A recurrence this cannot compile (a lookup or random number over its own cells,
the data rows) is compiled step by step, as before.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from xlmnist.compile.areas import _Expr
from xlmnist.compile.scan_loop import NotScan, _Scan
from xlmnist.compile.values import EMPTY, ERR, NUM, TEXT, Value
from xlmnist.errors import FormulaError


def index(comp) -> dict[int, tuple[int, list[list[int]]]]:
    """Step block id -> (plan number, the step ids of each member) for the graph's scans whose steps are
    still one block per member and row."""
    got = comp.__dict__.get("_scan_index")
    if got is not None:
        return got
    got = {}
    graph = comp.graph
    for n, plan in enumerate(getattr(graph, "scans", ())):
        steps = []
        for r1, c1, r2, c2 in plan.members:
            ids = []
            for r in range(r1, r2 + 1):
                b = graph.block_at(plan.sheet, r, c1)
                if b is None or b.out != (r, c1, r, c2):
                    break
                ids.append(b.id)
            else:
                steps.append(ids)
                continue
            break
        else:
            for ids in steps:
                for bid in ids:
                    got[bid] = (n, steps)
    comp._scan_index = got
    return got


def compile_scan(comp, bid: int) -> bool:
    """Compile the scan that step ``bid`` belongs to (all its steps); False where ``bid`` is in none or
    the scan is compiled step by step (``comp.scan_notes`` says why)."""
    if os.environ.get("XLMNIST_SCAN") == "0":  # step by step (the closures), for comparison
        return False
    entry = index(comp).get(bid)
    if entry is None:
        return False
    n, steps = entry
    failed = comp.__dict__.setdefault("_scan_failed", set())
    if n in failed:
        return False
    plan = comp.graph.scans[n]
    all_steps = [s for ids in steps for s in ids]
    if any(s in comp.in_data for s in all_steps):
        failed.add(n)
        return False
    head = bid
    saved = (set(comp.reads.get(head, ())), dict(comp.bad_inputs))
    try:
        sc = _Scan(comp, plan, steps, head).build()
        run, dynamic, members = sc.run, sc.dynamic, sc.members
    except (NotScan, FormulaError) as exc:
        failed.add(n)
        comp.reads[head] = saved[0]
        comp.bad_inputs.clear()
        comp.bad_inputs.update(saved[1])
        _note(comp, f"scan: the recurrence {_names(comp, plan)} runs step by step ({exc})")
        return False
    where = _names(comp, plan)
    aliases = comp.__dict__.setdefault("scan_alias", {})
    if not dynamic:  # no trainable cell behind it: its values, once
        with torch.no_grad():
            vals = run({}, values=True)
        for m in members:
            for k, s in enumerate(m.steps):
                _fold(comp, comp.graph.blocks[s], vals[m.i][k])
                comp.compiled[s] = False
        _note(comp, f"scan: {where}, {plan.hi - plan.lo + 1} rows, folded (no trainable cell behind it)")
        return True
    comp.compiled[head] = True
    comp.steps.append((head, _Expr(fn=run)))
    for s in all_steps:
        if s != head:
            comp.compiled[s] = True
            comp.reads[s] = {head}
            aliases[s] = head
            comp.steps.append((s, _Expr(fn=lambda env, s=s: env[s])))
    sc.where = where
    comp.__dict__.setdefault("scan_heads", {})[head] = sc
    _note(comp, f"scan: {where}, {plan.hi - plan.lo + 1} rows, one loop over the rows (compiled once)")
    return True


def _names(comp, plan) -> str:
    from xlmnist.xlsx.refs import area_name

    return ", ".join(area_name(plan.sheet, *m) for m in plan.members)


def _note(comp, text: str) -> None:
    comp.__dict__.setdefault("scan_notes", []).append(text)


def _fold(comp, b, v: Value) -> None:
    """A constant step's value into the constant grids (as ``compile_blocks`` folds a constant block)."""
    r, c1, _, c2 = b.out
    W = c2 - c1 + 1
    t = v.t
    if t.shape[2] != 1 or t.shape[3] != 1:
        raise FormulaError(f"{b.anchor}: the formula gives a range, not one value")
    out = t[:, :, 0, 0].expand(1, W).detach().cpu().numpy()
    sl = (slice(r, r + 1), slice(c1, c2 + 1))
    comp.cnum[b.sheet][sl] = out
    kind = np.where(np.isfinite(out), NUM, ERR).astype(np.int8)
    if v.kind is not None:
        kind = np.where(np.isfinite(out), np.broadcast_to(v.kind[:, :, 0, 0], (1, W)), kind)
        kind[kind == EMPTY] = NUM  # =A5 of an empty A5 is 0
    if v.s is not None:
        if comp.cstr[b.sheet] is None:
            comp.cstr[b.sheet] = np.full(comp.cnum[b.sheet].shape, None, object)
        s = np.broadcast_to(v.s[:, :, 0, 0], (1, W))
        comp.cstr[b.sheet][sl] = s
        kind = np.where(s != None, TEXT, kind)  # noqa: E711
    comp.ckind[b.sheet][sl] = kind
