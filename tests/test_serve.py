"""``unierase serve``: a Prefect server, the project's MLflow server and the inbox deployment's worker on
loopback, found by flows and the CLI through the discovery record, stopped by one SIGINT.

Starts ``python -m unierase.cli serve`` on a slim tiny-model project (free ports, a Prefect home of its
own), waits until the record says it is ready, checks that the registry client and a flow run (a
separate process, as ``make demo`` runs it) go through the served servers, then interrupts it and
checks that every child process has exited and the record is gone.

    .venv/bin/python -m pytest tests/test_serve.py
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from flow_repo import REPO, env
from flow_runs import flow_command, make_slim_repo

from mlflow import MlflowClient
from unierase.config import load_params
from unierase.registry import tags as T
from unierase.registry.store import model_name_for
from unierase.services import Served, discovery_path, served, write_discovery


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by a parent that is gone) counts as exited.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _post(url: str, body: dict) -> list[dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_stale_record_is_ignored(tmp_path: Path) -> None:
    """A record whose process is gone (a killed serve) is not used."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = write_discovery(
        discovery_path(tmp_path), Served(dead.pid, "http://127.0.0.1:9/api", "http://127.0.0.1:9", "sqlite:///x")
    )
    assert path.is_file() and served(tmp_path) is None


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path):
    root = make_slim_repo(tmp_path_factory.mktemp("serve-repo"))
    logs = tmp_path_factory.mktemp("serve-logs")
    prefect_port, mlflow_port = _free_port(), _free_port()
    process_env = {
        **env(),
        "PREFECT_HOME": str(root / ".prefect-home"),  # a database of its own, not the user's
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    process_env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "unierase.cli", "serve", "--root", str(root), "--base-model", str(tiny_llama_dir)]
    command += ["--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port)]
    log = (logs / "serve.log").open("w")
    process = subprocess.Popen(command, cwd=REPO, env=process_env, stdout=log, stderr=subprocess.STDOUT)
    params = load_params(root / "params.yaml")
    deadline = time.monotonic() + 300
    found = None
    while time.monotonic() < deadline and process.poll() is None:
        if (found := served(root, params.registry.work_dir)) is not None:
            break
        time.sleep(1)
    if found is None:
        process.kill()
        pytest.fail(f"unierase serve did not get ready:\n{(logs / 'serve.log').read_text()[-4000:]}")
    try:
        yield {"root": root, "process": process, "found": found, "env": process_env, "logs": logs, "params": params}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


def test_discovery_names_the_loopback_servers(serving) -> None:
    from unierase.registry.store import connect

    found, root = serving["found"], serving["root"]
    assert found.pid == serving["process"].pid and len(found.children) == 3
    assert found.prefect_api_url.startswith("http://127.0.0.1:") and found.mlflow_tracking_uri.startswith(
        "http://127.0.0.1:"
    )
    assert found.backend_store_uri == f"sqlite:///{(root / 'mlflow' / 'mlflow.db').resolve()}"
    assert connect(serving["params"].registry, root).tracking_uri == found.mlflow_tracking_uri


def test_flow_run_goes_through_the_served_servers(serving, tiny_llama_dir: Path) -> None:
    root, found = serving["root"], serving["found"]
    flow_env = {k: v for k, v in serving["env"].items() if k != "PREFECT_API_URL"}
    with (serving["logs"] / "flow.log").open("w") as log:
        code = subprocess.call(
            flow_command(root, tiny_llama_dir, "served-1"), cwd=REPO, env=flow_env, stdout=log, stderr=subprocess.STDOUT
        )
    assert code == 0, (serving["logs"] / "flow.log").read_text()[-4000:]
    # The version is in the served MLflow, asked over HTTP.
    client = MlflowClient(tracking_uri=found.mlflow_tracking_uri, registry_uri=found.mlflow_tracking_uri)
    name = model_name_for(tiny_llama_dir, serving["params"].registry)
    versions = client.search_model_versions(f"name='{name}'")
    assert [v.tags.get(T.REQUEST_ID) for v in versions if v.tags.get(T.KIND) == T.ERASURE] == ["served-1"]
    # The flow run is in the served Prefect, with the worker's deployment beside it.
    flows = {f["id"]: f["name"] for f in _post(f"{found.prefect_api_url}/flows/filter", {})}
    runs = [
        r for r in _post(f"{found.prefect_api_url}/flow_runs/filter", {}) if flows[r["flow_id"]] == "unierase-erasure"
    ]
    assert [r["state_type"] for r in runs] == ["COMPLETED"]
    deployments = _post(f"{found.prefect_api_url}/deployments/filter", {})
    assert [flows[d["flow_id"]] for d in deployments] == ["unierase-inbox"]


def test_one_sigint_stops_every_child(serving) -> None:
    process, found, root = serving["process"], serving["found"], serving["root"]
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(pid) for pid in found.children):
        time.sleep(0.5)
    assert not [pid for pid in found.children if _alive(pid)]
    assert not discovery_path(root, serving["params"].registry.work_dir).exists()
    assert served(root, serving["params"].registry.work_dir) is None
