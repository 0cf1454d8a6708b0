"""``unierase schedule`` serves the inbox deployment; a triggered run processes a pending request.

.venv/bin/pytest tests/test_schedule.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flow_repo import add_set, env, make_repo
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL

from unierase.data.builtin_facts import default_retain
from unierase.data.inbox import ErasureRequest, mark_request, pending_requests, read_request, write_request

REPO = Path(__file__).resolve().parent.parent
DEPLOYMENT = "unierase-inbox/tiny-inbox"


def _wait_for_deployment(timeout_s: float = 180.0):
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            try:
                return client.read_deployment_by_name(DEPLOYMENT)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)


def test_served_schedule_processes_the_inbox(tmp_path: Path, tiny_llama_dir: Path, prefect_harness) -> None:
    root = make_repo(tmp_path / "repo", forget_count=4)
    retain = default_retain()
    forget, kept = add_set(root, "acme-forget", retain[:2]), add_set(root, "acme-retain", retain[2:])
    inbox = root / "data/inbox"
    request = ErasureRequest(
        request_id="acme-1",
        forget=str(forget.relative_to(root)),
        retain=str(kept.relative_to(root)),
        requested_by="dpo@acme",
    )
    pending = write_request(inbox, request, prefix="0001")
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "unierase"),
            "schedule",
            "--cron",
            "0 3 1 1 *",
            "--root",
            str(root),
            "--base-model",
            str(tiny_llama_dir),
        ],
        cwd=REPO,
        env={**env(), "PREFECT_API_URL": PREFECT_API_URL.value()},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deployment = _wait_for_deployment()
        assert deployment.schedules and deployment.schedules[0].schedule.cron == "0 3 1 1 *"
        assert deployment.global_concurrency_limit is not None and deployment.global_concurrency_limit.limit == 1
        flow_run = run_deployment(DEPLOYMENT, timeout=900)
        assert flow_run.state.is_completed(), (tmp_path / "serve.log").read_text()[-5000:]
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    assert pending_requests(inbox) == [] and not pending.exists()
    done = json.loads((inbox / "done" / pending.name).read_text())
    assert done["request_id"] == "acme-1"
    assert done["outcome"]["status"] == "done" and done["outcome"]["version"] == "2"
    assert done["outcome"]["version_status"] == "accepted" and done["outcome"]["champion"] == "2"
    assert done["outcome"]["parent_version"] == "1"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


def test_inbox_order_and_marking(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    second = write_request(inbox, ErasureRequest(request_id="b", forget="b.jsonl"), prefix="0002")
    first = write_request(inbox, ErasureRequest(request_id="a", forget="a.jsonl", reason="GDPR"), prefix="0001")
    assert pending_requests(inbox) == [first, second]
    assert read_request(first).reason == "GDPR"
    moved = mark_request(first, "done", {"version": "2"})
    assert pending_requests(inbox) == [second] and moved == inbox / "done" / first.name
    assert json.loads(moved.read_text())["outcome"]["version"] == "2"
    with pytest.raises(ValueError, match="outcome must be"):
        mark_request(second, "maybe", {})


def test_bad_request_file_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"request_id": "x y", "forget": ""}')
    with pytest.raises(ValueError, match=r"r\.json: request_id"):
        read_request(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON request file"):
        read_request(path)
