"""Integrity of stored versions: the SHA-256 of every file a version stores, recorded at registration and
checked on every load, so a file changed behind the registry's back is refused by name.

A version's model artifact carries ``unierase-manifest.json``: the digest of each file it stores (its
transformers directory, or for a delta version its recipe, delta files and key blocks,
`unierase.registry.packing`) and, for an erasure registered before versions were deltas, where its
before/after weight delta lies (run and artifact path) and its digest. The
manifest's own digest is a version tag (``unierase.manifest_sha256``), so a manifest rewritten to match a
changed file is caught wherever the registry is at hand (`export_model_dir`, the flow's parent).
"""

from __future__ import annotations

import json
from pathlib import Path

from unierase.digests import file_sha256

MANIFEST = "unierase-manifest.json"


class ArtifactDigestError(ValueError):
    """A stored file whose bytes are not those recorded at registration."""


def write_manifest(model_dir: Path, delta: dict | None = None) -> Path:
    """Writes the manifest into ``model_dir`` (the staged copy about to be logged); returns its path.

    Args:
        model_dir: The transformers directory as it will be stored.
        delta: ``{"run_id", "artifact_path", "sha256"}`` of a separately logged weight delta (versions
            registered before deltas; None now).
    """
    files = {
        str(p.relative_to(model_dir)): file_sha256(p)
        for p in sorted(model_dir.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    path = model_dir / MANIFEST
    path.write_text(json.dumps({"files": files, "delta": delta}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def verify_model_dir(model_dir: Path, manifest_sha256: str | None = None) -> dict:
    """Checks every file of a stored transformers directory against its manifest; returns the manifest.

    Args:
        model_dir: The downloaded directory.
        manifest_sha256: The manifest's digest as the registry recorded it, when at hand.

    Raises:
        ArtifactDigestError: The manifest is missing or changed, a recorded file is missing or its
            SHA-256 differs (the message names the file), or an unrecorded file appeared.
    """
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        raise ArtifactDigestError(f"{model_dir}: no {MANIFEST}; the version's files cannot be checked")
    if manifest_sha256 is not None and (actual := file_sha256(path)) != manifest_sha256:
        raise ArtifactDigestError(f"{MANIFEST}: SHA-256 {actual} is not the registered {manifest_sha256}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        recorded = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as err:
        raise ArtifactDigestError(f"{MANIFEST}: unreadable ({err}); its SHA-256 is not the one registered") from None
    for name, expected in recorded.items():
        file = Path(model_dir) / name
        if not file.is_file():
            raise ArtifactDigestError(f"{name}: recorded at registration, missing from the stored version")
        if (actual := file_sha256(file)) != expected:
            raise ArtifactDigestError(f"{name}: SHA-256 {actual} is not the registered {expected}")
    extra = {
        str(p.relative_to(model_dir)) for p in Path(model_dir).rglob("*") if p.is_file() and p.name != MANIFEST
    } - set(manifest["files"])
    if extra:
        raise ArtifactDigestError(f"{sorted(extra)}: not recorded at registration (no SHA-256 to check)")
    return manifest


def verify_delta(manifest: dict) -> None:
    """Checks the erasure's weight delta (a run artifact) against the digest in its manifest."""
    import mlflow

    delta = manifest.get("delta")
    if not delta:
        return
    local = Path(mlflow.artifacts.download_artifacts(run_id=delta["run_id"], artifact_path=delta["artifact_path"]))
    if (actual := file_sha256(local)) != delta["sha256"]:
        raise ArtifactDigestError(f"{local.name}: SHA-256 {actual} is not the registered {delta['sha256']}")
