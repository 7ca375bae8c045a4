"""``XLMNIST_DEBUG=1|2|3``: what the compiler made of a sheet, graded.

1. the blocks (:func:`describe`, :meth:`CompiledModel.describe`) and whether the objective runs as the lowered program or
   block by block (``closures``, with the reason);
2. also the lowered program's generated source;
3. also every rewrite the lowering applied and every block that runs its compiled closure, with why.

Printed on stderr (``train --json`` keeps stdout for its JSON) when a workbook is compiled.
"""

from __future__ import annotations

import dataclasses
import os


def level() -> int:
    """The ``XLMNIST_DEBUG`` level (0 when unset or not a number)."""
    try:
        return max(0, int(os.environ.get("XLMNIST_DEBUG", "0") or 0))
    except ValueError:
        return 0


def ops(node) -> set[str]:
    """The function names and operators a formula AST uses."""
    out: set[str] = set()
    todo = [node]
    while todo:
        n = todo.pop()
        if isinstance(n, (list, tuple)):
            todo += n
            continue
        if not dataclasses.is_dataclass(n):
            continue
        name = getattr(n, "name", None) if hasattr(n, "args") else None
        if name is not None:
            out.add(name)
        if isinstance(getattr(n, "op", None), str):
            out.add(n.op)
        todo += [getattr(n, f.name) for f in dataclasses.fields(n)]
    return out


def describe(model, program: bool = True) -> str:
    """The blocks of a :class:`~xlmnist.compile.model.CompiledModel` (shape, kind, functions, formula)
    and, with ``program``, the objective program."""
    c = model._c
    lines = [f"objective {model.objective_ref} ({model.sense}), params {', '.join(model.param_refs)}"]
    aliases, heads = c.__dict__.get("scan_alias", {}), c.__dict__.get("scan_heads", {})
    for bid, dyn in c.compiled.items():
        if bid in aliases:  # a row of a running recurrence: the recurrence is listed once, below
            continue
        if bid in heads:
            sc = heads[bid]
            lines.append(
                f"  running recurrence {sc.where}: one loop over its rows, each formula compiled once"
            )
            continue
        b = c.graph.blocks[bid]
        r1, c1, r2, c2 = b.out
        kind = "trainable-dependent" if dyn else "constant (folded)"
        used = sorted(ops(b.ast))
        text = c.wb.sheets[b.sheet].formula((b.r0, b.c0))
        lines.append(f"  {b.name:<24} [{r2 - r1 + 1}x{c2 - c1 + 1}] {kind:<20} ops={','.join(used)}  ={text}")
    if program and model._prog is not None:
        lines.append("objective program (generated):")
        lines += ["  " + x for x in model._prog.source.splitlines()]
    elif program:
        lines.append(f"objective program: closures ({model.fallback_reason})")
    return "\n".join(lines)


def report(model, lvl: int) -> str:
    """The debug text of a compiled model at level ``lvl``."""
    lines = [describe(model, program=False)]
    why = f" ({model.fallback_reason})" if model.fallback_reason else ""
    lines.append(f"objective program: {model.program_kind}{why}")
    for bid, why in model.compiler.saved.items():  # (xlmnist.compile.saved)
        b = model.compiler.graph.blocks[bid]
        lines.append(
            f"{b.name}: Excel's saved values, not compiled ({why.split(': ', 1)[-1]}; it reads nothing that changes)"
        )
    prog = model._prog
    if prog is not None and lvl >= 2:
        lines.append("objective program (generated):")
        lines += ["  " + x for x in prog.source.splitlines()]
    if prog is not None and lvl >= 3:
        lines.append("lowering (rewrites and fallbacks):")
        lines += ["  " + x for x in prog.notes] or ["  (none)"]
    scans = model.compiler.__dict__.get("scan_notes")
    if scans and lvl >= 3:  # how each running recurrence was compiled (xlmnist.compile.scan)
        lines.append("running recurrences:")
        lines += ["  " + x for x in scans]
    return "\n".join(lines)
