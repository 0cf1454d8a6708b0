"""Idempotent requests: whether an erasure request has already produced a version that the run at hand
would only repeat."""

from __future__ import annotations

from mlflow.exceptions import MlflowException

from mlflow import MlflowClient
from unierase.registry import tags as T
from unierase.registry.lineage import lineage


def applied_request_version(client: MlflowClient, name: str, request_id: str, parent_version: str | None) -> str | None:
    """The version that request ``request_id`` already produced for a run building on ``parent_version``.

    A request counts as applied when a version carrying its id was registered on this same parent (a
    rerun, or a rerun after a rollback to that parent), or when the parent itself descends from such a
    version (the request's version, or a later one, is what the run would build on). A request whose
    version lies on another branch is a new erasure. Returns None when the request is new here.
    """
    if parent_version is None:  # nothing registered yet: every request is new
        return None
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    matches = {str(v.version): v.tags.get(T.PARENT_VERSION) for v in versions if v.tags.get(T.REQUEST_ID) == request_id}
    if not matches:
        return None
    ancestry = {record.version for record in lineage(client, name, parent_version)}
    for version, parent in sorted(matches.items(), key=lambda item: int(item[0])):
        if parent == str(parent_version) or version in ancestry:
            return version
    return None
