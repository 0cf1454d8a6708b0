"""Where the long-running services of a project are, when `unierase serve` runs them: a Prefect server
and an MLflow tracking server on loopback, found through a discovery file in the project.

    from unierase.services import served
    found = served(root)        # None when `unierase serve` is not running for this project

`unierase serve` writes ``<root>/<registry.work_dir>/serve.json`` (its process id, the Prefect API URL,
the MLflow tracking URI and the store that server serves) once every service answers, and removes it
when it stops. A record counts only while its process is alive and both servers answer their health
checks, so a record left by a killed ``serve`` is ignored. With a live record, `unierase.registry.store`
sends the project's registry calls to the served MLflow (when ``registry.tracking_uri`` is the store it
serves) and `use_served_prefect` points flow runs at the served Prefect; without one, flows use
Prefect's ephemeral server and the local store, as before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from unierase.atomic import write_text_atomic

logger = logging.getLogger(__name__)

DISCOVERY_FILE = "serve.json"


@dataclass(frozen=True)
class Served:
    """A running `unierase serve`.

    Attributes:
        pid: Process id of ``unierase serve``.
        prefect_api_url: The Prefect server's API (``http://127.0.0.1:PORT/api``).
        mlflow_tracking_uri: The MLflow server (``http://127.0.0.1:PORT``).
        backend_store_uri: The store the MLflow server serves (the project's ``registry.tracking_uri``, resolved).
        children: Process ids of the servers and the worker.
    """

    pid: int
    prefect_api_url: str
    mlflow_tracking_uri: str
    backend_store_uri: str
    children: tuple[int, ...] = ()


def discovery_path(root: Path, work_dir: str = "outputs/runs") -> Path:
    """The discovery file of the project at ``root`` (``registry.work_dir`` relative to it)."""
    return Path(root).resolve() / work_dir / DISCOVERY_FILE


def write_discovery(path: Path, served: Served) -> Path:
    """Writes the record atomically (a reader never sees half of it)."""
    return write_text_atomic(path, json.dumps({**asdict(served), "children": list(served.children)}, indent=2) + "\n")


def served(root: Path, work_dir: str = "outputs/runs", timeout_s: float = 2.0) -> Served | None:
    """The live `unierase serve` of the project at ``root``, or None (no record, or a stale one)."""
    path = discovery_path(root, work_dir)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        record = Served(**{**body, "children": tuple(body.get("children", ()))})
    except (OSError, ValueError, TypeError):
        return None
    if not _alive(record.pid):
        return None
    prefect_health = record.prefect_api_url.rstrip("/") + "/health"
    mlflow_health = record.mlflow_tracking_uri.rstrip("/") + "/health"
    if not (_answers(prefect_health, timeout_s) and _answers(mlflow_health, timeout_s)):
        return None
    return record


@contextlib.contextmanager
def use_served_prefect(root: Path, work_dir: str = "outputs/runs") -> Iterator[Served | None]:
    """Points Prefect at the project's served server for the duration (unless ``PREFECT_API_URL`` is set
    already); yields the record, or None when nothing is served (Prefect then starts its ephemeral server)."""
    found = served(root, work_dir)
    if found is None or os.environ.get("PREFECT_API_URL"):
        yield found
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    logger.info("using the served Prefect at %s and MLflow at %s", found.prefect_api_url, found.mlflow_tracking_uri)
    with temporary_settings(updates={PREFECT_API_URL: found.prefect_api_url}):
        yield found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _answers(url: str, timeout_s: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - loopback URLs we wrote
            return response.status == 200
    except OSError:
        return False
