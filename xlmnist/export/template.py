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
