"""The audit log of alias moves. MLflow keeps no alias history, so every move (promotion, rollback) is
recorded as a registered-model tag ``unierase.audit.NNNNNN`` holding a JSON entry: the log lives in the
registry itself, next to what it describes, on the embedded store and on a tracking server alike."""

from __future__ import annotations

import getpass
import json
from datetime import datetime, timezone

from mlflow import MlflowClient
from unierase.registry.tags import AUDIT_PREFIX


def read_audit(client: MlflowClient, name: str) -> list[dict]:
    """Every audit entry of a registered model, oldest first."""
    tags = client.get_registered_model(name).tags
    return [json.loads(tags[k]) for k in sorted(k for k in tags if k.startswith(AUDIT_PREFIX))]


def append_audit(client: MlflowClient, name: str, entry: dict) -> dict:
    """Adds an entry, stamped with its sequence number, UTC time and user; returns the stored entry."""
    sequence = len(read_audit(client, name)) + 1
    stored = {
        "seq": sequence,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "user": getpass.getuser(),
        **entry,
    }
    client.set_registered_model_tag(name, f"{AUDIT_PREFIX}{sequence:06d}", json.dumps(stored, sort_keys=True))
    return stored
