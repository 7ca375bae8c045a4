"""The ``xlmnist`` command line.

Each stage module contributes its subcommand through a ``register(subparsers)`` function that sets
``func`` on its parser; this module only wires them up and turns XlmnistError into a one-line error.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from xlmnist.errors import XlmnistError

# module name -> registers one or more subcommands
COMMAND_MODULES = [
    "xlmnist.build",
    "xlmnist.oracle",
    "xlmnist.demo",
    "xlmnist.commands",
    "xlmnist.export",
    "xlmnist.addin",
]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xlmnist", description="Excel Solver, but it is PyTorch: compile and train spreadsheet models."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a stage not built yet
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
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
