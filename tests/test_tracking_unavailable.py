"""The tracking server goes away mid-run: registration retries a bounded number of times, then the run
fails with one clear message that names the server and the command to register its kept outputs later;
nothing half-registered is left in service, and that command registers and promotes the edit once the
server is back. Also: a server that is down from the start fails the run at once, before any edit.

A real ``mlflow server`` (SQLite backend, local artifacts) on a loopback port; the flow process pauses
at registration (`unierase.faults`, ``UNIERASE_PAUSE_AT``) while the test stops the server.

    .venv/bin/python -m pytest tests/test_tracking_unavailable.py
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from flow_runs import flow_command, make_slim_repo, registry_state, run_flow, start_flow, tail

from unierase.cli import main as unierase_main
from unierase.config import load_params
from unierase.registry import tags as T
from unierase.registry.audit import read_audit
from unierase.registry.promotion import current_alias_version
from unierase.registry.store import connect
from unierase.stages.private import DONE_MARK, PENDING_MARK


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(root: Path, port: int, log: Path) -> subprocess.Popen:
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow/mlflow.db'}",
        "--default-artifact-root",
        str(root / "mlflow/artifacts"),
    ]
    (root / "mlflow").mkdir(exist_ok=True)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(command, cwd=root, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
        if server.poll() is not None:
            break
    server.kill()
    raise RuntimeError(f"mlflow server did not start:\n{tail(log)}")


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=30)


def _http_params(root: Path, port: int) -> str:
    raw = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    raw["registry"]["tracking_uri"] = f"http://127.0.0.1:{port}"
    (root / "http.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    return "http.yaml"


def test_server_down_from_the_start_fails_before_any_edit(
    tmp_path: Path, tiny_llama_dir: Path, prefect_harness
) -> None:
    root = make_slim_repo(tmp_path / "repo")
    port = _free_port()
    params = _http_params(root, port)  # nothing listens there
    log = tmp_path / "flow.log"
    started = time.monotonic()
    code = run_flow([*flow_command(root, tiny_llama_dir, "down-1"), "--params", params], log)
    output = tail(log, 20_000)
    assert code == 2, output
    assert re.search(rf"tracking server http://127\.0\.0\.1:{port} could not be reached \(.+\) after 2 attempt", output)
    assert "nothing was registered and no alias moved" in output
    assert time.monotonic() - started < 300
    assert not list((root / "outputs/private").glob("*/erase")), "no edit ran"


def test_server_lost_mid_run_keeps_outputs_for_a_later_register(
    tmp_path: Path, tiny_llama_dir: Path, prefect_harness, capsys: pytest.CaptureFixture
) -> None:
    root = make_slim_repo(tmp_path / "repo")
    port = _free_port()
    params = _http_params(root, port)
    server_log, flow_log, pause = tmp_path / "server.log", tmp_path / "flow.log", tmp_path / "paused"
    server = _start_server(root, port, server_log)
    try:
        flow = start_flow(
            [*flow_command(root, tiny_llama_dir, "lost-1"), "--params", params],
            flow_log,
            {"UNIERASE_PAUSE_AT": "register", "UNIERASE_PAUSE_FILE": str(pause)},
        )
        deadline = time.monotonic() + 600
        while not pause.exists() and flow.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pause.exists(), f"the flow never reached registration:\n{tail(flow_log)}"
    finally:
        _stop(server)  # the server goes away while the run registers
    pause.unlink()  # the run goes on, against a dead server
    resumed = time.monotonic()
    code = flow.wait(timeout=600)
    output = tail(flow_log, 30_000)
    assert code == 2, output
    assert time.monotonic() - resumed < 120, "bounded retries, not minutes of waiting"
    assert "could not be reached (registering the erasure) after 2 attempt(s)" in output
    kept = next((root / "outputs/private").glob("lost-1-*"))
    assert f"unierase register --run-dir {kept}" in output
    assert (kept / PENDING_MARK).is_file() and (kept / "erase/model/config.json").is_file()

    # Nothing half-registered: the base (registered before the pause) is the only version and champion.
    state = registry_state(root)
    assert [(v, dict(tags)[T.KIND]) for _, v, _, tags in state["versions"]] == [("1", T.BASE)]
    name = state["versions"][0][0]

    server = _start_server(root, port, server_log)  # the server is back
    try:
        assert unierase_main(["register", "--run-dir", str(kept), "--root", str(root), "--params", params]) == 0
        out = capsys.readouterr().out  # MLflow prints a "View run" line of its own first
        summary = json.loads(out[out.index("{\n") :])
        assert (summary["version"], summary["parent_version"], summary["champion"]) == ("2", "1", "2")
        # Running the command again registers nothing more.
        assert unierase_main(["register", "--run-dir", str(kept), "--root", str(root), "--params", params]) == 0
        out = capsys.readouterr().out
        assert json.loads(out[out.index("{\n") :])["already_registered"] is True
    finally:
        _stop(server)
    client = connect(load_params(root / "params.yaml").registry, root)
    versions = {str(v.version): v.tags for v in client.search_model_versions(f"name='{name}'")}
    assert sorted(versions) == ["1", "2"] and versions["2"][T.REQUEST_ID] == "lost-1"
    assert versions["2"][T.PARENT_VERSION] == "1" and versions["2"][T.STATUS] == T.ACCEPTED
    assert current_alias_version(client, name, "champion") == "2"
    assert [e["to_version"] for e in read_audit(client, name)] == ["1", "2"]
    assert not any(status == "RUNNING" for _, status in registry_state(root)["runs"])
    assert (kept / DONE_MARK).is_file() and not (kept / "erase/model").exists()
