"""``unierase rollback``, ``unierase lineage``, ``unierase export``: the model registry by hand.

unierase rollback --to 2 --reason "request 7 broke the support bot" [--params params.yaml]
unierase lineage [VERSION] [--params params.yaml]
unierase export [VERSION] --output DIR [--params params.yaml]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params", type=Path, default=None, help="params.yaml (registry section; default: ./params.yaml when present)"
    )
    parser.add_argument("--model-name", default=None, help="registered model (default: the base model's)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``rollback``, ``lineage`` and ``export`` subcommands."""
    rollback = subparsers.add_parser("rollback", help="move the champion alias back to an earlier version")
    rollback.add_argument("--to", required=True, dest="version", help="version to serve again")
    rollback.add_argument("--reason", required=True, help="why: recorded in the audit log")
    _common(rollback)
    rollback.set_defaults(func=run_rollback)

    lineage = subparsers.add_parser("lineage", help="the chain from the base model to a version")
    lineage.add_argument("version", nargs="?", default=None, help="version (default: the champion)")
    _common(lineage)
    lineage.set_defaults(func=run_lineage)

    export = subparsers.add_parser("export", help="write a version as a full transformers directory")
    export.add_argument("version", nargs="?", default=None, help="version (default: the champion)")
    export.add_argument("--output", required=True, type=Path, help="new directory to create")
    _common(export)
    export.set_defaults(func=run_export)


def _open(args: argparse.Namespace):
    """(client, model name, champion alias) from params.yaml, relative to the current directory."""
    from unierase.config import repo_params
    from unierase.inputs import check_model_name, check_version
    from unierase.model.default import default_model_dir
    from unierase.registry.store import connect, model_name_for

    config = repo_params(Path.cwd(), args.params).registry
    if args.model_name is not None:
        check_model_name(args.model_name)
    if getattr(args, "version", None) is not None:
        args.version = check_version(args.version)  # before any call: "abc" is refused, not looked up
    client = connect(config, Path.cwd())
    name = args.model_name or model_name_for(default_model_dir(), config)
    return client, name, config.champion_alias


def _version_or_champion(client, name: str, alias: str, version: str | None) -> str:
    from unierase.registry.promotion import current_alias_version

    if version is not None:
        from mlflow.exceptions import MlflowException

        try:
            client.get_model_version(name, version)
        except MlflowException:
            raise ValueError(f"{name} has no version {version}; `unierase lineage` shows the versions") from None
        return version
    champion = current_alias_version(client, name, alias)
    if champion is None:
        raise ValueError(f"{name} has no @{alias} version; run the erasure flow first (make demo)")
    return champion


def run_rollback(args: argparse.Namespace) -> int:
    """Rolls the champion back and prints the re-exposed requests."""
    from unierase.config import repo_params
    from unierase.registry.locking import registry_lock
    from unierase.registry.promotion import rollback
    from unierase.registry.rebuild import materialize

    client, name, alias = _open(args)
    config = repo_params(Path.cwd(), args.params).registry
    # Under the registered model's lock: a rollback never interleaves with a run's promotion.
    with registry_lock(Path.cwd() / config.work_dir / "locks", name, config.lock_timeout_s, holder="rollback"):
        _version_or_champion(client, name, alias, args.version)  # "no version 9" before any download
        # The target is rebuilt (base + deltas, every digest checked) before the alias moves: a version
        # whose stored files changed is refused by name, and the rebuilt directory is cached for serving.
        materialize(client, name, args.version)
        result = rollback(client, name, args.version, alias, args.reason)
    print(f"{name}@{alias}: version {result.from_version} -> {result.to_version} (audit #{result.audit_entry['seq']})")
    if result.reexposed_requests:
        print("re-exposed erasure requests (their knowledge is served again):")
        for request in result.reexposed_requests:
            print(f"  {request}")
    else:
        print("no erasure request is re-exposed")
    return 0


def run_lineage(args: argparse.Namespace) -> int:
    """Prints the lineage of a version."""
    from unierase.registry.lineage import format_lineage, lineage

    client, name, alias = _open(args)
    version = _version_or_champion(client, name, alias, args.version)
    print(f"{name} version {version}: lineage from the base model")
    print(format_lineage(lineage(client, name, version)))
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Exports a version's transformers directory."""
    from unierase.registry.pyfunc import export_model_dir

    client, name, alias = _open(args)
    version = _version_or_champion(client, name, alias, args.version)
    print(export_model_dir(f"models:/{name}/{version}", args.output))
    return 0
