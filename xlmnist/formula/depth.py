"""How deeply a formula nests, measured without recursion, so that deep formulas give a one-line error
instead of a RecursionError in the parser or in any later pass over the tree."""

from __future__ import annotations

import dataclasses

from openpyxl.formula.tokenizer import Token

from xlmnist.errors import FormulaError
from xlmnist.xlsx import limits

_NESTING = (Token.PAREN, Token.FUNC, Token.ARRAY)


def _too_deep(where: str, depth: int) -> FormulaError:
    return FormulaError(
        f"{where}: formula nested {depth} deep, more than {limits.MAX_FORMULA_DEPTH} (XLMNIST_MAX_FORMULA_DEPTH)"
    )


def check_tokens(tokens: list[Token], where: str) -> None:
    """Parentheses, calls, array constants and runs of prefix operators, before the parser recurses."""
    depth = run = 0
    for tok in tokens:
        if tok.type in _NESTING:
            depth += 1 if tok.subtype == Token.OPEN else -1 if tok.subtype == Token.CLOSE else 0
        run = run + 1 if tok.type == Token.OP_PRE else 0
        if depth + run > limits.MAX_FORMULA_DEPTH:
            raise _too_deep(where, depth + run)


def check_tree(node, where: str) -> None:
    """The AST's depth (a long chain of operators nests too)."""
    stack = [(node, 1)]
    while stack:
        n, d = stack.pop()
        if d > limits.MAX_FORMULA_DEPTH:
            raise _too_deep(where, d)
        for f in dataclasses.fields(n) if dataclasses.is_dataclass(n) else ():
            v = getattr(n, f.name)
            for child in v if isinstance(v, tuple) else (v,):
                if dataclasses.is_dataclass(child):
                    stack.append((child, d + 1))
