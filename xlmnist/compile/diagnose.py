"""Why a compiled objective evaluates to an error (NaN or infinity where the sheet needs a number): the first
failing cell of the blocks it reads, and the cause (an input of the wrong kind, an error value written into
the formula, or invalid math)."""

from __future__ import annotations

import re
from typing import NoReturn

import torch

from xlmnist.errors import FormulaError
from xlmnist.xlsx.refs import cell_name


def diagnose(model) -> NoReturn:
    """Raise the :class:`FormulaError` that says which cell of the objective's blocks first evaluates to an
    error, and why (an input of the wrong kind, an error literal in the formula, or invalid math)."""
    c = model._c
    with torch.no_grad():
        env = c.run(model.initial_params())
    for bid, _ in model._obj_steps:
        bad = (~torch.isfinite(env[bid])).nonzero()
        if len(bad):
            b = c.graph.blocks[bid]
            where = cell_name(b.sheet, b.out[0] + int(bad[0][0]), b.out[1] + int(bad[0][1]))
            cause = c.bad_inputs.get(bid)
            literal = error_literal(c.wb.sheets[b.sheet].formula((b.r0, b.c0)))
            why = (
                f"{cause} where a number is needed"
                if cause
                else f"the formula holds the error {literal}"
                if literal
                else "#DIV/0! or #NUM! (division by zero or invalid math)"
            )
            raise FormulaError(f"{where}: evaluates to an error: {why}")
    raise FormulaError(f"{model.objective_ref}: the objective evaluates to an error")


_ERROR_LITERAL = re.compile(r'"(?:[^"]|"")*"|(#REF!|#N/A|#NAME\?|#VALUE!|#NULL!|#NUM!|#DIV/0!)')


def error_literal(text: str) -> str | None:
    """The first error value written into a formula's text (``=A1+#REF!`` after a deleted column), if any."""
    for m in _ERROR_LITERAL.finditer(text or ""):
        if m.group(1):
            return m.group(1)
    return None
