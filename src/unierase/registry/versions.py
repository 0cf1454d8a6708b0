"""Registering versions: the base model as version 1, then one version per erasure.

A version is created in one call, with every tag, only after its run has logged all metrics,
parameters, inputs and artifacts: a failure before that leaves no version behind, and a failed run
is marked FAILED. The base version stores its full directory; an erasure version stores its delta
against its parent (`unierase.registry.packing`), or its full directory when that is smaller.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.exceptions import MlflowException

import mlflow
from mlflow import MlflowClient
from unierase.data.provenance import DatasetDigest, dataset_tags
from unierase.digests import file_sha256, model_dir_sha256
from unierase.faults import fault_point
from unierase.registry import tags as T
from unierase.registry.pyfunc import log_language_model

logger = logging.getLogger(__name__)


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    """Creates the registered model if it does not exist yet."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, tags={"unierase.registry": "erasures"})


def find_base_version(client: MlflowClient, name: str) -> str | None:
    """The version tagged as the base model, or None."""
    for version in client.search_model_versions(f"name='{name}'"):
        if version.tags.get(T.KIND) == T.BASE:
            return str(version.version)
    return None


def _log_inputs(datasets: list[DatasetDigest], root: Path) -> None:
    """Logs each data file as an MLflow input by digest and source only (never its rows)."""
    for d in datasets:
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are the local file
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str((Path(root) / d.path).resolve()))
        mlflow.log_input(MetaDataset(source=source, name=f"{d.name}:{Path(d.path).name}", digest=d.md5), context=d.name)


def _create_version(client: MlflowClient, name: str, model_uri: str, run_id: str, tags: Mapping[str, str]) -> str:
    # A tracking server (not the SQLite store) refuses a logged model's URI as source without its id.
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    version = client.create_model_version(name, source=model_uri, run_id=run_id, tags=dict(tags), model_id=model_id)
    logger.info("registered %s version %s", name, version.version)
    return str(version.version)


def register_base(
    client: MlflowClient, experiment_id: str, name: str, model_dir: Path, extra_tags: Mapping[str, str] | None = None
) -> str:
    """Registers the base model as the first version of ``name`` (a no-op returning it if present).

    Returns:
        The base version number (``"1"`` in a new registry).
    """
    ensure_registered_model(client, name)
    if (existing := find_base_version(client, name)) is not None:
        return existing
    sha = model_dir_sha256(model_dir)
    tags = {
        T.KIND: T.BASE,
        T.PARENT_VERSION: "none",
        T.STATUS: T.BASE,
        T.MODEL_SHA256: sha,
        T.STORAGE: T.FULL,
        T.BASE_MODEL: Path(model_dir).name,
        **(extra_tags or {}),
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{name}-base", tags=tags) as run:
        info, manifest_sha256, _ = log_language_model(model_dir)
        return _create_version(
            client, name, info.model_uri, run.info.run_id, {**tags, T.MANIFEST_SHA256: manifest_sha256}
        )


def register_erasure(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    model_dir: Path,
    delta_path: Path,
    delta_sha256: str,
    metrics: Mapping[str, float],
    params: Mapping[str, str],
    datasets: list[DatasetDigest],
    tags: Mapping[str, str],
    root: Path,
    reports: list[Path] = (),
    key_blocks: Path | None = None,
    parent_dir: Path | None = None,
) -> str:
    """Logs an erasure run (metrics, params, inputs, reports, the model as a delta of its parent) and
    registers its version.

    Args:
        client: Registry client.
        experiment_id: Experiment of the run.
        name: Registered model name.
        model_dir: The edited transformers directory.
        delta_path: The erase run's weight delta file (before and after values; not stored: the
            version stores the new values only); its SHA-256 must equal ``delta_sha256``.
        delta_sha256: Expected digest of the delta (from the erase report).
        metrics: Flat metrics of the run.
        params: Flat parameters of the run (config values; never data content).
        datasets: Digests of the data files used.
        tags: Lineage and gate tags for both the run and the version (must include the parent version).
        root: Repo root, for dataset sources.
        reports: JSON reports to log as artifacts (aggregate figures only).
        key_blocks: The erase run's ``key_blocks.safetensors`` (the edit state is stored as these).
        parent_dir: The parent version's full directory when at hand (checked by digest); else it is
            rebuilt from the registry.

    Returns:
        The new version number.

    Raises:
        ValueError: The delta file's digest does not match, or the lineage tags lack the parent version.
    """

    if T.PARENT_VERSION not in tags:
        raise ValueError(f"an erasure version needs the {T.PARENT_VERSION} tag")
    if (actual := file_sha256(delta_path)) != delta_sha256:
        raise ValueError(f"{delta_path}: SHA-256 {actual} is not the reported {delta_sha256}")
    parent = {
        "name": name,
        "version": str(tags[T.PARENT_VERSION]),
        "dir": _parent_dir(client, name, str(tags[T.PARENT_VERSION]), parent_dir),
        "key_blocks": key_blocks if key_blocks is not None and Path(key_blocks).is_file() else None,
    }
    all_tags = {
        T.KIND: T.ERASURE,
        T.DELTA_SHA256: delta_sha256,
        T.MODEL_SHA256: model_dir_sha256(model_dir),
        **dataset_tags(datasets),
        **tags,
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{name}-erasure", tags=all_tags) as run:
        mlflow.log_params(dict(params))
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        _log_inputs(datasets, root)
        for report in reports:
            mlflow.log_artifact(str(report), artifact_path="reports")
        info, manifest_sha256, storage = log_language_model(model_dir, parent=parent)
        all_tags[T.MANIFEST_SHA256], all_tags[T.STORAGE] = manifest_sha256, storage
        fault_point("register")  # tests kill here: the run has logged everything, no version exists yet
        return _create_version(client, name, info.model_uri, run.info.run_id, all_tags)


def _parent_dir(client: MlflowClient, name: str, version: str, given: Path | None) -> Path:
    """The parent's full directory: ``given`` when it has the parent's registered digest, else rebuilt."""
    from unierase.registry.rebuild import materialize

    expected = client.get_model_version(name, version).tags.get(T.MODEL_SHA256)
    if given is not None and expected and model_dir_sha256(given) == expected:
        return Path(given)
    return materialize(client, name, version)


def discard_version(client: MlflowClient, name: str, version: str) -> None:
    """Deletes a version that a failed flow registered, so that a failed run leaves none behind."""
    logger.warning("discarding %s version %s of a failed run", name, version)
    client.delete_model_version(name, version)
