"""A parsed formula moved as Excel copies it: relative references shift, absolute ones stay (used to
parse a split block's steps once, :meth:`xlmnist.formula.graph.Graph.analyse`)."""

from __future__ import annotations

from xlmnist.formula import parser as P


def shift(node, dr: int, dc: int):
    """A parsed formula as copied ``dr`` rows down and ``dc`` columns right (relative references move)."""
    T = type(node)
    if T is P.Ref:
        r1, r2 = node.r1 + (0 if node.ar1 else dr), node.r2 + (0 if node.ar2 else dr)
        c1, c2 = node.c1 + (0 if node.ac1 else dc), node.c2 + (0 if node.ac2 else dc)
        ar1, ar2, ac1, ac2 = node.ar1, node.ar2, node.ac1, node.ac2
        if r1 > r2:
            r1, r2, ar1, ar2 = r2, r1, ar2, ar1
        if c1 > c2:
            c1, c2, ac1, ac2 = c2, c1, ac2, ac1
        return P.Ref(node.sheet, r1, c1, r2, c2, ar1, ac1, ar2, ac2)
    return P.map_operands(node, lambda a: shift(a, dr, dc))
