"""``unierase purge``: delete kept per-item text (the private area) by age or by request.

unierase purge                         # runs older than privacy.retention_days
unierase purge --older-than 7          # runs older than a week
unierase purge --request acme-42       # every run of one request
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``purge`` subcommand."""
    parser = subparsers.add_parser("purge", help="delete kept per-item outputs (questions, answers) by age or request")
    parser.add_argument("--older-than", type=float, default=None, help="days (default: privacy.retention_days)")
    parser.add_argument("--request", default=None, help="only this request's runs (all of them unless --older-than)")
    parser.add_argument("--params", default=None, help="params.yaml, relative to --root (default: its params.yaml)")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repo root (default: the current directory)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Purges and prints what was removed and what was kept."""
    from unierase.config import repo_params
    from unierase.stages.private import purge_private

    if args.older_than is not None and args.older_than < 0:
        raise ValueError(f"--older-than {args.older_than:g}: give a number of days, 0 or more")
    root = args.root.resolve()
    result = purge_private(root, repo_params(root, args.params).privacy, args.older_than, args.request)
    for path in result.removed:
        print(f"removed {path}")
    for path in result.kept_pending:
        print(f"kept {path} (awaiting registration: unierase register --run-dir {path})")
    print(f"{len(result.removed)} run folder(s) removed")
    return 0
