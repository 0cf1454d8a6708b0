"""Pipeline overhead: the whole Prefect erasure flow (validation, DVC provenance, MLflow registration and
promotion) against `erase_stage` alone on the same request, and the bytes the registry stores per version.
Run as part of ``python -m bench.cost`` (``--no-pipeline`` leaves it out).

Both sides erase the same forget set from the same base model with the same learned token and the same
warm preserved-key statistics, so the difference is what the pipeline adds. The flow runs in a fresh
temporary erasure project (`unierase.data.project.init_project`: git, DVC, the sets tracked) with its own
SQLite MLflow store, under a temporary Prefect server (``prefect_test_harness``, whose start-up is measured
apart); it is the project's first erasure, so it also registers the base model as version 1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bench.lib.measure import measure
from unierase.config import Params
from unierase.data.facts import Fact
from unierase.data.project import init_project


@contextlib.contextmanager
def _env(key: str, value: str) -> Iterator[None]:
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _local_bytes(uri: str) -> int | None:
    path = Path(urlparse(uri).path)
    return _tree_bytes(path) if path.is_dir() else None  # None: an artifact store that is not a local folder


def _version_storage(params: Params, root: Path, name: str, version: str) -> dict[str, Any]:
    """Bytes a registered version occupies: its logged model (a full copy) and its run's artifacts
    (the delta and the reports), each counted on disk."""
    from unierase.registry.store import connect

    client = connect(params.registry, root)
    mv = client.get_model_version(name, version)
    run_artifacts = Path(urlparse(client.get_run(mv.run_id).info.artifact_uri).path)
    out: dict[str, Any] = {"version": version}
    if run_artifacts.is_dir():
        out.update({f"run_{p.name}_bytes": _tree_bytes(p) for p in sorted(run_artifacts.iterdir()) if p.is_dir()})
    if str(mv.source).startswith("models:/"):
        logged = client.get_logged_model(str(mv.source).removeprefix("models:/"))
        out["model_bytes"] = _local_bytes(logged.artifact_location)
    else:
        out["model_bytes"] = _local_bytes(str(mv.source))
    return out


def measure_pipeline_overhead(
    model_dir: Path,
    forget: list[Fact],
    retain: list[Fact],
    params: Params,
    token_path: Path,
    cache_dir: Path,
    work: Path,
    start_harness: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Times the flow and the core on one request; returns the figures and the overhead share.

    Args:
        model_dir: Base model.
        forget: The request's facts.
        retain: Facts to keep.
        params: Configuration of both runs (written as the repo's ``params.yaml``).
        token_path: The token learned for ``model_dir``, used by both.
        cache_dir: Preserved-key statistics cache, already warm for ``model_dir``.
        work: Scratch directory (replaced).
        start_harness: Start a temporary Prefect server; False when one is already active (tests).
        progress: Progress bars of the core run.
    """
    from flows.erasure import erasure_flow
    from unierase.digests import model_dir_sha256
    from unierase.stages.artifacts import load_token
    from unierase.stages.erase import erase_stage
    from unierase.stages.token import store_cached_token, token_cache_path

    shutil.rmtree(work, ignore_errors=True)
    root = init_project(work / "repo", params, forget, retain)
    sets = root / "data" / "sets"
    with measure() as core:
        erase_stage(
            sets / "forget.jsonl",
            work / "core",
            params,
            model_dir,
            sets / "retain.jsonl",
            token_path,
            cache_dir,
            progress,
        )
    # The flow finds the token and the statistics in the default cache, which is cache_dir while it runs.
    store_cached_token(load_token(token_path), token_cache_path(cache_dir, model_dir_sha256(model_dir), params))
    with contextlib.ExitStack() as stack:
        with measure() as startup:
            if start_harness:
                from prefect.testing.utilities import prefect_test_harness

                stack.enter_context(prefect_test_harness(server_startup_timeout=120))
        stack.enter_context(_env("UNIERASE_CACHE", str(cache_dir)))
        with measure() as flow:
            summary = erasure_flow(
                forget=sets / "forget.jsonl",
                retain=sets / "retain.jsonl",
                request_id="bench-overhead",
                base_model=model_dir,
                root=root,
            )
    name = summary["registered_model"]
    storage = [_version_storage(params, root, name, v) for v in (summary["parent_version"], summary["version"])]
    return {
        "forget_size": len(forget),
        "core_seconds": core.seconds,
        "core_peak_rss_mb": core.peak_rss_mb,
        "flow_seconds": flow.seconds,
        "flow_peak_rss_mb": flow.peak_rss_mb,
        "overhead_seconds": flow.seconds - core.seconds,
        "overhead_share": (flow.seconds - core.seconds) / flow.seconds,
        "prefect_server_startup_seconds": startup.seconds if start_harness else None,
        "version": summary["version"],
        "status": summary["status"],
        "version_storage": storage,
    }
