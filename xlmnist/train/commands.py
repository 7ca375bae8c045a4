"""``xlmnist eval`` and ``xlmnist train``: compile a workbook, evaluate or train it, write results back.

``xlmnist train BOOK`` trains the trainable cells (Solver's ``solver_adj`` or ``xlmnist_params``) to
minimise/maximise the objective cell and writes them into BOOK (or ``--out COPY.xlsx``); ``xlmnist step
BOOK`` does exactly one optimisation step. The work is in :mod:`xlmnist.train.session`; this module is the
CLI glue. A run that diverges (NaN/inf) or collapses to one class writes nothing (``--force`` writes a
collapsed run). Ctrl-C stops and writes the parameters so far.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import zipfile

import torch

from xlmnist.compile import compile_workbook
from xlmnist.errors import WorkbookError, XlmnistError
from xlmnist.export.names import save_names
from xlmnist.train.optim import OPTIMIZERS
from xlmnist.train.session import step_book, train_book
from xlmnist.train.settings import check_book, metrics, to_float
from xlmnist.xlsx.refs import col_letters, quote_sheet, split_ref


def _number(cast, low: float, strict: bool):
    """An argparse type: ``cast(text)``, finite and above ``low`` (``strict``) or at least ``low``."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        ok = math.isfinite(value) and (value > low if strict else value >= low)
        if not ok:
            raise argparse.ArgumentTypeError(f"{text}: must be {'>' if strict else '>='} {low:g}")
        return value

    return parse


POSITIVE_INT, POSITIVE, NON_NEGATIVE = (
    _number(int, 0, True),
    _number(float, 0, True),
    _number(float, 0, False),
)


def _compile(args, device: str = "cpu"):
    book = check_book(args.book)
    try:
        return compile_workbook(
            book,
            sheet=args.sheet,
            objective=args.objective,
            params=args.params,
            dtype=torch.float64,
            device=device,
            seed=getattr(args, "seed", None),
        )
    except XlmnistError:
        raise
    except (zipfile.BadZipFile, KeyError, EOFError, OSError) as exc:
        raise WorkbookError(f"{args.book}: cannot read the workbook ({type(exc).__name__}: {exc})") from exc


def _print(args, payload: dict, text: str) -> None:
    if args.json:
        print(json.dumps(payload))
    else:
        print(text)


def cmd_eval(args) -> int:
    model = _compile(args)
    params = model.initial_params()
    with torch.no_grad():
        obj = to_float(model.objective(params))
        mets = metrics(model, params)
    payload = {
        "book": str(args.book),
        "objective_cell": model.objective_ref,
        "objective": obj,
        "sense": model.sense,
        "params": model.param_refs,
        "metrics": mets,
        "random": model.random,
    }
    extra = "".join(f", {k} {v:.6g}" for k, v in mets.items())
    _print(args, payload, f"{model.objective_ref} = {obj!r} ({model.sense}{extra})")
    return 0


def cmd_train(args) -> int:
    payload = train_book(
        args.book, sheet=args.sheet, objective=args.objective, params=args.params,
        optimizer=args.optimizer, lr=args.lr, epochs=args.epochs, seed=args.seed, device=args.device,
        init=args.init, init_scale=args.init_scale, max_seconds=args.max_seconds, dataset=args.dataset,
        batch_size=args.batch_size, out=args.out, force=args.force, dtype=args.dtype,
        verbose=not (args.quiet or args.json),
    )  # fmt: skip
    mets = payload["metrics"]
    note = " (interrupted: best parameters so far)" if payload["interrupted"] else ""
    extra = "".join(f", {k} {v:.6g}" for k, v in mets.items() if v is not None)
    rows = f" on {payload['dataset_rows']} {payload['dataset']} rows" if payload["dataset"] else ""
    _print(
        args,
        payload,
        f"{payload['objective_cell']}: {payload['initial_objective']!r} -> {payload['objective']!r}{extra}; "
        f"{payload['optimizer']} {payload['steps']} steps{rows}, {payload['seconds']:.2f}s on "
        f"{payload['device']}{note}; wrote {', '.join(payload['params'])} to {payload['book']}",
    )
    if payload.get("diagnosis"):
        print(f"xlmnist: warning: {payload['diagnosis']}", file=sys.stderr)
    _warn_stale(payload)
    if args.save_names:
        _save_names(args, payload)
    return 0


def _warn_stale(payload) -> None:
    """Formula cells that depend on the written cells but keep their old cached value: named, with why."""
    for item in payload.get("stale") or []:
        print(
            f"xlmnist: warning: {item['range']}: not recomputed ({item['why']}); its cached value is stale "
            "until Excel or LibreOffice recalculates (the file asks for a full recalculation on load)",
            file=sys.stderr,
        )


