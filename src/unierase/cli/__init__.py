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
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "erase",
    "evaluate",
    "finetune",
    "data",
    "registry",
    "schedule",
    "serve",
    "register",
    "privacy",
)


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
    except Exception as err:
        if not is_user_error(err) or args.verbose:
            raise
        # Bad input: a clear one-line message naming the problem, no traceback (-v shows it).
        print(f"unierase {args.command}: error: {_message(err)}", file=sys.stderr)
        return 2


def is_user_error(err: BaseException) -> bool:
    """Whether an exception reports something the user gave or named (a file, a value, a version) rather
    than a bug: bad values and files, missing or existing paths, and the registry's refusals (an
    unknown version or name, an unreachable tracking server, a registered model busy with another run)."""
    from unierase.registry.locking import RegistryBusyError

    user_errors: tuple[type[BaseException], ...] = (
        ValueError,
        KeyError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
        ConnectionError,  # an unreachable tracking server, after the configured retries
        RegistryBusyError,  # another erasure of the same registered model held the lock too long
    )
    mlflow_errors = sys.modules.get("mlflow.exceptions")  # never imported: it cannot be an MLflow error
    if mlflow_errors is not None:
        user_errors += (mlflow_errors.MlflowException,)
    return isinstance(err, user_errors)


def _message(err: BaseException) -> str:
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


if __name__ == "__main__":
    sys.exit(main())
