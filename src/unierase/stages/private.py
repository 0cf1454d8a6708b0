"""The private area: the one folder where a request's text may be kept after a run, and its purge.

    unierase purge                      # runs older than privacy.retention_days
    unierase purge --request acme-42    # every run of one request, whatever its age
    unierase purge --older-than 0       # every finished run

An erasure run needs per-item text on disk while it works (the erase report's before/after answers,
the evaluation's items, the copies of the request's sets it evaluates on). All of it goes under
``privacy.private_dir/<request id>-<run>/`` and nowhere else: the registry, Prefect, the logs and the
Data Docs get digests and counts. A run folder carries ``run.json`` (request id, run id, creation time);
a run whose version is not registered yet (``registration.json`` without ``registered.json``, see
`unierase.stages.register`) is kept by an age-based purge, since it holds the only copy of the edit.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from unierase.config import PrivacyConfig
from unierase.inputs import check_request_id

logger = logging.getLogger(__name__)

RUN_RECORD = "run.json"
PENDING_MARK, DONE_MARK = "registration.json", "registered.json"
_DAY_S = 86400.0


def private_root(root: str | Path, config: PrivacyConfig) -> Path:
    """The private area of a project (``privacy.private_dir``, relative to the repo root)."""
    return (Path(root) / config.private_dir).resolve()


def private_run_dir(root: str | Path, config: PrivacyConfig, request_id: str, run_id: str) -> Path:
    """A run's private folder, created with its ``run.json``: ``<private_dir>/<request id>-<run id[:8]>``."""
    run_dir = private_root(root, config) / f"{check_request_id(request_id)}-{run_id[:8]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    record = run_dir / RUN_RECORD
    if not record.is_file():
        body = {"request_id": request_id, "run_id": run_id, "created_at": time.time()}
        record.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    return run_dir


def run_record(run_dir: Path) -> dict:
    """A run folder's ``run.json`` (empty when it is missing or unreadable)."""
    try:
        record = json.loads((run_dir / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def run_dirs(root: str | Path, config: PrivacyConfig, request_id: str | None = None) -> list[Path]:
    """The run folders of the private area, oldest name first; only ``request_id``'s when given."""
    area = private_root(root, config)
    runs = sorted(p for p in area.iterdir() if p.is_dir()) if area.is_dir() else []
    return [p for p in runs if request_id is None or run_record(p).get("request_id") == request_id]


def run_age_days(run_dir: Path, now: float | None = None) -> float:
    """Days since a run folder was created (its ``run.json``; else its modification time)."""
    try:
        created = float(run_record(run_dir)["created_at"])
    except (KeyError, TypeError, ValueError):
        created = run_dir.stat().st_mtime
    return ((now if now is not None else time.time()) - created) / _DAY_S


def pending_registration(run_dir: Path) -> bool:
    """Whether a run's edit still waits to be registered (its folder holds the only copy)."""
    return (run_dir / PENDING_MARK).is_file() and not (run_dir / DONE_MARK).is_file()


@dataclass
class PurgeResult:
    """What a purge did.

    Attributes:
        removed: Run folders deleted.
        kept_pending: Run folders kept because their version is not registered yet.
    """

    removed: list[Path] = field(default_factory=list)
    kept_pending: list[Path] = field(default_factory=list)


def purge_private(
    root: str | Path,
    config: PrivacyConfig,
    older_than_days: float | None = None,
    request_id: str | None = None,
    now: float | None = None,
) -> PurgeResult:
    """Deletes run folders from the private area.

    Args:
        root: Repo root.
        config: The privacy section (its ``retention_days`` is the default age).
        older_than_days: Delete runs at least this old; None uses ``config.retention_days``.
        request_id: Only this request's runs, and every one of them unless an age is given.
        now: The current time (seconds since the epoch), for tests; the clock when None.

    Returns:
        The folders removed and the pending ones kept.

    Raises:
        InputError: The request id is not a valid one.
        ValueError: Neither an age nor a request is given and ``retention_days`` is None.
    """
    if request_id is not None:
        check_request_id(request_id)
        age = older_than_days
    else:
        age = older_than_days if older_than_days is not None else config.retention_days
        if age is None:
            raise ValueError("privacy.retention_days is None: give --older-than DAYS or --request ID")
    result = PurgeResult()
    for run in run_dirs(root, config, request_id):
        if age is not None and run_age_days(run, now) < age:
            continue
        if request_id is None and pending_registration(run):
            result.kept_pending.append(run)
            continue
        shutil.rmtree(run)
        result.removed.append(run)
    logger.info(
        "purged %d private run folder(s); kept %d awaiting registration", len(result.removed), len(result.kept_pending)
    )
    return result


def purge_run(run_dir: str | Path) -> None:
    """Deletes one run's private folder (after its registration)."""
    shutil.rmtree(run_dir, ignore_errors=True)