def _absolute(ref: str) -> str:
    sheet, r1, c1, r2, c2 = split_ref(ref)
    one = f"${col_letters(c1)}${r1}"
    return f"{quote_sheet(sheet)}!{one}" + ("" if (r1, c1) == (r2, c2) else f":${col_letters(c2)}${r2}")


def _save_names(args, payload) -> None:
    """``--save-names``: the objective and trainable ranges as the sheet's xlmnist_objective/_params names."""
    if not (args.objective and args.params):
        raise XlmnistError("--save-names stores --objective and --params: give both")
    sheet = split_ref(payload["objective_cell"])[0]
    objective = _absolute(payload["objective_cell"])
    params = ",".join(_absolute(r) for r in payload["params"])
    save_names(payload["book"], sheet, objective, params)
    if not args.json:
        print(
            f"saved names in {payload['book']}: {sheet}!xlmnist_objective = {objective}, xlmnist_params = {params}"
        )


def cmd_step(args) -> int:
    payload = step_book(
        args.book, sheet=args.sheet, objective=args.objective, params=args.params, lr=args.lr,
        optimizer=args.optimizer, seed=args.seed, batch_size=args.batch_size, dataset=args.dataset,
        out=args.out,
    )  # fmt: skip
    rows = f"a minibatch of {payload['batch_rows']} {payload['dataset']} rows (seed {payload['seed']})"
    rows = rows if payload["dataset"] else f"the {payload['batch_rows']} visible rows"
    _print(
        args,
        payload,
        f"{payload['objective_cell']}: {payload['initial_objective']!r} -> {payload['objective']!r}; one "
        f"{payload['optimizer']} step (lr {payload['lr']:g}) on {rows}; wrote {', '.join(payload['params'])} "
        f"and the gradients to {payload['book']}",
    )
    _warn_stale(payload)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("book", help="the .xlsx workbook")
    p.add_argument("--sheet", help="model sheet (default: the active sheet with Solver/xlmnist names)")
    p.add_argument(
        "--objective", help="objective cell, e.g. nnet!AH1 (default: solver_opt / xlmnist_objective)"
    )
    p.add_argument(
        "--params", help="trainable ranges, e.g. nnet!R4:AA5 (default: solver_adj / xlmnist_params)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def register(sub) -> None:
    p = sub.add_parser("eval", help="print the compiled objective for the current cell values")
    _common(p)
    p.add_argument("--seed", type=int, help="seed of RAND() & co. (default: fresh samples)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "train", help="train the trainable cells and write them back (Excel Solver, but PyTorch)"
    )
    _common(p)
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        help="default: settings sheet, else auto (L-BFGS up to 50k parameters, else Adam)",
    )
    p.add_argument("--lr", type=POSITIVE, help="learning rate (default: settings sheet, else per optimizer)")
    p.add_argument(
        "--epochs", type=POSITIVE_INT, help="maximum steps (default: settings sheet, else per optimizer)"
    )
    p.add_argument("--seed", type=int, help="random seed (default: settings sheet, else 0)")
    p.add_argument("--device", help="cpu, cuda or auto (default: settings sheet, else cpu)")
    p.add_argument(
        "--init",
        choices=("cells", "zeros", "random"),
        default="cells",
        help="start from the cells' current values (default), zeros, or seeded random N(0, scale^2)",
    )
    p.add_argument(
        "--init-scale", type=NON_NEGATIVE, default=0.1, help="scale of --init random (default 0.1)"
    )
    p.add_argument("--max-seconds", type=POSITIVE, help="stop after this many seconds")
    p.add_argument(
        "--dataset",
        help="train on this full dataset (titanic, mnist_3v7, mnist; none = the visible rows); "
        "default: the settings sheet",
    )
    p.add_argument(
        "--batch-size", type=POSITIVE_INT, help="minibatch size for adam/sgd on a dataset (default: settings)"
    )
    p.add_argument("--out", help="write the trained workbook to this copy instead of BOOK")
    p.add_argument(
        "--save-names",
        action="store_true",
        help="store --objective/--params as the sheet's xlmnist_objective/xlmnist_params names",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument(
        "--force", action="store_true", help="write the parameters even when the run collapsed to one class"
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        help="dtype of the minibatch loop (default float32; the reported numbers are float64)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "step", help="exactly one optimisation step; writes the new weights and their gradients"
    )
    _common(p)
    p.add_argument("--optimizer", choices=("sgd", "adam"), help="default: the settings sheet's, else sgd")
    p.add_argument("--lr", type=POSITIVE, help="learning rate (default: settings sheet, else per optimizer)")
    p.add_argument("--seed", type=int, help="seed of the minibatch draw (default: a fresh random one)")
    p.add_argument("--batch-size", type=POSITIVE_INT, help="minibatch size (default: settings sheet)")
    p.add_argument(
        "--dataset", help="dataset of the minibatch (default: settings sheet; none = visible rows)"
    )
    p.add_argument("--out", help="write to this copy instead of BOOK")
    p.set_defaults(func=cmd_step)
