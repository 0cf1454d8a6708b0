"""The ``unierase`` command line: one subcommand a module, each a thin front door onto the core.

unierase --help
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Subcommand modules under unierase.cli; each defines ``register(subparsers)``, which adds its
# parser(s) and sets ``func`` to a callable taking the parsed arguments and returning an exit code.
SUBCOMMAND_MODULES: tuple[str, ...] = ("erase", "evaluate", "finetune", "data", "registry", "schedule")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="unierase", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"unierase.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``unierase`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as err:
        # Bad input: a clear one-line message naming the problem, no traceback.
        print(f"unierase {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
