"""Moving the ``champion`` alias: promotion through the gate, and rollback. Every move is audited."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mlflow.exceptions import MlflowException

from mlflow import MlflowClient
from unierase.registry import tags as T
from unierase.registry.audit import append_audit
from unierase.registry.lineage import lineage

logger = logging.getLogger(__name__)


def current_alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version an alias points at, or None when it is unset."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def promote(client: MlflowClient, name: str, version: str, alias: str, reason: str) -> dict:
    """Points ``alias`` at an accepted (or base) version and audits the move.

    Raises:
        ValueError: The version was rejected by the gate.
    """
    status = client.get_model_version(name, str(version)).tags.get(T.STATUS)
    if status == T.REJECTED:
        raise ValueError(f"{name} version {version} was rejected by the evaluation gate; it cannot be {alias}")
    previous = current_alias_version(client, name, alias)
    client.set_registered_model_alias(name, alias, str(version))
    logger.info("%s@%s: %s -> %s", name, alias, previous, version)
    return append_audit(
        client,
        name,
        {"action": "promote", "alias": alias, "from_version": previous, "to_version": str(version), "reason": reason},
    )


@dataclass(frozen=True)
class RollbackResult:
    """A rollback: where the alias was and is, and the erasure requests it re-exposes.

    Attributes:
        from_version: Where the alias pointed before (None if unset).
        to_version: Where it points now.
        reexposed_requests: Request ids applied in the old champion's lineage but not in the new one's:
            the knowledge they erased is back in service.
        audit_entry: The stored audit entry.
    """

    from_version: str | None
    to_version: str
    reexposed_requests: list[str]
    audit_entry: dict


def reexposed_requests(client: MlflowClient, name: str, from_version: str | None, to_version: str) -> list[str]:
    """Requests in the lineage of ``from_version`` and not in that of ``to_version``, oldest first."""
    if from_version is None:
        return []
    kept = {r.request_id for r in lineage(client, name, to_version)}
    return [r.request_id for r in lineage(client, name, from_version) if r.request_id and r.request_id not in kept]


def rollback(client: MlflowClient, name: str, to_version: str, alias: str, reason: str) -> RollbackResult:
    """Moves ``alias`` back to ``to_version``, audits the move and lists the re-exposed requests.

    Raises:
        ValueError: The reason is empty, the version does not exist or was rejected by the gate.
    """
    if not reason.strip():
        raise ValueError("a rollback needs a reason (--reason TEXT): it goes into the audit log")
    try:
        target = client.get_model_version(name, str(to_version))
    except MlflowException as err:
        raise ValueError(f"{name} has no version {to_version}") from err
    if target.tags.get(T.STATUS) == T.REJECTED:
        raise ValueError(f"{name} version {to_version} was rejected by the evaluation gate; roll back to another")
    previous = current_alias_version(client, name, alias)
    exposed = reexposed_requests(client, name, previous, str(to_version))
    client.set_registered_model_alias(name, alias, str(to_version))
    entry = append_audit(
        client,
        name,
        {
            "action": "rollback",
            "alias": alias,
            "from_version": previous,
            "to_version": str(to_version),
            "reason": reason,
            "reexposed_requests": exposed,
        },
    )
    logger.warning("%s@%s rolled back %s -> %s; re-exposed requests: %s", name, alias, previous, to_version, exposed)
    return RollbackResult(previous, str(to_version), exposed, entry)
