"""A run killed (SIGKILL) at each phase leaves either no new version or a complete one, never moves the
champion before promotion completed, and a rerun of the same request finishes it once.

One tiny project, one request ("kill-1"): the flow process is killed at validation, token learning, the
edit, evaluation, registration (after the run logged everything, before the version exists) and
promotion (after the version exists), each time a rerun of the request killed later; a last rerun
without a fault finishes the request. Real Prefect (the session's server), SQLite MLflow, DVC.

    .venv/bin/python -m pytest tests/test_kills.py
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from flow_runs import flow_command, kill_env, make_slim_repo, registry_state, run_flow, tail, version_artifacts

from unierase.config import load_params
from unierase.faults import PHASES
from unierase.registry import tags as T
from unierase.registry.audit import read_audit
from unierase.registry.promotion import current_alias_version
from unierase.registry.store import connect
from unierase.stages.private import pending_registration, run_dirs

REQUEST = "kill-1"
# Artifacts every complete version has: the pyfunc model with its transformers directory, and (for an
# erasure) the delta and the gate summary.
MODEL_FILES = {"model/MLmodel", "model/artifacts/model/config.json", "model/artifacts/model/model.safetensors"}
# An erasure stores its delta against its parent (unierase.registry.packing): the recipe, the manifest, the
# changed bytes of the weights and the keys of its request.
ERASURE_FILES = {
    "model/MLmodel",
    "model/artifacts/model/unierase-delta.json",
    "model/artifacts/model/unierase-manifest.json",
    "model/artifacts/model/delta/model.safetensors",
    "model/artifacts/model/key_blocks.safetensors",
    "reports/erasure-summary.json",
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, prefect_harness) -> dict:
    root = make_slim_repo(tmp_path_factory.mktemp("kills") / "repo")
    return {"root": root, "command": flow_command(root, tiny_llama_dir, REQUEST), "logs": root.parent}


def _client(root: Path):
    return connect(load_params(root / "params.yaml").registry, root)


def _check_complete(root: Path, state: dict) -> None:
    """Every registered version has all its artifacts and its lineage tags."""
    for name, version, _run, tags in state["versions"]:
        tags = dict(tags)
        assert T.STATUS in tags and T.PARENT_VERSION in tags, f"version {version} lacks its tags: {tags}"
        expected = MODEL_FILES if tags[T.KIND] == T.BASE else ERASURE_FILES
        artifacts = version_artifacts(root, name, version)
        assert expected <= artifacts, f"version {version} misses {sorted(expected - artifacts)}"
        if tags[T.KIND] == T.ERASURE:
            assert any(a.startswith("model/artifacts/model/delta/") for a in artifacts), (
                f"version {version} has no delta"
            )
            # Complete means rebuildable: base + its chain of deltas give the registered directory.
            from unierase.digests import model_dir_sha256
            from unierase.registry.rebuild import materialize

            assert model_dir_sha256(materialize(_client(root), name, version)) == tags[T.MODEL_SHA256]


@pytest.mark.parametrize("phase", PHASES)
def test_kill_at_phase_leaves_no_half_version(project: dict, phase: str) -> None:
    root = project["root"]
    before = registry_state(root)
    log = project["logs"] / f"kill-{phase}.log"
    code = run_flow(project["command"], log, kill_env(phase))
    assert code == -signal.SIGKILL, f"the run was not killed at {phase} (exit {code}):\n{tail(log)}"
    after = registry_state(root)
    _check_complete(root, after)
    new = {v[1] for v in after["versions"]} - {v[1] for v in before["versions"]}
    erasures = [v for v in after["versions"] if dict(v[3]).get(T.REQUEST_ID) == REQUEST]
    aliases = lambda state: {n: m["aliases"] for n, m in state["models"].items()}  # noqa: E731
    if phase in ("validate", "token", "edit", "evaluate"):
        assert after["versions"] == before["versions"] and aliases(after) == aliases(before)
        assert not new and not erasures
    elif phase == "register":
        # The base was registered (complete) and made champion; the erasure's run logged everything but
        # was killed before its version existed: no erasure version, the run left marked RUNNING.
        assert not erasures
        assert {dict(v[3])[T.KIND] for v in after["versions"]} == {T.BASE}
        assert any(status == "RUNNING" for _, status in after["runs"])
        name = after["versions"][0][0]
        assert current_alias_version(_client(root), name, "champion") == "1"
        assert [
            run
            for run in run_dirs(root, load_params(root / "params.yaml").privacy, REQUEST)
            if pending_registration(run)
        ]
    else:  # promote: the version exists, complete and accepted; champion did not move
        assert [v[1] for v in erasures] == ["2"] and dict(erasures[0][3])[T.STATUS] == T.ACCEPTED
        assert aliases(after) == aliases(before)
        # The rerun first closed the run the register kill left RUNNING.
        assert not any(status == "RUNNING" for _, status in after["runs"])


def test_rerun_finishes_the_request_once(project: dict) -> None:
    root = project["root"]
    log = project["logs"] / "rerun.log"
    assert run_flow(project["command"], log) == 0, tail(log)
    state = registry_state(root)
    _check_complete(root, state)
    erasures = [(v[1], dict(v[3])) for v in state["versions"] if dict(v[3]).get(T.REQUEST_ID) == REQUEST]
    assert [v for v, _ in erasures] == ["2"], "the request has exactly one version"
    name = state["versions"][0][0]
    client = _client(root)
    assert current_alias_version(client, name, "champion") == "2"
    assert erasures[0][1][T.PARENT_VERSION] == "1"
    moves = [(e["from_version"], e["to_version"]) for e in read_audit(client, name)]
    assert moves == [(None, "1"), ("1", "2")]
    assert all(status in ("FINISHED", "KILLED") for _, status in state["runs"])
    # No kept run of the request still waits for a registration.
    privacy = load_params(root / "params.yaml").privacy
    assert not [run for run in run_dirs(root, privacy, REQUEST) if pending_registration(run)]
