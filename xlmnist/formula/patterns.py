"""The layer patterns of a course-style sheet, recognised on parsed formulas (one home for each idea).

Lowering (:mod:`xlmnist.compile.lower`), export and the training metrics all ask the same questions of a
formula: is it a ReLU, a sigmoid, an affine SUMPRODUCT/MMULT, a softmax, a cross-entropy? The matchers
here answer them on the AST (:mod:`xlmnist.formula.parser` nodes, or the graph's :class:`RefUse` leaves),
never on formula text. Each returns the interesting sub-nodes, or None when the formula is not that form.
"""

from __future__ import annotations

from collections.abc import Callable

from xlmnist.errors import FormulaError
from xlmnist.formula import parser as P


def is_number(node, value: float) -> bool:
    return isinstance(node, P.Number) and node.value == value


def _call(node, name: str, nargs: int) -> bool:
    return isinstance(node, P.Call) and node.name == name and len(node.args) == nargs


def relu(node):
    """``(x, g0)`` for a ReLU of ``x``, ``g0`` the formula's own gradient at ``x = 0``, else None:

    * ``IF(x<0,0,x)`` / ``IF(x>=0,x,0)``: the x branch at 0, gradient 1;
    * ``IF(x<=0,0,x)`` / ``IF(x>0,x,0)``: the 0 branch at 0, gradient 0;
    * ``MAX(0,x)`` / ``MAX(x,0)``: a tie, gradient 0.5 (as ``torch.maximum``)."""
    if _call(node, "MAX", 2):
        a, b = node.args
        if is_number(a, 0) and not is_number(b, 0):
            return b, 0.5
        if is_number(b, 0):
            return a, 0.5
        return None
    if not _call(node, "IF", 3) or not isinstance(node.args[0], P.Binary):
        return None
    cond, yes, no = node.args
    if not is_number(cond.right, 0):
        return None
    x = cond.left
    if cond.op in ("<", "<=") and is_number(yes, 0) and no == x:
        return x, 1.0 if cond.op == "<" else 0.0
    if cond.op in (">", ">=") and is_number(no, 0) and yes == x:
        return x, 1.0 if cond.op == ">=" else 0.0
    return None


def relu_arg(node):
    """``x`` for any ReLU form of :func:`relu`, else None."""
    m = relu(node)
    return None if m is None else m[0]


def sigmoid_arg(node):
    """``x`` for ``1/(1+EXP(-x))`` (either order of the sum), else None."""
    if not (isinstance(node, P.Binary) and node.op == "/" and is_number(node.left, 1)):
        return None
    d = node.right
    if not (isinstance(d, P.Binary) and d.op == "+"):
        return None
    for one, e in ((d.left, d.right), (d.right, d.left)):
        if is_number(one, 1) and _call(e, "EXP", 1):
            u = e.args[0]
            if isinstance(u, P.Unary) and u.op == "-":
                return u.operand
    return None


def affine(node, is_weight: Callable[[object], bool] = lambda ref: True):
    """``(name, data, weight)`` for ``SUMPRODUCT(a, b)`` / ``MMULT(a, b)`` of two references, ``weight``
    the one ``is_weight`` accepts (the second when both are; MMULT keeps its order: the data on the
    left), else None."""
    if not (isinstance(node, P.Call) and node.name in ("SUMPRODUCT", "MMULT") and len(node.args) == 2):
        return None
    a, b = node.args
    if not all(hasattr(x, "r1") and hasattr(x, "c2") for x in (a, b)):  # P.Ref or graph.RefUse
        return None
    if is_weight(b):
        return node.name, a, b
    if node.name == "SUMPRODUCT" and is_weight(a):
        return node.name, b, a
    return None


def exp_shift(node):
    """``(z, m)`` for ``EXP(z - MAX(m...))`` (the stable softmax numerator), ``(z, None)`` for ``EXP(z)``,
    else None."""
    if not _call(node, "EXP", 1):
        return None
    z = node.args[0]
    if isinstance(z, P.Binary) and z.op == "-" and _call(z.right, "MAX", 1):
        return z.left, z.right.args[0]
    return z, None


def softmax(node):
    """``(z, m, s)`` for ``EXP(z - MAX(m))/SUM(s)`` (``m`` None for ``EXP(z)/SUM(s)``), else None. A
    sheet usually spreads this over three blocks (the EXP column, the SUM, the ratio): match each with
    :func:`exp_shift`, :func:`sum_arg` and :func:`ratio` then."""
    r = ratio(node)
    e = r and exp_shift(r[0])
    s = r and sum_arg(r[1])
    if not e or s is None:
        return None
    return e[0], e[1], s


def ratio(node):
    """``(numerator, denominator)`` of a division, else None."""
    if isinstance(node, P.Binary) and node.op == "/":
        return node.left, node.right
    return None


def sum_arg(node):
    """The one argument of ``SUM(x)``, else None."""
    return node.args[0] if _call(node, "SUM", 1) else None


def cross_entropy(node):
    """``(a, b)`` for ``-LN(SUMPRODUCT(a, b))`` (one-hot times probabilities, either order), else None."""
    if not (isinstance(node, P.Unary) and node.op == "-" and _call(node.operand, "LN", 1)):
        return None
    s = node.operand.args[0]
    if not _call(s, "SUMPRODUCT", 2):
        return None
    return s.args[0], s.args[1]


def is_relu_formula(text: str) -> bool:
    """Whether a formula's text is a ReLU of one cell (``=IF(A1<0,0,A1)``, ``=MAX(0,A1)``, ...)."""
    try:
        node = P.parse(text.strip().lstrip("="))
    except FormulaError:
        return False
    x = relu_arg(node)
    return isinstance(x, P.Ref) and x.sheet is None and (x.r1, x.c1) == (x.r2, x.c2)
