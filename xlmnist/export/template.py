"""The fixed parts of the exported module's source (codegen.py fills in the rest)."""

TEMPLATE_TAIL = '''

def _area(wb, sheet, r1, c1, r2, c2, cached=False):
    """Cell values of sheet!r1c1:r2c2 as a numpy array (float64, or object when it holds text)."""
    import numpy as np

    values = wb.sheet(sheet).values
    out = np.empty((r2 - r1 + 1, c2 - c1 + 1), dtype=object)
    for r in range(r1, r2 + 1):
        for c in range(c1, c2 + 1):
            v = values.get((r, c))
            if v is None:
                if cached:
                    raise SystemExit(f"{sheet}!R{r}C{c}: no cached value; recalculate and save the workbook first")
                v = 0.0
            out[r - r1, c - c1] = v
    try:
        return out.astype(np.float64)
    except (TypeError, ValueError):
        return out


def read_data(book):
    """(x, y) of BOOK: the model's input columns and the loss's label columns, recomputed from raw cells."""
    import numpy as np
    from xlmnist.xlsx.reader import read_workbook

    wb = read_workbook(book)
@FEAT@
    return x, y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("book", help="the workbook to read the data rows from")
    parser.add_argument("--json", action="store_true", help="print {objective, predictions, weights} as JSON")
    parser.add_argument(
        "--weights",
        choices=("baked", "book"),
        default="baked",
        help="baked (default): the weights saved at export time; book: read them from BOOK's trainable cells",
    )
    args = parser.parse_args(argv)
    x, y = read_data(args.book)
    model = Model(book_weights(args.book) if args.weights == "book" else None)
    with torch.no_grad():
        pred = model(x)
        objective = float(loss_fn(pred, y))
    preds = pred[:, 0].tolist() if pred.shape[1] == 1 else pred.tolist()
    if args.json:
        print(json.dumps({"objective": objective, "predictions": preds, "weights": args.weights}))
    else:
        print(f"weights: {'from ' + args.book if args.weights == 'book' else 'baked in at export (--weights book reads the workbook)'}")
        print(f"objective ({OBJECTIVE}): {objective!r}")
        print(f"predictions ({PREDICTIONS}): {len(preds)} rows, first {preds[:5]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


BOOK_PARAMS = '''

def book_weights(book):
    """The state dict read from BOOK's trainable cells (WEIGHTS says where each tensor lives)."""
    import numpy as np
    from xlmnist.xlsx.reader import read_workbook

    wb = read_workbook(book)
    out = {}
    for key, (kind, parts) in WEIGHTS.items():
        arrays = []
        for sheet, r1, c1, r2, c2, transposed, index in parts:
            w = _area(wb, sheet, r1, c1, r2, c2, cached=True)
            w = w.T if transposed else w
            arrays.append(w if kind == "r" else (w[index].T if kind == "w" else np.atleast_1d(w[index])))
        out[key] = torch.from_numpy(np.concatenate(arrays, 0).astype(np.float64))
    return out
'''


# Lookups with cell-dependent positions in the general form. Each helper mirrors, operation for
# operation, the compiler's builder named in its docstring (xlmnist.compile.gather / functions.lookup);
# tests/export/test_gather_helpers.py checks them against the compiler on the same inputs. Values are laid
# out as the compiler's: [rows, cols, h, w] (a per-cell value has h = w = 1).
GATHER_HELPERS = '''

def _w(x):
    """x as [rows, cols, h, w]: a block's [rows, cols] values (or a number) get h = w = 1."""
    t = _t(x)
    return t if t.dim() == 4 else t.reshape(*(t.shape if t.dim() == 2 else (1, 1)), 1, 1)


def _one(x):
    """A lookup's [rows, cols, 1, 1] result as the block's [rows, cols] values."""
    if x.shape[2:] != (1, 1):
        raise ValueError("a lookup gave a range where one value per cell was expected (a position 0?)")
    return x[:, :, 0, 0]


def _pos(x):
    """Positions (gather.positions): one whole number per cell (truncated, as Excel), no gradient."""
    t = _w(x).detach()
    if t.shape[2] * t.shape[3] != 1:
        raise ValueError("a position must be one number per cell")
    return torch.trunc(t)


def _whole(n, dim, like):
    """0, 1, ..., n-1 along ``dim`` (gather._whole): every row or column of a table."""
    shape = [1, 1, 1, 1]
    shape[dim] = n
    return torch.arange(n, dtype=like.dtype, device=like.device).reshape(shape)


def _zero(x):
    """A constant position 0 (gather._zero): the whole row or column."""
    return x.numel() == 1 and not x.requires_grad and float(x.reshape(())) == 0.0


