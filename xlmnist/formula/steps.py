"""A recurrence's steps resolved without parsing again: for a step whose formula holds only plain
references, literals, operators and functions, a template built once per origin and step shape moves the
origin's references (what ``Graph.resolve(shift(parse))`` gives, without either walk)."""

from __future__ import annotations

from xlmnist.formula import parser as P
from xlmnist.formula.blocks import Block, RefUse

POSITION = ("ROW", "COLUMN")  # functions of a reference's position: they do not read its cells


def is_plain(node) -> bool:
    """References (not whole rows or columns), literals, operators and functions other than OFFSET and
    SINGLE: a formula whose resolution is its references', cell by cell."""
    T = type(node)
    if T is P.Ref:
        return node.r2 != P.MAX_ROW and node.c2 != P.MAX_COL
    if T is P.Call:
        return node.name not in ("OFFSET", "SINGLE") and all(is_plain(a) for a in node.args)
    if T is P.Binary:
        return is_plain(node.left) and is_plain(node.right)
    if T in (P.Unary, P.Percent):
        return is_plain(node.operand)
    return T in (P.Number, P.String, P.Bool, P.Error, P.Missing, P.Array)


def template(node, b: Block, graph):
    """``(rows, cols, refs) -> node resolved for b's shape, moved`` (``Graph._plain_step``), or None where a
    reference is not a plain one (left to ``Graph.resolve``, which reports it)."""
    T = type(node)
    if T is P.Ref:
        sheet = node.sheet or b.sheet
        if sheet not in graph.wb.sheets or node.ar1 != node.ar2 or node.ac1 != node.ac2:
            return None
        r1, c1, r2, c2 = node.r1, node.c1, node.r2, node.c2
        mr, mc = not node.ar1, not node.ac1  # the coordinates that move when the formula is copied
        rrel, crel = b.R > 1 and mr, b.C > 1 and mc

        def ref(dr, dc, refs):
            dr, dc = (dr if mr else 0), (dc if mc else 0)
            use = RefUse(sheet, r1 + dr, c1 + dc, r2 + dr, c2 + dc, rrel, crel)
            refs.append(use)
            return use

        return ref
    if T is P.Call:
        name, parts = node.name, [template(a, b, graph) for a in node.args]
        if any(p is None for p in parts):
            return None
        if name in POSITION:  # positions, not values: no dependency (as Graph.resolve)
            return lambda dr, dc, refs: P.Call(name, tuple(p(dr, dc, []) for p in parts))
        return lambda dr, dc, refs: P.Call(name, tuple(p(dr, dc, refs) for p in parts))
    if T is P.Binary:
        op, left, right = node.op, template(node.left, b, graph), template(node.right, b, graph)
        if left is None or right is None:
            return None
        return lambda dr, dc, refs: P.Binary(op, left(dr, dc, refs), right(dr, dc, refs))
    if T is P.Unary or T is P.Percent:
        inner = template(node.operand, b, graph)
        if inner is None:
            return None
        if T is P.Percent:
            return lambda dr, dc, refs: P.Percent(inner(dr, dc, refs))
        op = node.op
        return lambda dr, dc, refs: P.Unary(op, inner(dr, dc, refs))
    return lambda dr, dc, refs: node
