"""Registering a kept run later: an erasure whose registration failed (the tracking server was down, the
process was killed) is registered and promoted by one command, from what the run left on disk.

    unierase register --run-dir outputs/private/acme-42-1a2b3c4d [--params params.yaml]

Before it registers anything, the erasure flow writes ``registration.json`` into its run folder: the
registered model, the request, the parent version the edit built on, the gate's metrics and the tags
(digests, counts and ids only). ``registered.json`` beside it marks the run registered. This module
reads the first and writes the second; the registration itself goes through the same registry
functions as the flow, under the same per-model lock, so a late registration and a running flow never
interleave.

A kept edit builds on its parent version. If the champion has moved since (another request was erased,
or a rollback happened), registering it would silently drop what the newer champion erased, so it is
refused: rerun the request instead.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from unierase.atomic import write_text_atomic
from unierase.config import Params
from unierase.stages.artifacts import KEY_BLOCKS_FILE
from unierase.stages.private import DONE_MARK, PENDING_MARK, pending_registration, purge_run, run_dirs

logger = logging.getLogger(__name__)

_FIELDS = ("name", "request_id", "run_id", "parent_version", "base_model", "erase_dir", "delta_sha256")


def write_registration(
    run_dir: Path,
    *,
    name: str,
    request_id: str,
    run_id: str,
    parent_version: str | None,
    base_model: Path,
    erase_dir: Path,
    delta_sha256: str,
    metrics: dict[str, float],
    params: dict[str, str],
    datasets: list[dict],
    tags: dict[str, str],
    reports: list[Path],
) -> Path:
    """Writes ``registration.json``: everything `register_run` needs to register this run later.

    ``parent_version`` None means the base model, not registered yet when the run started.
    """
    run_dir = Path(run_dir)
    body = {
        "name": name,
        "request_id": request_id,
        "run_id": run_id,
        "parent_version": parent_version,
        "base_model": str(base_model),
        "erase_dir": str(Path(erase_dir).relative_to(run_dir)),
        "delta_sha256": delta_sha256,
        "metrics": metrics,
        "params": params,
        "datasets": datasets,
        "tags": tags,
        "reports": [str(Path(r).relative_to(run_dir)) for r in reports],
    }
    return write_text_atomic(run_dir / PENDING_MARK, json.dumps(body, indent=2, sort_keys=True) + "\n")


def read_registration(run_dir: Path) -> dict:
    """The manifest of a kept run.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``registration.json``.
        ValueError: The manifest is not JSON or lacks a field.
    """
    path = Path(run_dir) / PENDING_MARK
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a run folder awaiting registration (no {PENDING_MARK}); the run folders are under "
            "privacy.private_dir/<request id>-<run>/"
        )
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a readable registration manifest ({err})") from None
    if missing := [f for f in _FIELDS if f not in body]:
        raise ValueError(f"{path} lacks {', '.join(missing)}; it was not written by the erasure flow")
    return body


def mark_registered(run_dir: Path, version: str | None, champion: str | None, superseded_by: str | None = None) -> Path:
    """Records that a run needs no registration any more (``registered.json``): its version is
    registered, or (``superseded_by``) another run of the same request registered one."""
    body = {"version": version, "champion": champion}
    if superseded_by is not None:
        body["superseded_by"] = superseded_by
    path = Path(run_dir) / DONE_MARK
    path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    return path


def finish_run_dir(run_dir: Path, params: Params) -> None:
    """After registration: drops the run's model copy (the registry holds it) and, when
    ``privacy.purge_after_registration`` is set, the whole private run folder."""
    run_dir = Path(run_dir)
    if params.privacy.purge_after_registration:
        purge_run(run_dir)
        return
    for model in run_dir.glob("*/model"):
        shutil.rmtree(model, ignore_errors=True)


def register_run(run_dir: str | Path, root: str | Path, params: Params) -> dict:
    """Registers (and, when accepted, promotes) the version of a kept erasure run.

    Args:
        run_dir: The run's private folder (it holds ``registration.json``).
        root: Repo root (the embedded store and dataset paths are relative to it).
        params: The project's parameters (registry and privacy sections).

    Returns:
        The version, its parent and status, and the champion afterwards.

    Raises:
        FileNotFoundError: No manifest, or the edited model is no longer in the run folder.
        ValueError: The champion moved since the run (its edit would drop a newer erasure), or the
            delta's digest no longer matches the run's report.
        TrackingUnavailableError: The tracking server is still unreachable.
    """
    from unierase.data.provenance import DatasetDigest
    from unierase.registry import tags as T
    from unierase.registry.locking import registry_lock
    from unierase.registry.promotion import current_alias_version, promote
    from unierase.registry.reach import bound_http_calls, call_with_retries
    from unierase.registry.recovery import close_abandoned_runs, version_of_flow_run
    from unierase.registry.store import connect, ensure_experiment
    from unierase.registry.versions import register_base, register_erasure

    run_dir, root = Path(run_dir).resolve(), Path(root).resolve()
    manifest = read_registration(run_dir)
    name, request_id = manifest["name"], manifest["request_id"]
    if (run_dir / DONE_MARK).is_file():
        done = json.loads((run_dir / DONE_MARK).read_text(encoding="utf-8"))
        return {"registered_model": name, "request_id": request_id, **done, "already_registered": True}
    erase_dir = run_dir / manifest["erase_dir"]
    if not (erase_dir / "model" / "config.json").is_file():
        raise FileNotFoundError(f"{erase_dir}/model is gone; the run cannot be registered: rerun the request")
    config = params.registry
    bound_http_calls(config)
    client = call_with_retries(lambda: _reachable(connect(config, root)), config, "registering a kept run")
    with registry_lock(root / config.work_dir / "locks", name, config.lock_timeout_s, holder=request_id):
        version = version_of_flow_run(client, name, manifest["run_id"])
        if version is None:
            # The failed run's MLflow run may still be marked running (the server went away under it).
            if (experiment := client.get_experiment_by_name(config.experiment_name)) is not None:
                close_abandoned_runs(client, experiment.experiment_id, request_id, "")
            parent = manifest["parent_version"]
            champion = current_alias_version(client, name, config.champion_alias)
            if parent is None:
                experiment = ensure_experiment(client, config, root)
                parent = register_base(client, experiment, name, Path(manifest["base_model"]))
                if champion is None:
                    promote(client, name, parent, config.champion_alias, "base model: the first version in service")
                    champion = parent
            if champion is not None and champion != parent:
                raise ValueError(
                    f"{name}@{config.champion_alias} moved from version {parent} to {champion} since this run; its edit "
                    f"builds on version {parent}, so registering it would drop what version {champion} erased: "
                    f"rerun request {request_id} instead"
                )
            tags = {**manifest["tags"], T.PARENT_VERSION: parent}
            version = register_erasure(
                client,
                ensure_experiment(client, config, root),
                name,
                erase_dir / "model",
                erase_dir / "delta.safetensors",
                manifest["delta_sha256"],
                manifest["metrics"],
                manifest["params"],
                [DatasetDigest(**d) for d in manifest["datasets"]],
                tags,
                root,
                [run_dir / r for r in manifest["reports"]],
                key_blocks=erase_dir / KEY_BLOCKS_FILE,
                parent_dir=Path(manifest["base_model"]),
            )
        record = client.get_model_version(name, version)
        if (
            record.tags.get(T.STATUS) == T.ACCEPTED
            and current_alias_version(client, name, config.champion_alias) != version
        ):
            reason = f"passed the evaluation gate (request {request_id}, registered later)"
            promote(client, name, version, config.champion_alias, reason)
        champion = current_alias_version(client, name, config.champion_alias)
    mark_registered(run_dir, version, champion)
    finish_run_dir(run_dir, params)
    logger.info("registered %s version %s from a kept run; champion is version %s", name, version, champion)
    return {
        "registered_model": name,
        "request_id": request_id,
        "version": version,
        "parent_version": record.tags.get(T.PARENT_VERSION),
        "status": record.tags.get(T.STATUS),
        "champion": champion,
    }


def settle_kept_runs(client, root: str | Path, params: Params, name: str, request_id: str) -> list[Path]:
    """Settles the kept runs of ``request_id`` that wait for a registration no longer needed: a run whose
    version exists after all (killed after registering) is marked registered; a run without one, when
    another run of the request has a version, is marked superseded. Both folders are tidied as a
    finished run's. Returns those folders."""
    from unierase.registry import tags as T
    from unierase.registry.promotion import current_alias_version
    from unierase.registry.recovery import version_of_flow_run

    settled, request_versions = [], None
    for run_dir in run_dirs(root, params.privacy, request_id):
        if not pending_registration(run_dir):
            continue
        try:
            manifest = read_registration(run_dir)
        except (OSError, ValueError):
            continue
        version = version_of_flow_run(client, name, manifest["run_id"])
        if version is None:
            if request_versions is None:
                found = client.search_model_versions(f"name='{name}'")
                request_versions = sorted(
                    (str(v.version) for v in found if v.tags.get(T.REQUEST_ID) == request_id), key=int
                )
            if not request_versions:
                continue  # still the request's only edit: keep it for `unierase register`
            mark_registered(run_dir, None, None, superseded_by=request_versions[-1])
        else:
            mark_registered(run_dir, version, current_alias_version(client, name, params.registry.champion_alias))
        finish_run_dir(run_dir, params)
        settled.append(run_dir)
    return settled


def _reachable(client):
    client.search_experiments(max_results=1)  # one cheap call: fails when the server is down
    return client
