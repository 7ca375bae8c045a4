"""Functions whose value depends on the cell that holds them, not only on their arguments: ROW and
COLUMN (the cell's position) and RAND, RANDBETWEEN, RANDARRAY (a fresh sample per cell at every
evaluation). The function table's builders see only their arguments, so the compiler asks here.

Random values come from the compiler's seeded ``torch.Generator`` (``Compiler.reseed``): every call of
the objective draws new ones (a dropout mask per step), the same sequence for the same seed. A block that
uses one is never constant-folded, nor is any block that reads it.
"""

from __future__ import annotations

import torch

from xlmnist.compile.areas import DATA, _Expr
from xlmnist.compile.values import ExcelError, Value, const_int
from xlmnist.errors import FormulaError
from xlmnist.formula import parser as P
from xlmnist.formula.graph import RefUse

POSITION = ("ROW", "COLUMN")
RANDOM = {"RAND": (0, 0), "RANDBETWEEN": (2, 2), "RANDARRAY": (0, 5)}


def position(comp, node, b) -> _Expr:
    """``ROW([ref])`` / ``COLUMN([ref])``: the (1-based) row/column of ``ref``'s cells, else of the cell."""
    row = node.name == "ROW"
    if len(node.args) > 1:
        raise FormulaError(f"{b.anchor}: {node.name}() takes 0..1 arguments, got {len(node.args)}")
    if node.args:
        use = node.args[0]
        if not isinstance(use, RefUse):
            raise FormulaError(f"{b.anchor}: {node.name}() needs a reference")
        first, moves = (use.r1, use.rrel) if row else (use.c1, use.crel)
        size = use.r2 - use.r1 + 1 if row else use.c2 - use.c1 + 1
    elif b.array:  # {=ROW()} over a range: the rows (columns) of that range
        r1, c1, r2, c2 = b.out
        first, moves, size = (r1, False, r2 - r1 + 1) if row else (c1, False, c2 - c1 + 1)
    else:
        first, moves, size = (b.r0 if row else b.c0), True, 1
    if row and moves:
        comp._uses_row = True  # refused later if the block turns out to follow the data rows
    n = (b.R if row else b.C) if moves else 1
    ctx = comp.ctx
    step = torch.arange(n, dtype=ctx.dtype, device=ctx.device)
    inner = torch.arange(size, dtype=ctx.dtype, device=ctx.device)
    if row:
        t = first + step.reshape(n, 1, 1, 1) + inner.reshape(1, 1, size, 1)
    else:
        t = first + step.reshape(1, n, 1, 1) + inner.reshape(1, 1, 1, size)
    return _Expr(Value(t))


def random(comp, node, b) -> _Expr:
    """RAND() in [0, 1); RANDBETWEEN(lo, hi) a whole number in lo..hi; RANDARRAY([rows], [cols], [min],
    [max], [whole]) a rows x cols array; one sample per cell of the block, drawn at every evaluation."""
    name = node.name
    lo, hi = RANDOM[name]
    if not lo <= len(node.args) <= hi:
        raise FormulaError(f"{b.anchor}: {name}() takes {lo}..{hi} arguments, got {len(node.args)}")
    args = [comp.expr(a, b) for a in node.args]
    comp._random = True
    gen, ctx = comp.gen, comp.ctx
    bid, C = b.id, b.C
    h = w = 1
    if name == "RANDARRAY":
        try:
            h, w = (_size(node.args, args, k) for k in (0, 1))
        except ExcelError as exc:
            raise FormulaError(f"{b.anchor}: RANDARRAY(): rows and columns {exc}") from None
        if h < 1 or w < 1:
            raise FormulaError(f"{b.anchor}: RANDARRAY(): rows and columns must be at least 1 (#VALUE!)")

    def draw(env) -> torch.Tensor:
        rows = env[DATA].shape[0] if bid in comp.aligned else b.R  # a block over the data rows: one each
        return torch.rand((rows, C, h, w), generator=gen, dtype=ctx.dtype, device=ctx.device)

    if name == "RAND":
        return _Expr(fn=lambda env: Value(draw(env)))
    if name == "RANDBETWEEN":
        a, z = args

        def between(env):
            low, high = torch.ceil(a(env).t), torch.floor(z(env).t)
            return Value(torch.floor(draw(env) * (high - low + 1)) + low)

        return _Expr(fn=between)
    rest = args[2:]

    def array(env):
        low = rest[0](env).t if len(rest) > 0 and type(node.args[2]) is not P.Missing else 0.0
        high = rest[1](env).t if len(rest) > 1 and type(node.args[3]) is not P.Missing else 1.0
        whole = len(rest) > 2 and bool((rest[2](env).t != 0).all())
        u = draw(env)
        if whole:
            low, high = torch.ceil(torch.as_tensor(low)), torch.floor(torch.as_tensor(high))
            return Value(torch.floor(u * (high - low + 1)) + low)
        return Value(low + u * (high - low))

    return _Expr(fn=array)


def _size(nodes, args, k: int) -> int:
    """RANDARRAY's rows (k 0) or columns (k 1): 1 when left out."""
    if len(nodes) <= k or type(nodes[k]) is P.Missing:
        return 1
    if args[k].const is None:
        raise ExcelError("must be constants")
    return const_int(args[k].const)
