"""Excel's saved values for a formula the compiler cannot translate, where nothing it reads can change.

A course workbook prepares its data with whatever Excel offers (``LEN``, ``LEFT``, dates, ``NORM.INV`` of
fixed numbers ...): functions this compiler does not translate to torch. Where such a formula reads no
trainable cell, no row of the data range (which a dataset replaces), nothing random or volatile (``RAND``,
``NOW``, ``OFFSET``, ``INDIRECT`` ...) and only cells that are constants themselves, its value cannot change
while the model trains: Excel's saved (cached) values are exactly what Excel would compute, and the block
is a constant with those values, as a compiled constant block is. Every cell must have a saved value (a
file written by openpyxl has none: then the formula is refused as before).

:meth:`Compiler.compile_blocks` asks :func:`stand_in` when a block's formula uses an unsupported function;
``Compiler.saved`` lists the blocks so read, with why (``XLMNIST_DEBUG=1`` prints them; ``xlmnist verify``
turns this off, ``Compiler.use_saved = False``, and reports them as not compiled).
"""

from __future__ import annotations

from xlmnist.compile.debug import ops
from xlmnist.compile.functions import EMPTY

VOLATILE = {"RAND", "RANDBETWEEN", "RANDARRAY", "NOW", "TODAY", "OFFSET", "INDIRECT", "CELL", "INFO"}


def stand_in(comp, b, why: str) -> bool:
    """Whether Excel's saved values of block ``b`` (already in the value grids) stand for its formula; if so
    the block is recorded as a constant."""
    if not getattr(comp, "use_saved", True) or ops(b.ast) & VOLATILE:
        return False
    if any(comp.compiled.get(d) is not False or d in comp.random for d in b.deps):
        return False  # it reads a block that changes (or one not compiled)
    for use in b.refs:
        r1, c1, r2, c2 = use.footprint(b.R, b.C)
        comp._cover(use.sheet, r1, c1, r2, c2, "range")
        if (comp._grid_slice(comp.src[use.sheet], r1, c1, r2, c2, -1) <= -2).any():
            return False  # a trainable cell or the data rows
    r1, c1, r2, c2 = b.out
    comp._cover(b.sheet, r1, c1, r2, c2, "formula block")
    if (comp.ckind[b.sheet][r1 : r2 + 1, c1 : c2 + 1] == EMPTY).any():
        return False  # a cell without a saved value
    comp.compiled[b.id] = False
    comp.saved[b.id] = why
    return True
