"""``xlmnist verify BOOK``: every formula cell the compiler can compile, against the values the file cached
(what Excel saved) or against a forced LibreOffice recalculation (``--oracle libreoffice``).

pycel's ``validate_calcs``, for the whole book: each block of the workbook (or of ``--sheet``) is compiled
on its own, without trainable cells, so all of it folds to constants; a block that cannot be compiled is
counted under its reason and the run goes on (the blocks reading it under "depends on a cell not
compiled"). Cells that depend on RAND() & co. are counted as ``random``, not compared.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from xlmnist import oracle as lo
from xlmnist.compile.compiler import Compiler
from xlmnist.compile.values import BOOL, EMPTY, ERR, NUM, TEXT
from xlmnist.errors import WorkbookError, XlmnistError
from xlmnist.xlsx.reader import XLError, read_workbook
from xlmnist.xlsx.refs import cell_name, parse_cell
from xlmnist.xlsx.sheetxml import CellValues

RTOL, ATOL = 1e-12, 1e-12  # numbers: |a - b| <= ATOL + RTOL * max(|a|, |b|)
DEPENDS = "depends on a cell not compiled"
SHOWN = 20  # differences printed (the JSON lists them all)


class _Error:
    """Our error value (NaN / inf, or a cell holding an error); Excel's kind where we know it."""

    def __init__(self, code: str | None = None):
        self.code = code

    def __str__(self):
        return self.code or "#ERROR"


def _is_error(x) -> bool:
    return isinstance(x, (_Error, XLError, lo.CellError))


def same(ours, ref) -> bool:
    """Whether our value equals the reference's (numbers to RTOL/ATOL, errors by kind where we know it)."""
    if _is_error(ours) or _is_error(ref):
        if not (_is_error(ours) and _is_error(ref)):
            return False
        return ours.code is None or str(ours) == str(ref) if isinstance(ours, _Error) else True
    if isinstance(ours, bool) or isinstance(ref, bool):
        return type(ours) is type(ref) and ours == ref
    if isinstance(ours, str) or isinstance(ref, str):
        return ours == ref
    a, b = float(ours), float(ref)
    return abs(a - b) <= ATOL + RTOL * max(abs(a), abs(b))


def _plain(x):
    """A value as JSON writes it (errors as their text)."""
    if _is_error(x):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


# ---- the blocks, compiled one by one ------------------------------------------------------------------
def _order(graph, roots: list[int], failed: dict[int, str]) -> list[int]:
    """``roots`` and what they read, dependencies first; blocks that cannot be analysed, sit on a cycle or
    read such a block go into ``failed`` (block id -> reason) instead."""
    order, state = [], {}  # state: 1 on the stack, 2 done
    for root in roots:
        if root in state:
            continue
        stack = [(root, None)]
        while stack:
            bid, it = stack[-1]
            if it is None:
                b = graph.blocks[bid]
                try:
                    graph.analyse(b)
                except XlmnistError as exc:
                    failed[bid] = _reason(exc)
                except Exception as exc:  # noqa: BLE001 - a parser bug must not stop the check of the rest
                    failed[bid] = f"internal error: {type(exc).__name__}: {exc}"
                    state[bid] = 2
                    stack.pop()
                    continue
                state[bid] = 1
                it = iter(b.deps)
                stack[-1] = (bid, it)
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                state[bid] = 2
                if bid not in failed:
                    bad = [d for d in graph.blocks[bid].deps if d in failed]
                    if bad:
                        failed[bid] = DEPENDS
                    else:
                        order.append(bid)
                continue
            if state.get(nxt) == 1:
                failed[bid] = failed[nxt] = "circular reference"
                continue
            if nxt not in state:
                stack.append((nxt, None))
    return order


def _reason(exc: Exception) -> str:
    """The message without the ``sheet!A1:`` it starts with: the same reason for every cell."""
    msg = str(exc)
    head, sep, rest = msg.partition(": ")
    return rest if sep and "!" in head else msg


def _cell_values(comp: Compiler, b) -> np.ndarray:
    """Our values of block ``b``'s cells (object array: float, bool, str or _Error)."""
    r1, c1, r2, c2 = b.out
    sl = (slice(r1, r2 + 1), slice(c1, c2 + 1))
    num, kind = comp.cnum[b.sheet][sl], comp.ckind[b.sheet][sl]
    strs = comp.cstr[b.sheet]
    out = num.astype(object)
    for (i, j), k in np.ndenumerate(kind):
        if k == NUM and not math.isfinite(num[i, j]):
            out[i, j] = _Error()  # inf is #DIV/0! or #NUM! (EXP overflow): the kind is not known
        elif k == BOOL:
            out[i, j] = bool(num[i, j])
        elif k == TEXT:
            out[i, j] = strs[r1 + i, c1 + j] if strs is not None else ""
        elif k == ERR:
            out[i, j] = _Error()
        elif k == EMPTY:
            out[i, j] = 0.0
    return out


def _reference(values, r1, c1, r2, c2) -> np.ndarray:
    """The reference values of a rectangle (object array; None where the cell has none)."""
    out = np.full((r2 - r1 + 1, c2 - c1 + 1), None, object)
    if isinstance(values, CellValues):
        num, has = values.num, values.has
        sub_has = has[r1 : r2 + 1, c1 : c2 + 1]
        sub = num[r1 : r2 + 1, c1 : c2 + 1]
        h, w = sub_has.shape
        out[:h, :w][sub_has] = sub[sub_has].astype(object)
        for (r, c), v in values.other.items():
            if r1 <= r <= r2 and c1 <= c <= c2:
                out[r - r1, c - c1] = v
        return out
    for i in range(r2 - r1 + 1):
        for j in range(c2 - c1 + 1):
            out[i, j] = values.get((r1 + i, c1 + j))
    return out


