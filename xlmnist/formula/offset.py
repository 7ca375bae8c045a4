"""OFFSET as the graph resolves it: with constant arguments the reference it names; with cell-dependent
row/column offsets ``_OFFSET(reach, rows, cols, top, left, h, w)``, a gather over the rectangle it can
address (:mod:`xlmnist.compile.gather`)."""

from __future__ import annotations

from dataclasses import replace

from xlmnist.errors import FormulaError
from xlmnist.formula import parser as P


def resolve_offset(graph, node: P.Call, b):
    """OFFSET with constant arguments is the reference it names; with cell-dependent row/column
    offsets it is ``_OFFSET(reach, rows, cols, top, left, h, w)``, a gather over the rectangle it
    can address (xlmnist.compile.gather)."""
    args = node.args
    nums: list = []
    for a in args[1:]:
        if isinstance(a, P.Missing):
            nums.append(None)
        elif isinstance(a, P.Number):
            nums.append(int(a.value))
        elif isinstance(a, P.Unary) and a.op == "-" and isinstance(a.operand, P.Number):
            nums.append(-int(a.operand.value))
        else:
            nums.append(a)  # cell-dependent
    base = args[0] if args else None
    if isinstance(base, P.StructRef):
        base = graph.struct_ref(base, b)
    if not isinstance(base, P.Ref) or len(nums) < 2:
        raise FormulaError(f"{b.anchor}: OFFSET needs a reference and row/column offsets")
    if any(not isinstance(x, int | None) for x in nums[2:]):
        raise FormulaError(f"{b.anchor}: OFFSET is supported with a constant height and width only")
    h = nums[2] if len(nums) > 2 and nums[2] else base.r2 - base.r1 + 1
    w = nums[3] if len(nums) > 3 and nums[3] else base.c2 - base.c1 + 1
    if not isinstance(nums[0], int | None) or not isinstance(nums[1], int | None):
        return _dyn_offset(graph, base, nums[0], nums[1], h, w, b)
    dr, dc = nums[0] or 0, nums[1] or 0
    r1, c1 = base.r1 + dr, base.c1 + dc
    if r1 < 1 or c1 < 1 or h < 1 or w < 1:
        raise FormulaError(f"{b.anchor}: OFFSET outside the sheet (#REF!)")
    return replace(base, r1=r1, c1=c1, r2=r1 + h - 1, c2=c1 + w - 1, ar2=base.ar1, ac2=base.ac1)


def _dyn_offset(graph, base: P.Ref, rows, cols, h: int, w: int, b):
    """The reach: every row of the sheet (every column) in a cell-dependent direction, the base's
    shifted rows (columns) in a constant one."""
    sh = graph.wb.sheets.get(base.sheet or b.sheet)
    if sh is None:
        raise FormulaError(f"{b.anchor}: reference to a missing sheet {base.sheet!r}")
    if h < 1 or w < 1:
        raise FormulaError(f"{b.anchor}: OFFSET with a height or width below 1 (#REF!)")
    out, moved = [], []
    for off, start, n, fixed, size, limit in (
        (rows, base.r1, h, base.ar1, b.R, sh.max_row),
        (cols, base.c1, w, base.ac1, b.C, sh.max_col),
    ):
        if isinstance(off, int | None):
            out.append((start + (off or 0), start + (off or 0) + n - 1, fixed, 0))
            moved.append(P.Number(0.0))
        else:
            if not fixed and size > 1:
                raise FormulaError(
                    f"{b.anchor}: OFFSET with a cell-dependent offset needs an absolute base ($A$1) "
                    "in the direction it is copied"
                )
            offs = _positions(off, b, rows is off)
            if offs is not None:  # an offset from the cell's own position (2*(ROW()-ROW($K$2))): the
                lo, hi = start + int(offs.min()), start + int(offs.max()) + n - 1  # cells it can reach
                out.append((lo, hi, True, start - lo))
            else:
                out.append((1, max(limit, start + n - 1), True, start - 1))
            moved.append(off)
    (r1, r2, ar, top), (c1, c2, ac, left) = out
    if r1 < 1 or c1 < 1:
        raise FormulaError(f"{b.anchor}: OFFSET outside the sheet (#REF!)")
    reach = P.Ref(base.sheet, r1, c1, r2, c2, ar, ac, ar, ac)
    consts = tuple(P.Number(float(x)) for x in (top, left, h, w))
    return P.Call("_OFFSET", (reach, *moved, *consts))


def _positions(node, b, row: bool):
    """The offset of each of the block's cells ([R, C] numbers) where it depends on the cell's position
    only (numbers, ROW(), COLUMN(), ROW(A1), + - * /, INT): known before anything is computed, so the
    OFFSET reaches only those cells; None for anything else (or a fraction)."""
    import numpy as np

    ii = np.arange(b.R, dtype=np.float64).reshape(-1, 1)
    jj = np.arange(b.C, dtype=np.float64).reshape(1, -1)

    def ev(n):
        T = type(n)
        if T is P.Number:
            return np.full((1, 1), float(n.value))
        if T is P.Unary and n.op in "+-":
            v = ev(n.operand)
            return None if v is None else (v if n.op == "+" else -v)
        if T is P.Binary and n.op in "+-*/":
            a, c = ev(n.left), ev(n.right)
            if a is None or c is None:
                return None
            if n.op == "/":
                return None if (c == 0).any() else a / c
            return {"+": a + c, "-": a - c, "*": a * c}[n.op]
        if T is P.Call and n.name in ("INT", "TRUNC") and len(n.args) == 1:
            v = ev(n.args[0])
            return None if v is None else (np.floor(v) if n.name == "INT" else np.trunc(v))
        if T is P.Call and n.name in ("ROW", "COLUMN") and len(n.args) <= 1 and not b.array:
            is_row = n.name == "ROW"
            if not n.args:
                return b.r0 + ii if is_row else b.c0 + jj
            ref = n.args[0]
            if type(ref) is not P.Ref or ref.sheet not in (None, b.sheet):
                return None
            if is_row:
                return np.full((1, 1), float(ref.r1)) + (0 if ref.ar1 else ii)
            return np.full((1, 1), float(ref.c1)) + (0 if ref.ac1 else jj)
        return None

    v = ev(node)
    if v is None:
        return None
    v = np.broadcast_to(v, (b.R, b.C))
    if not np.isfinite(v).all() or (v != np.round(v)).any():
        return None
    return v