def _take(table, ri, ci):
    """table[..., ri, ci] per cell (gather.take), 0-based float indexes; outside the table: NaN (#REF!)."""
    h, w = table.shape[2], table.shape[3]
    R = max(table.shape[0], ri.shape[0], ci.shape[0])
    C = max(table.shape[1], ri.shape[1], ci.shape[1])
    ok = (ri >= 0) & (ri < h) & (ci >= 0) & (ci < w)
    flat = (torch.where(ok, ri, 0.0) * w + torch.where(ok, ci, 0.0)).long().expand(R, C, -1, -1)
    hh, ww = flat.shape[2], flat.shape[3]
    if table.shape[0] == 1 and table.shape[1] == 1:
        out = table.reshape(-1)[flat]
    else:
        out = table.expand(R, C, h, w).reshape(R, C, h * w).gather(2, flat.reshape(R, C, hh * ww))
        out = out.reshape(R, C, hh, ww)
    ok = ok.expand(R, C, hh, ww)
    if not bool(ok.all()):
        out = torch.where(ok, out, torch.full_like(out, float("nan")))
    return out


def _gindex(table, r, c=None):
    """INDEX with per-cell positions (gather.index); a constant position 0 is the whole row/column."""
    h, w = table.shape[2], table.shape[3]
    if c is None and h == 1:
        r, c = None, r
    ri = _whole(h, 2, table) if r is None or _zero(r) else _pos(r) - 1
    ci = _whole(w, 3, table) if c is None or _zero(c) else _pos(c) - 1
    return _take(table, ri, ci)


def _fixed(x):
    """One constant, finite position for all cells (lookup._fixed): INDEX slices instead of gathering."""
    return x.numel() == 1 and not x.requires_grad and bool(torch.isfinite(x).all())


def _index(table, r, c=None):
    """INDEX(table, r, [c]) (lookup.f_index)."""
    r, c = _w(r), (None if c is None else _w(c))
    if not all(_fixed(a) for a in (r, c) if a is not None):
        return _gindex(table, r, c)
    h, w = table.shape[2], table.shape[3]
    i, j = int(r.reshape(()).item()), (0 if c is None else int(c.reshape(()).item()))
    if h == 1 and c is None:
        i, j = 1, i
    if i > h or j > w or i < 0 or j < 0:
        raise ValueError("INDEX out of range (#REF!)")
    return table[:, :, slice(None) if i == 0 else slice(i - 1, i), slice(None) if j == 0 else slice(j - 1, j)]


def _match(key, values, mode=1, last=False, strict=False):
    """Positions (1-based, NaN = #N/A) of ``key`` in the one-row or one-column ``values``, over numbers.
    mode 0: the first equal value (the last with ``last``); 1: the last value <= key; -1: the last value
    >= key (lookup._match_numbers, MATCH on sorted data); 2 / -2: the smallest value >= key / the largest
    <= key, its first position (XLOOKUP's, gather.match). ``strict``: a key that is not a finite number
    finds nothing (gather.match, used by VLOOKUP, HLOOKUP and XLOOKUP)."""
    k, v = _w(key).detach(), _w(values).detach()
    if k.shape[2] * k.shape[3] != 1 or 1 not in v.shape[2:]:
        raise ValueError("MATCH needs one lookup value and a one-row or one-column range")
    R, C = max(k.shape[0], v.shape[0]), max(k.shape[1], v.shape[1])
    n = v.shape[2] * v.shape[3]
    flat = v.expand(R, C, *v.shape[2:]).reshape(R, C, n)
    k = k.expand(R, C, 1, 1).reshape(R, C, 1)
    pos = torch.arange(1, n + 1, dtype=flat.dtype, device=flat.device)
    none, inf = torch.zeros_like(pos), torch.full_like(pos, float("inf"))
    if mode == 0 and last:
        idx = torch.where(flat == k, pos, none).amax(-1)
    elif mode == 0:
        idx = torch.where(flat == k, pos, inf).amin(-1)
    elif mode in (1, -1):
        idx = torch.where(flat <= k if mode == 1 else flat >= k, pos, none).amax(-1)
    else:
        hit = flat >= k if mode == 2 else flat <= k
        far = inf if mode == 2 else -inf
        best = torch.where(hit, flat, far)
        best = best.amin(-1, keepdim=True) if mode == 2 else best.amax(-1, keepdim=True)
        idx = torch.where(hit & (flat == best), pos, inf).amin(-1)
    idx = torch.where((idx == 0) | torch.isinf(idx), torch.full_like(idx, float("nan")), idx)
    if strict:
        idx = torch.where(torch.isfinite(k[:, :, 0]), idx, torch.full_like(idx, float("nan")))
    return idx.reshape(R, C, 1, 1)


def _vlookup(key, table, col, exact):
    """VLOOKUP (gather.f_vlookup): MATCH in the table's first column, then INDEX."""
    return _gindex(table, _match(key, table[:, :, :, 0:1], 0 if exact else 1, strict=True), _w(col))


def _hlookup(key, table, row, exact):
    """HLOOKUP (gather.f_hlookup): MATCH in the table's first row, then INDEX."""
    return _gindex(table, _w(row), _match(key, table[:, :, 0:1, :], 0 if exact else 1, strict=True))