def verify(path, sheet: str | None = None, oracle: str = "cached", seed: int | None = None) -> dict:
    """Compare every compiled formula cell of ``path`` (of ``sheet``) with the cached values or LibreOffice.

    Returns ``{"cells", "compiled", "equal", "different", "random", "uncached", "not_compiled": {reason:
    cells}, "differences": [{"cell", "xlmnist", "excel"[, "libreoffice"]}]}``."""
    if oracle not in ("cached", "libreoffice"):
        raise WorkbookError(f"--oracle must be cached or libreoffice, not {oracle!r}")
    wb = read_workbook(path)
    sheets = [wb.sheet(sheet).name] if sheet is not None else list(wb.order)
    cached = {s: wb.sheets[s].values for s in wb.order}
    recalculated = None
    if oracle == "libreoffice":
        recalculated = {
            s: {parse_cell(ref): v for ref, v in cells.items()} for s, cells in lo.recalc(path).items()
        }
    comp = Compiler(wb)
    comp.use_saved = False  # (a formula not compiled is reported as such, not read back from the file)
    if seed is not None:
        comp.reseed(seed)
    graph = comp.graph
    roots = [b.id for b in graph.blocks if b.sheet in sheets]
    failed: dict[int, str] = {}
    for bid in _order(graph, roots, failed):
        if any(d in failed for d in graph.blocks[bid].deps):
            failed[bid] = DEPENDS
            continue
        try:
            comp.compile_blocks([bid])
        except XlmnistError as exc:
            failed[bid] = _reason(exc)
        except Exception as exc:  # noqa: BLE001 - a compiler bug must not stop the check of the rest
            failed[bid] = f"internal error: {type(exc).__name__}: {exc}"
    out = {"book": os.fspath(path), "oracle": oracle, "cells": 0, "compiled": 0, "equal": 0, "different": 0}
    out |= {"random": 0, "uncached": 0, "not_compiled": {}, "differences": []}
    for bid in roots:
        b = graph.blocks[bid]
        r1, c1, r2, c2 = b.out
        n = (r2 - r1 + 1) * (c2 - c1 + 1)
        out["cells"] += n
        if bid in failed or bid not in comp.compiled:
            why = failed.get(bid, "not compiled")
            out["not_compiled"][why] = out["not_compiled"].get(why, 0) + n
            continue
        out["compiled"] += n
        if comp.compiled[bid] or bid in comp.random:
            out["random"] += n
            continue
        ours = _cell_values(comp, b)
        excel = _reference(cached[b.sheet], *b.out)
        ref = excel if recalculated is None else _reference(recalculated.get(b.sheet, {}), *b.out)
        for (i, j), x in np.ndenumerate(ours):
            want = ref[i, j]
            if want is None and recalculated is None:  # the file has no cached value (openpyxl wrote it)
                out["uncached"] += 1
                continue
            if same(x, want) if want is not None else isinstance(x, str) and x == "":
                # LibreOffice writes an empty text result as no value
                out["equal"] += 1
                continue
            out["different"] += 1
            diff = {"cell": cell_name(b.sheet, r1 + i, c1 + j), "xlmnist": _plain(x)}
            diff["excel"] = _plain(excel[i, j])
            if recalculated is not None:
                diff["libreoffice"] = _plain(want)
            out["differences"].append(((wb.order.index(b.sheet), r1 + i, c1 + j), diff))
    out["differences"] = [d for _, d in sorted(out["differences"], key=lambda kd: kd[0])]
    return out


def report(res: dict) -> str:
    """The text ``xlmnist verify`` prints."""
    ref = "the cached values" if res["oracle"] == "cached" else "LibreOffice's recalculation"
    nc = sum(res["not_compiled"].values())
    lines = [
        f"{res['book']}: {res['cells']} formula cells; {res['compiled']} compiled, {nc} not compiled",
        f"against {ref}: {res['equal']} equal, {res['different']} different, {res['random']} random "
        f"(RAND), {res['uncached']} without a cached value",
    ]
    for why, n in sorted(res["not_compiled"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  not compiled: {n} cells: {why}")
    for d in res["differences"][:SHOWN]:
        other = f", libreoffice {d['libreoffice']!r}" if "libreoffice" in d else ""
        lines.append(f"  different: {d['cell']}: xlmnist {d['xlmnist']!r}, excel {d['excel']!r}{other}")
    if len(res["differences"]) > SHOWN:
        lines.append(f"  ... and {len(res['differences']) - SHOWN} more (--json lists them all)")
    return "\n".join(lines)


def _cmd(args) -> int:
    res = verify(args.book, sheet=args.sheet, oracle=args.oracle, seed=args.seed)
    print(json.dumps(res) if args.json else report(res))
    return 1 if res["different"] else 0


def register(sub) -> None:
    p = sub.add_parser(
        "verify",
        help="compare every formula cell xlmnist compiles with the file's cached values (or LibreOffice)",
        description="Evaluates every formula cell the compiler can compile and compares it with the values "
        "the file cached (what Excel saved) or, with --oracle libreoffice, with a forced LibreOffice "
        "recalculation. Exit status: 0 when no cell differs, 1 when some do, 2 on bad input.",
    )
    p.add_argument("book", help="the .xlsx workbook")
    p.add_argument("--sheet", help="only the formula cells of this sheet (default: every sheet)")
    p.add_argument("--oracle", choices=("cached", "libreoffice"), default="cached", help="default: cached")
    p.add_argument("--seed", type=int, help="seed of RAND() & co. (their cells are counted, not compared)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd)
