"""Registry tasks: tracking-server I/O, retried because a server can blip; every call is idempotent or
guarded so that a retry never registers twice."""

from __future__ import annotations

from pathlib import Path

from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE

from unierase.config import RegistryConfig
from unierase.data.provenance import DatasetDigest
from unierase.registry import tags as T
from unierase.registry.promotion import current_alias_version, promote
from unierase.registry.pyfunc import export_model_dir
from unierase.registry.store import connect, ensure_experiment
from unierase.registry.versions import discard_version, register_base, register_erasure

_IO = {"retries": 2, "retry_delay_seconds": 5, "cache_policy": NO_CACHE}


@task(name="register-base", **_IO)
def ensure_base(config: RegistryConfig, root: Path, name: str, base_model: Path) -> str:
    """Registers the base model as version 1 (once) and makes it champion when nothing is; returns its version."""
    client = connect(config, root)
    version = register_base(client, ensure_experiment(client, config, root), name, base_model)
    if current_alias_version(client, name, config.champion_alias) is None:
        promote(client, name, version, config.champion_alias, "base model: the first version in service")
    return version


@task(name="resolve-parent", **_IO)
def resolve_parent(config: RegistryConfig, root: Path, name: str, base_model: Path) -> dict:
    """The version this erasure builds on (the champion; None before the base is registered) and a local
    transformers directory of it. Reads only: nothing is registered before the edit has succeeded."""
    from unierase.registry.versions import find_base_version

    client = connect(config, root)
    try:
        champion = current_alias_version(client, name, config.champion_alias)
        base_version = find_base_version(client, name)
    except MlflowException:  # no registered model yet
        champion = base_version = None
    if champion is None or champion == base_version:
        return {"version": base_version, "model_dir": Path(base_model)}
    local = Path(root) / config.work_dir / "versions" / f"{name}-v{champion}"
    if not (local / "config.json").is_file():
        export_model_dir(f"models:/{name}/{champion}", local)
    return {"version": champion, "model_dir": local}


@task(name="register-erasure", retries=0, cache_policy=NO_CACHE)
def register(
    config: RegistryConfig,
    root: Path,
    name: str,
    erase_dir: Path,
    report: dict,
    metrics: dict[str, float],
    params: dict[str, str],
    datasets: list[dict],
    tags: dict[str, str],
    reports: list[Path],
) -> str:
    """Logs the erasure run and registers its version (no retry: a retry could register it twice)."""
    client = connect(config, root)
    return register_erasure(
        client,
        ensure_experiment(client, config, root),
        name,
        Path(erase_dir) / "model",
        Path(erase_dir) / "delta.safetensors",
        report["delta_sha256"],
        metrics,
        params,
        [DatasetDigest(**d) for d in datasets],
        tags,
        root,
        reports,
    )


@task(name="promote-version", **_IO)
def promote_if_accepted(config: RegistryConfig, root: Path, name: str, version: str, request_id: str) -> str | None:
    """Moves champion to an accepted version; returns the champion afterwards (unchanged when rejected)."""
    client = connect(config, root)
    if client.get_model_version(name, version).tags.get(T.STATUS) == T.ACCEPTED:
        promote(client, name, version, config.champion_alias, f"passed the evaluation gate (request {request_id})")
    return current_alias_version(client, name, config.champion_alias)


@task(name="discard-version", **_IO)
def discard(config: RegistryConfig, root: Path, name: str, version: str) -> None:
    """Deletes a version registered by a run that then failed."""
    discard_version(connect(config, root), name, version)
