"""The erasure request inbox: one JSON file per pending request, processed in name order.

A request file ``data/inbox/2026-01-31-acme-42.json``::

    {"request_id": "acme-42", "forget": "data/inbox/acme-42.forget.jsonl",
     "retain": "data/retain.jsonl", "requested_by": "dpo@acme.example", "reason": "GDPR art. 17"}

``forget`` and ``retain`` are paths relative to the repo root (``retain`` is optional). A processed
request moves to ``done/`` (or ``failed/``) with its outcome added; the move is a write of the new
file followed by removal of the old, so a request is never lost or half-written.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from unierase.atomic import write_text_atomic
from unierase.inputs import REQUEST_ID_PATTERN

DONE, FAILED = "done", "failed"


class ErasureRequest(BaseModel):
    """One pending erasure request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str = Field(pattern=REQUEST_ID_PATTERN, description="Unique id of the request (a folder name, a tag).")
    forget: str = Field(min_length=1, description="Forget set (JSON Lines), relative to the repo root.")
    retain: str | None = Field(default=None, description="Retain set (JSON Lines), relative to the repo root.")
    requested_by: str | None = Field(default=None, description="Who asked for the erasure.")
    reason: str | None = Field(default=None, description="Why (legal basis, ticket).")


def pending_requests(inbox_dir: Path) -> list[Path]:
    """Request files waiting in the inbox, in name order (the order they are applied in)."""
    inbox_dir = Path(inbox_dir)
    if not inbox_dir.is_dir():
        return []
    return sorted(p for p in inbox_dir.glob("*.json") if p.is_file())


def read_request(path: Path) -> ErasureRequest:
    """Parses a request file.

    Raises:
        ValueError: The file is not JSON or lacks a required field; the message names the file.
    """
    try:
        return ErasureRequest.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a JSON request file ({err})") from err
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ValueError(f"{path}: {problems}") from err


def write_request(inbox_dir: Path, request: ErasureRequest, prefix: str | None = None) -> Path:
    """Drops a request into the inbox (``<prefix or UTC time>-<id>.json``), atomically."""
    stamp = prefix or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    path = Path(inbox_dir) / f"{stamp}-{re.sub(r'[^A-Za-z0-9_.-]', '_', request.request_id)}.json"
    _write_json(path, request.model_dump(exclude_none=True))
    return path


def mark_request(path: Path, outcome: str, details: dict) -> Path:
    """Moves a processed request to ``done/`` or ``failed/`` beside it, with ``details`` under ``outcome``."""
    if outcome not in (DONE, FAILED):
        raise ValueError(f"outcome must be {DONE!r} or {FAILED!r}, not {outcome!r}")
    path = Path(path)
    body = json.loads(path.read_text(encoding="utf-8"))
    body["outcome"] = {
        **details,
        "status": outcome,
        "processed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    target = path.parent / outcome / path.name
    _write_json(target, body)
    path.unlink()
    return target


def _write_json(path: Path, body: dict) -> None:
    write_text_atomic(path, json.dumps(body, indent=2, ensure_ascii=False) + "\n")
