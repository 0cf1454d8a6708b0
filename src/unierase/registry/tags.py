"""Names of the ``unierase.*`` tags on registered versions and on the registered model."""

from __future__ import annotations

KIND = "unierase.kind"  # "base" or "erasure"
PARENT_VERSION = "unierase.parent_version"  # "none" on the base version
REQUEST_ID = "unierase.request_id"
STATUS = "unierase.status"  # "base", "accepted" (passed the gate) or "rejected"
GATE_FAILURES = "unierase.gate.failures"
LEAK_VERDICT = "unierase.leak_verdict"  # the leak audits' verdict on the forget set: holds, or a redirection
DELTA_SHA256 = "unierase.delta_sha256"
MODEL_SHA256 = "unierase.model_sha256"
STORAGE = "unierase.storage"  # "full" (the whole directory) or "delta" (its parent's plus a delta)
MANIFEST_SHA256 = "unierase.manifest_sha256"  # digest of the stored files' manifest (registry/integrity.py)
FLOW_RUN_ID = "unierase.flow_run_id"
BASE_MODEL = "unierase.base_model"
AUDIT_PREFIX = "unierase.audit."  # registered-model tags, one per alias move: unierase.audit.000001

BASE, ERASURE = "base", "erasure"
ACCEPTED, REJECTED = "accepted", "rejected"
FULL, DELTA = "full", "delta"
