"""Registry tasks: tracking-server I/O. Each first checks that the server answers, retrying
``registry.retries`` times ``registry.retry_delay_s`` apart, then fails with one clear error
(`unierase.registry.reach`); every call is idempotent or guarded so that a rerun never registers twice."""

from __future__ import annotations

from pathlib import Path

from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE

from mlflow import MlflowClient
from unierase.config import RegistryConfig
from unierase.data.provenance import DatasetDigest
from unierase.faults import fault_point
from unierase.registry import tags as T
from unierase.registry.promotion import current_alias_version, promote
from unierase.registry.reach import bound_http_calls, call_with_retries
from unierase.registry.store import connect, ensure_experiment
from unierase.registry.versions import discard_version, register_base, register_erasure
from unierase.stages.artifacts import KEY_BLOCKS_FILE

_IO = {"cache_policy": NO_CACHE}  # retried in `_connect`, by registry.retries, not by Prefect


def _connect(config: RegistryConfig, root: Path) -> MlflowClient:
    """A client of the configured store, once the store has answered (bounded retries, then
    `TrackingUnavailableError`): an unreachable server is never taken for an empty registry."""
    bound_http_calls(config)
    client = connect(config, root)
    call_with_retries(lambda: client.search_experiments(max_results=1), config, "connecting")
    return client


@task(name="register-base", **_IO)
def ensure_base(config: RegistryConfig, root: Path, name: str, base_model: Path) -> str:
    """Registers the base model as version 1 (once) and makes it champion when nothing is; returns its version."""
    client = _connect(config, root)
    version = register_base(client, ensure_experiment(client, config, root), name, base_model)
    if current_alias_version(client, name, config.champion_alias) is None:
        promote(client, name, version, config.champion_alias, "base model: the first version in service")
    return version


@task(name="resolve-parent", **_IO)
def resolve_parent(config: RegistryConfig, root: Path, name: str, base_model: Path) -> dict:
    """The version this erasure builds on (the champion; None before the base is registered) and a local
    transformers directory of it: rebuilt from the base and its chain of deltas, every digest checked,
    and cached (`unierase.registry.rebuild`). Reads only: nothing is registered before the edit has
    succeeded."""
    from unierase.registry.rebuild import materialize
    from unierase.registry.versions import find_base_version

    client = _connect(config, root)
    try:
        champion = current_alias_version(client, name, config.champion_alias)
        base_version = find_base_version(client, name)
    except MlflowException:  # no registered model yet
        champion = base_version = None
    if champion is None or champion == base_version:
        return {"version": base_version, "model_dir": Path(base_model)}
    return {"version": champion, "model_dir": materialize(client, name, champion)}


@task(name="find-applied-request", **_IO)
def applied_version(
    config: RegistryConfig, root: Path, name: str, request_id: str, parent_version: str | None
) -> str | None:
    """The version this request already produced on this parent (or an ancestor of it), if any."""
    from unierase.registry.requests import applied_request_version

    return applied_request_version(_connect(config, root), name, request_id, parent_version)


@task(name="summarise-existing-version", **_IO)
def existing_summary(config: RegistryConfig, root: Path, name: str, version: str, request_id: str) -> dict:
    """The flow's summary of a version registered by an earlier run of the same request."""
    from unierase.registry.lineage import version_record

    client = _connect(config, root)
    record = version_record(client, name, version)
    failures = record.tags.get(T.GATE_FAILURES)
    return {
        "request_id": request_id,
        "registered_model": name,
        "version": record.version,
        "parent_version": record.parent,
        "status": record.status,
        "champion": current_alias_version(client, name, config.champion_alias),
        "metrics": record.metrics,
        "gate_failures": failures.split("; ") if failures else [],
        "already_applied": True,
    }


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
    parent_dir: Path | None = None,
) -> str:
    """Logs the erasure run and registers its version (a delta of ``parent_dir``, the parent's full
    directory). An attempt that could not reach the server is retried (``registry.retries``); a retry
    first looks for the version this flow run registered, so it never registers twice."""
    from unierase.registry.recovery import version_of_flow_run

    client = _connect(config, root)

    def attempt() -> str:
        if (done := version_of_flow_run(client, name, tags[T.FLOW_RUN_ID])) is not None:
            return done
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
            key_blocks=Path(erase_dir) / KEY_BLOCKS_FILE,
            parent_dir=parent_dir,
        )

    return call_with_retries(attempt, config, "registering the erasure")


@task(name="promote-version", **_IO)
def promote_if_accepted(config: RegistryConfig, root: Path, name: str, version: str, request_id: str) -> str | None:
    """Moves champion to an accepted version; returns the champion afterwards (unchanged when rejected)."""
    client = _connect(config, root)
    fault_point("promote")
    if client.get_model_version(name, version).tags.get(T.STATUS) == T.ACCEPTED:
        promote(client, name, version, config.champion_alias, f"passed the evaluation gate (request {request_id})")
    return current_alias_version(client, name, config.champion_alias)


@task(name="discard-version", **_IO)
def discard(config: RegistryConfig, root: Path, name: str, version: str) -> None:
    """Deletes a version registered by a run that then failed."""
    discard_version(_connect(config, root), name, version)