def _xlookup(key, look, ret, missing, mode, last):
    """XLOOKUP (gather.f_xlookup); ``missing`` (if_not_found) None when not given."""
    look, ret = _w(look), _w(ret)
    pos = _match(key, look, mode, last, strict=True)
    if look.shape[3] == 1:
        out = _take(ret, pos - 1, _whole(ret.shape[3], 3, ret))
    else:
        out = _take(ret, _whole(ret.shape[2], 2, ret), pos - 1)
    return out if missing is None else torch.where(torch.isnan(pos), _w(missing), out)


def _offset(reach, rows, cols, top, left, h, w):
    """OFFSET with cell-dependent offsets (gather.offset) over ``reach``, the rectangle it can address."""
    ri = _pos(rows) + top + _whole(h, 2, reach)
    ci = _pos(cols) + left + _whole(w, 3, reach)
    return _take(reach, ri, ci)


def _choose(k, *values):
    """CHOOSE (lookup.f_choose): k truncated, per cell; outside 1..n NaN (#VALUE!)."""
    four = any(_t(v).dim() == 4 for v in values)
    k = torch.trunc(_t(k).detach())
    k = _w(k) if four else k
    out = torch.full((1, 1, 1, 1) if four else (1, 1), float("nan"), dtype=torch.float64, device=k.device)
    for i in range(len(values), 0, -1):
        out = torch.where(k == i, _w(values[i - 1]) if four else _t(values[i - 1]), out)
    return out
'''


# ---- the general form (general.py fills in the rest) ---------------------------------------------------
GENERAL_HEAD = '''"""{sheet} of {book} as a PyTorch module, general form (exported by xlmnist).

Run as a script: ``python {out} BOOK --json`` reads BOOK's constant cells and prints the objective
({objective}), computed by ``Model.forward``: one statement per block of copied formulas, over named 2-D
tensors (rows x columns of the block), with the sheet range and formula text as comments; an unrolled
recurrence as one loop over its rows.
Trainable cells (nn.Parameters p0, p1, ...): {params}.

Weights: by default the ones baked in at export time (PARAMS, or the .pt file beside this one), NOT the
values now in the workbook; ``--weights book`` reads them from BOOK's trainable cells instead (e.g. after
``xlmnist train BOOK``), as does ``Model(book_weights(BOOK))``.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

SOURCE = {source}
OBJECTIVE = {objective_lit}
'''

GENERAL_MODEL = '''

def _t(x):
    return torch.as_tensor(x, dtype=torch.float64)


def _full(x, rows, cols):
    """A block's value as its full [rows, cols] area (a formula that does not vary is broadcast)."""
    return torch.broadcast_to(_t(x), (rows, cols))


def _patch(base, r1, c1, pieces):
    """The constant cells ``base`` (at sheet row r1, column c1) with the computed [(tensor, row, col)] over them."""
    out = base.clone()
    h, w = out.shape
    for t, a1, b1 in pieces:
        rs, re_ = max(a1, r1), min(a1 + t.shape[0], r1 + h)
        cs, ce = max(b1, c1), min(b1 + t.shape[1], c1 + w)
        if rs < re_ and cs < ce:
            out[rs - r1 : re_ - r1, cs - c1 : ce - c1] = t[rs - a1 : re_ - a1, cs - b1 : ce - b1]
    return out
'''

GENERAL_CLASS = '''

class Model(nn.Module):
    def __init__(self, weights=None):
        """weights: a state dict (default: the weights baked in at export, see _params / book_weights)."""
        super().__init__()
'''

GENERAL_TAIL = '''

def read_constants(book):
    """{sheet: float64 [rows + 1, cols + 1] tensor} of BOOK's cells (1-based): numbers (TRUE/FALSE 1/0);
    empty 0; text and errors NaN (only a lookup's table may hold them, as xlmnist's compiler reads them)."""
    from xlmnist.xlsx.reader import read_workbook

    wb = read_workbook(book)
    out = {}
    for sheet, (rows, cols) in EXTENT.items():
        k = torch.zeros(rows + 1, cols + 1, dtype=torch.float64)
        for (r, c), v in wb.sheet(sheet).values.items():
            if r <= rows and c <= cols and v is not None:
                k[r, c] = float(v) if isinstance(v, (int, float)) else float("nan")
        out[sheet] = k
    return out


def book_weights(book):
    """The state dict read from BOOK's trainable cells."""
    k = read_constants(book)
    return {f"p{i}": k[s][r1 : r2 + 1, c1 : c2 + 1].clone() for i, (s, r1, c1, r2, c2) in enumerate(PARAMS_AT)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("book", help="the workbook to read the constant cells from")
    parser.add_argument("--json", action="store_true", help="print {objective, weights} as JSON")
    parser.add_argument(
        "--weights",
        choices=("baked", "book"),
        default="baked",
        help="baked (default): the weights saved at export time; book: read them from BOOK's trainable cells",
    )
    args = parser.parse_args(argv)
    model = Model(book_weights(args.book) if args.weights == "book" else None)
    with torch.no_grad():
        objective = float(model(read_constants(args.book)))
    if args.json:
        print(json.dumps({"objective": objective, "weights": args.weights}))
    else:
        print(f"weights: {'from ' + args.book if args.weights == 'book' else 'baked in at export'}")
        print(f"objective ({OBJECTIVE}): {objective!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''
