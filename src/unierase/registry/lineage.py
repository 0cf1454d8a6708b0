"""Lineage: the chain of versions from the base model to a version, by ``unierase.parent_version``."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlflow import MlflowClient
from unierase.registry import tags as T


@dataclass(frozen=True)
class VersionRecord:
    """What the registry knows about one version.

    Attributes:
        version: Version number.
        kind: ``base`` or ``erasure``.
        status: ``base``, ``accepted`` or ``rejected``.
        parent: Parent version number, or None for the base.
        request_id: The erasure request it applied, or None.
        run_id: The MLflow run that produced it.
        aliases: Aliases pointing at it now.
        data: Lineage tags about data (``unierase.data.*``: digests, paths, DVC revisions).
        tags: Every ``unierase.*`` tag.
        metrics: The run's metrics.
    """

    version: str
    kind: str
    status: str
    parent: str | None
    request_id: str | None
    run_id: str | None
    aliases: list[str] = field(default_factory=list)
    data: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def version_record(client: MlflowClient, name: str, version: str) -> VersionRecord:
    """The record of one version, its run's metrics included."""
    mv = client.get_model_version(name, str(version))
    tags = {k: v for k, v in mv.tags.items() if k.startswith("unierase.")}
    metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
    parent = tags.get(T.PARENT_VERSION)
    return VersionRecord(
        version=str(mv.version),
        kind=tags.get(T.KIND, "unknown"),
        status=tags.get(T.STATUS, "unknown"),
        parent=None if parent in (None, "none") else parent,
        request_id=tags.get(T.REQUEST_ID),
        run_id=mv.run_id,
        aliases=list(mv.aliases),
        data={k: v for k, v in tags.items() if k.startswith("unierase.data.")},
        tags=tags,
        metrics=dict(metrics),
    )


def lineage(client: MlflowClient, name: str, version: str) -> list[VersionRecord]:
    """The chain from the base model to ``version``, base first.

    Raises:
        ValueError: The parent tags form a cycle.
    """
    chain, seen, current = [], set(), str(version)
    while current is not None:
        if current in seen:
            raise ValueError(f"{name}: the parent tags of version {current} form a cycle")
        seen.add(current)
        record = version_record(client, name, current)
        chain.append(record)
        current = record.parent
    return chain[::-1]


def format_lineage(chain: list[VersionRecord]) -> str:
    """A human-readable chain: one block per version with request, data digests, metrics and run."""
    lines = []
    for record in chain:
        aliases = f" @{', @'.join(record.aliases)}" if record.aliases else ""
        lines.append(f"version {record.version} [{record.kind}, {record.status}]{aliases}")
        lines.append(f"  parent: {record.parent or '-'}   request: {record.request_id or '-'}   run: {record.run_id}")
        for key in ("unierase.git_commit", "unierase.config_hash", "unierase.flow_run_id", T.DELTA_SHA256):
            if key in record.tags:
                lines.append(f"  {key.removeprefix('unierase.')}: {record.tags[key]}")
        for key, value in sorted(record.data.items()):
            lines.append(f"  {key.removeprefix('unierase.')}: {value}")
        if record.tags.get(T.GATE_FAILURES):
            lines.append(f"  gate failures: {record.tags[T.GATE_FAILURES]}")
        if record.metrics:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(record.metrics.items()) if not k.startswith("time_"))
            lines.append(f"  metrics: {shown}")
    return "\n".join(lines)
