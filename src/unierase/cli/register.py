"""``unierase register``: register a kept erasure run whose registration failed (tracking server down,
process killed), and promote it when it passed the gate.

    unierase register --run-dir outputs/private/acme-42-1a2b3c4d [--params params.yaml] [--root .]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``register`` subcommand."""
    parser = subparsers.add_parser("register", help="register a kept erasure run (after a failed registration)")
    parser.add_argument("--run-dir", required=True, type=Path, help="the run's folder (holds registration.json)")
    parser.add_argument("--params", default=None, help="params.yaml, relative to --root (default: its params.yaml)")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repo root (default: the current directory)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Registers the run and prints the outcome as JSON."""
    from unierase.config import repo_params
    from unierase.stages.register import register_run

    root = args.root.resolve()
    summary = register_run(args.run_dir, root, repo_params(root, args.params))
    print(json.dumps(summary, indent=2))
    return 0
