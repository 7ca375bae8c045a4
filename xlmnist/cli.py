"""The ``xlmnist`` command line.

Each stage module contributes its subcommand through a ``register(subparsers)`` function that sets
``func`` on its parser; this module only wires them up and turns XlmnistError into a one-line error.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


def make_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for ``command`` (only its module is imported), or for every command when None."""
    parser = argparse.ArgumentParser(
        prog="xlmnist", description="Excel Solver, but it is PyTorch: compile and train spreadsheet models."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in wanted:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = make_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except XlmnistError as exc:
        print(f"xlmnist: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xlmnist: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
