"""The ``xlmnist`` command line.

Each stage module contributes its subcommand through a ``register(subparsers)`` function that sets
``func`` on its parser; this module only wires them up and turns XlmnistError into a one-line error.
``xlmnist --help`` and a bare ``xlmnist`` list the commands from :data:`SUMMARIES` without importing
any command module (no torch: ~0.1 s); ``XLMNIST_TIMING=1`` prints where a command's time went
(:mod:`xlmnist.timing`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from xlmnist import timing
from xlmnist.errors import XlmnistError

# subcommand -> the module whose ``register(subparsers)`` defines it. Only the module of the command
# being run is imported (importing torch for ``xlmnist build --help`` would cost seconds).
COMMANDS = {
    "build": "xlmnist.lessons",
    "check": "xlmnist.oracle",
    "demo": "xlmnist.demo",
    "eval": "xlmnist.train.commands",
    "train": "xlmnist.train.commands",
    "step": "xlmnist.train.commands",
    "verify": "xlmnist.compile.verify",
    "export": "xlmnist.export.codegen",
    "import": "xlmnist.export.importer",
    "addin": "xlmnist.excel.addin",
    "serve": "xlmnist.excel.server",
}

# the one-line help of each command for the command list; the same text as its module's ``add_parser(help=)``
# (tests/test_cli_errors.py checks that they agree)
SUMMARIES = {
    "build": "write the lesson workbooks (titanic, mnist_3v7, mnist)",
    "check": "recalculate a workbook with LibreOffice and report error cells",
    "demo": "build the workbooks, train every model sheet, print a results table",
    "eval": "print the compiled objective for the current cell values",
    "train": "train the trainable cells and write them back (Excel Solver, but PyTorch)",
    "step": "exactly one optimisation step; writes the new weights and their gradients",
    "verify": "compare every formula cell xlmnist compiles with the file's cached values (or LibreOffice)",
    "export": "write a workbook model sheet as a readable PyTorch module",
    "import": "write an exported model's weights back into its workbook, or a Linear/ReLU/Sigmoid/Softmax chain as a new one",
    "addin": "build or install the xlmnist Excel ribbon add-in (xlwings)",
    "serve": "xlwings Server route: train/step/export/reset over HTTP (extra [server])",
}


def make_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for ``command`` (only its module is imported), or the command list when None."""
    parser = argparse.ArgumentParser(
        prog="xlmnist", description="Excel Solver, but it is PyTorch: compile and train spreadsheet models."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command in COMMANDS:
        importlib.import_module(COMMANDS[command]).register(sub)
    else:  # the list only: importing every command module would import torch
        for name, text in SUMMARIES.items():
            sub.add_parser(name, help=text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = make_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    timing.mark("import")
    try:
        result = args.func(args)
    except XlmnistError as exc:
        print(f"xlmnist: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xlmnist: interrupted", file=sys.stderr)
        return 130
    finally:
        timing.report()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
