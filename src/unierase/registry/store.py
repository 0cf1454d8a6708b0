"""Connecting to the MLflow store: the embedded SQLite default or a tracking server by URI; while
`unierase serve` serves the project's embedded store, through that server (`unierase.services`)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from unierase.config import RegistryConfig

logger = logging.getLogger(__name__)
# A URI scheme of two or more characters (a Windows drive letter is one).
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def resolve_tracking_uri(config: RegistryConfig, root: Path) -> str:
    """The tracking URI with a relative SQLite path made absolute against the repo root ``root``."""
    uri = config.tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = (Path(root) / uri[len("sqlite:///") :]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    return uri


def resolve_artifact_location(config: RegistryConfig, root: Path) -> str:
    """The experiment's artifact root: a relative path is made an absolute one under ``root``; a URI
    (``s3://bucket/prefix``, or ``mlflow-artifacts:/prefix`` for a tracking server that proxies its artifact
    store) is kept as it is."""
    location = config.artifact_location
    if _URI.match(location) or Path(location).is_absolute():
        return location
    return str((Path(root) / location).resolve())


def connect(config: RegistryConfig, root: Path) -> MlflowClient:
    """Points MLflow (tracking and registry) at the configured store and returns a client: the served
    MLflow of `unierase serve` when it serves this store, else the store itself."""
    from unierase.services import served

    uri = resolve_tracking_uri(config, root)
    if uri.startswith("sqlite:") and (found := served(root, config.work_dir)) and found.backend_store_uri == uri:
        uri = found.mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client: MlflowClient, config: RegistryConfig, root: Path) -> str:
    """Id of the configured experiment, created with the configured artifact location if missing."""
    experiment = client.get_experiment_by_name(config.experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(config.experiment_name, artifact_location=resolve_artifact_location(config, root))


def model_name_for(base_model_dir: Path, config: RegistryConfig) -> str:
    """The registered model name: the configured one, or ``unierase-<base model directory name>``."""
    if config.model_name:
        return config.model_name
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(base_model_dir).resolve().name).strip("-").lower()
    return f"unierase-{slug or 'model'}"
