"""Full transformers directories of registered versions, rebuilt from the base version and the chain of
deltas, checked at every step and cached by digest.

    from unierase.registry.rebuild import materialize
    model_dir = materialize(client, "unierase-smollm2-135m-instruct", "4")

A version stored in full (the base, a baseline's full copy) is its own directory; a delta version
(`unierase.registry.packing`) is its parent's directory plus its delta. Every version's stored files
are checked against its manifest (and the manifest against the version's tag) whenever it is
rebuilt, a delta version's small files every time it is resolved, and each rebuilt directory against
its recorded SHA-256. Rebuilt directories are cached under ``$UNIERASE_MODEL_CACHE`` (default
``$UNIERASE_CACHE/models``, i.e. ``~/.cache/unierase/models``) by that digest: built in a temporary
directory, then renamed into place, so a reader never sees half a directory; a cached directory is
checked again before it is used.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from mlflow import MlflowClient
from unierase.digests import model_dir_sha256
from unierase.registry import tags as T
from unierase.registry.integrity import MANIFEST, ArtifactDigestError, verify_delta, verify_model_dir
from unierase.registry.packing import RECIPE, unpack_delta

logger = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"  # key of the stored directory among the pyfunc's artifacts


def model_cache_dir() -> Path:
    """Where rebuilt directories are cached: ``$UNIERASE_MODEL_CACHE``, else ``<cache>/models``."""
    from unierase.model.default import default_cache_dir

    return Path(os.environ.get("UNIERASE_MODEL_CACHE") or default_cache_dir() / "models")


def statistics_dir() -> Path:
    """The root of the statistics cache a first edit's preserved statistics are looked up in."""
    from unierase.model.default import default_cache_dir

    return default_cache_dir()


def materialize(client: MlflowClient, name: str, version: str) -> Path:
    """The full, checked transformers directory of ``name`` version ``version`` (in the cache).

    Raises:
        ArtifactDigestError: A stored file of this version or of an ancestor, or a rebuilt directory,
            does not have its registered SHA-256 (the message names the file).
    """
    record = client.get_model_version(name, str(version))
    expected = record.tags.get(T.MODEL_SHA256)
    full = record.tags.get(T.STORAGE, "full") == "full"
    if full and expected and (hit := _cached(expected)) is not None:
        return hit  # a full version is only read again when its rebuilt copy is missing or changed
    root = model_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        stored = download_stored(f"models:/{name}/{version}", Path(tmp))
        return build_from_stored(stored, record.tags.get(T.MANIFEST_SHA256), client, expected)


def download_stored(model_uri: str, dst: Path) -> Path:
    """Downloads a version's model artifact into ``dst``; returns its stored directory."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    spec = yaml.safe_load((local / "MLmodel").read_text())
    return local / spec["flavors"]["python_function"]["artifacts"][MODEL_ARTIFACT]["path"]


def build_from_stored(
    stored: Path, manifest_sha256: str | None = None, client: MlflowClient | None = None, expected: str | None = None
) -> Path:
    """The full directory a version's stored directory stands for: checked, rebuilt when it is a delta
    (its parent through the registry), cached by digest.

    Args:
        stored: The downloaded model artifact directory (manifest, and files or delta).
        manifest_sha256: The manifest digest the registry recorded, when at hand.
        client: Registry client for a delta's parent (the current tracking URI's when None).
        expected: The directory's registered SHA-256, when at hand.
    """
    manifest = verify_model_dir(stored, manifest_sha256)
    verify_delta(manifest)  # versions registered before deltas: their before/after delta, checked too
    recipe_path = Path(stored) / RECIPE
    if not recipe_path.is_file():
        digest = _sha_without_manifest(stored)
        if expected and digest != expected:
            raise ArtifactDigestError(f"stored directory: SHA-256 {digest} is not the registered {expected}")
        if (hit := _cached(digest)) is not None:
            return hit
        return _into_cache(digest, lambda out: _copy_without_manifest(stored, out))
    recipe = json.loads(recipe_path.read_text(encoding="utf-8"))
    digest = recipe["model_sha256"]
    if expected and digest != expected:
        raise ArtifactDigestError(f"{RECIPE}: result SHA-256 {digest} is not the registered {expected}")
    if (hit := _cached(digest)) is not None:
        return hit
    parent = materialize(client or MlflowClient(), recipe["registered_model"], recipe["parent_version"])
    return _into_cache(digest, lambda out: unpack_delta(parent, stored, out, statistics_dir()))


def _cached(digest: str) -> Path | None:
    """The cached directory of ``digest`` if it is there and still has that digest (else it is dropped)."""
    path = model_cache_dir() / digest
    if not (path / "config.json").is_file():
        return None
    if model_dir_sha256(path) == digest:
        return path
    logger.warning("cached model %s changed on disk; rebuilding it", path)
    shutil.rmtree(path, ignore_errors=True)
    return None


def _into_cache(digest: str, build) -> Path:
    """Builds a directory with ``build(out)`` beside the cache entry, checks it, renames it into place."""
    root = model_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / digest
    with tempfile.TemporaryDirectory(dir=root, prefix=".build-") as tmp:
        out = Path(tmp) / "model"
        build(out)
        if (actual := model_dir_sha256(out)) != digest:
            raise ArtifactDigestError(f"rebuilt directory: SHA-256 {actual} is not the registered {digest}")
        try:
            out.rename(target)
        except OSError:  # another process cached it first: theirs has the same digest
            if _cached(digest) is None:
                raise
    logger.info("model %s cached at %s", digest[:12], target)
    return target


def _sha_without_manifest(stored: Path) -> str:
    return model_dir_sha256(stored, exclude=[MANIFEST])


def _copy_without_manifest(stored: Path, out: Path) -> Path:
    """A copy of a stored full directory, less the registry's manifest (hard links where possible: the
    download is a private temporary copy)."""

    def copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(
        stored,
        out,
        copy_function=copy,
        ignore=lambda d, names: [n for n in names if n == MANIFEST and Path(d) == Path(stored)],
    )
    return out
