"""Helpers for the reliability tests: a slim tiny-model project, the erasure flow run as a separate
process (so that it can be killed), and a snapshot of everything a failed run must leave unchanged.

Imported by tests/test_kills.py, tests/test_concurrency.py, tests/test_tracking_unavailable.py and
tests/test_bad_inputs.py; run through them (``.venv/bin/python -m pytest tests/test_kills.py``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import yaml
from flow_repo import REPO, add_set, env, make_repo

from unierase.config import load_params
from unierase.data.builtin_facts import default_retain
from unierase.registry.store import connect

# On top of the tiny params: an evaluation that takes seconds (no embedder, no audits, short answers)
# and registry retries without waiting.
SLIM = {
    "edit": {"value_retries": 0},  # a random model binds nothing: extra rounds would only cost time
    "evaluation": {"max_new_tokens": 8, "audits": [], "similarity": False, "max_items_per_split": 2},
    "registry": {"retries": 1, "retry_delay_s": 0.5, "http_timeout_s": 10, "lock_timeout_s": 600},
}


def make_slim_repo(root: Path, overrides: dict | None = None) -> Path:
    """A tiny project (two forget facts, a retain set of three) with `SLIM` and ``overrides`` in its params."""
    make_repo(root, forget_count=2)
    raw = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    for section, values in {**SLIM, **(overrides or {})}.items():
        raw.setdefault(section, {}).update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    load_params(root / "params.yaml")  # the overrides are valid
    add_set(root, "slim-retain", default_retain()[:3])  # commits params.yaml too
    return root


def flow_command(root: Path, base_model: Path, request_id: str, forget: str = "data/sets/forget.jsonl") -> list[str]:
    """``python -m flows.erasure`` on the project's slim sets."""
    return [
        sys.executable,
        "-m",
        "flows.erasure",
        "--root",
        str(root),
        "--base-model",
        str(base_model),
        "--forget",
        str(root / forget),
        "--retain",
        str(root / "data/requests/slim-retain.jsonl"),
        "--request-id",
        request_id,
    ]


def flow_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a flow process: the venv first on PATH, the repo root importable, the test
    session's Prefect server (`prefect_harness` must be active)."""
    from prefect.settings import PREFECT_API_URL

    # The checkout first, then whatever path the caller set (a worktree's src/ before the venv's install).
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    out = {**env(), "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": path, **(extra or {})}
    for name in ("UNIERASE_FAULT_AT", "UNIERASE_PAUSE_AT", "UNIERASE_PAUSE_FILE"):
        if extra is None or name not in extra:
            out.pop(name, None)
    return out


def start_flow(command: list[str], log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """Starts a flow process from the repo root, its output going to ``log``."""
    handle = log.open("w")
    return subprocess.Popen(command, cwd=REPO, env=flow_env(extra_env), stdout=handle, stderr=subprocess.STDOUT)


def run_flow(command: list[str], log: Path, extra_env: dict[str, str] | None = None, timeout: float = 600) -> int:
    """Runs a flow process to its end; returns its exit code (negative: killed by that signal)."""
    process = start_flow(command, log, extra_env)
    try:
        return process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()


def tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.is_file() else ""


def registry_state(root: Path) -> dict:
    """Everything a refused input must leave as it was: every version and its tags, the aliases, the
    registered models' tags (the audit log), the MLflow runs, the data files and the params."""
    config = load_params(root / "params.yaml").registry
    client = connect(config, root)
    models = {m.name: {"tags": dict(m.tags), "aliases": dict(m.aliases)} for m in client.search_registered_models()}
    versions = sorted(
        (v.name, str(v.version), v.run_id, tuple(sorted(v.tags.items()))) for v in client.search_model_versions()
    )
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = sorted((r.info.run_id, r.info.status) for r in client.search_runs(experiments)) if experiments else []
    files = {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted([root / "params.yaml", *(root / "data").rglob("*")])
        if p.is_file()
    }
    return {"models": models, "versions": versions, "runs": runs, "files": files}


def version_artifacts(root: Path, name: str, version: str) -> set[str]:
    """Relative paths of every stored file of a version: its run's artifacts (``delta/...``,
    ``reports/...``) and its logged model's (``model/MLmodel``, ``model/artifacts/model/...``)."""
    config = load_params(root / "params.yaml").registry
    client = connect(config, root)
    found, stack = set(), [""]
    while stack:
        for item in client.list_artifacts(client.get_model_version(name, version).run_id, stack.pop() or None):
            (stack.append(item.path) if item.is_dir else found.add(item.path))
    model = Path(client.get_model_version_download_uri(name, version).removeprefix("file://"))
    return found | {f"model/{p.relative_to(model)}" for p in model.rglob("*") if p.is_file()}


def kill_env(phase: str) -> dict[str, str]:
    """The environment that makes a flow process SIGKILL itself at ``phase`` (`unierase.faults`)."""
    return {"UNIERASE_FAULT_AT": phase}
