"""``unierase serve``: the project's local deployment, in the foreground until Ctrl-C.

    unierase serve [--root .] [--prefect-port 4200] [--mlflow-port 5000] [--cron "0 2 * * *"]

Starts, on 127.0.0.1, a Prefect server, the MLflow tracking server of the project's store, and a worker
serving the scheduled inbox deployment (``unierase schedule``, against that Prefect server), then
writes the discovery record (`unierase.services`) so that flows (``make demo``, ``python -m
flows.erasure``) and the CLI use these servers while they run; without it they use Prefect's ephemeral
server and the store directly. One Ctrl-C (or SIGTERM) stops the worker, then both servers, and removes
the record. Run it from the unierase checkout (the worker imports ``flows/`` from there).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``serve`` subcommand."""
    serve = subparsers.add_parser("serve", help="run Prefect, MLflow and the scheduled deployment on loopback")
    serve.add_argument("--root", type=Path, default=Path.cwd(), help="project root (default: the current directory)")
    serve.add_argument("--params", default=None, help="params.yaml, relative to --root (default: its params.yaml)")
    serve.add_argument("--prefect-port", type=int, default=4200, help="Prefect server port")
    serve.add_argument("--mlflow-port", type=int, default=5000, help="MLflow server port")
    serve.add_argument("--cron", default=None, help="schedule of the inbox deployment (default: schedule.cron)")
    serve.add_argument("--base-model", type=Path, default=None, help="base model of the deployment (default: SmolLM2)")
    serve.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for each service")
    serve.set_defaults(func=run_serve)


def prefect_server_command(port: int) -> list[str]:
    """``prefect server start`` on loopback."""
    return [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]


def mlflow_server_command(backend_store_uri: str, artifact_root: str, port: int) -> list[str]:
    """``mlflow server`` of one store on loopback, one worker process."""
    return [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_store_uri,
        "--default-artifact-root",
        artifact_root,
    ]


def server_env() -> dict[str, str]:
    """The servers' environment: no MLflow job runner, no Prefect API URL of another server."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("PREFECT_API_URL", None)
    return env


def run_serve(args: argparse.Namespace) -> int:
    """Starts the services, writes the discovery record, waits for Ctrl-C, stops them all."""
    from unierase.cli.schedule import _params, deployment_name
    from unierase.inputs import check_cron
    from unierase.registry.store import resolve_artifact_location, resolve_tracking_uri
    from unierase.services import Served, discovery_path, served, write_discovery

    root = args.root.resolve()
    params = _params(root, args.params)
    config = params.registry
    check_cron(args.cron or params.schedule.cron)
    code = Path.cwd().resolve()
    if not (code / "flows" / "scheduled.py").is_file():
        raise FileNotFoundError(f"{code}/flows/scheduled.py: run unierase serve from the unierase checkout")
    if (running := served(root, config.work_dir)) is not None:
        raise ValueError(f"unierase serve already runs for {root} (process {running.pid}); stop it first")
    prefect_api = f"http://127.0.0.1:{args.prefect_port}/api"
    mlflow_uri = f"http://127.0.0.1:{args.mlflow_port}"
    backend = resolve_tracking_uri(config, root)
    record = discovery_path(root, config.work_dir)

    # SIGTERM (a service manager, `timeout`) ends this process as Ctrl-C does: the finally stops the children.
    signal.signal(signal.SIGTERM, lambda *_: _interrupt())
    # Python leaves SIGINT ignored when it starts ignored (a background job of a non-interactive shell,
    # and every process started from it): Ctrl-C must stop the services wherever serve was started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    children: list[tuple[str, subprocess.Popen]] = []
    try:
        children.append(("prefect server", _start(prefect_server_command(args.prefect_port), server_env(), root)))
        children.append(
            (
                "mlflow server",
                _start(
                    mlflow_server_command(backend, resolve_artifact_location(config, root), args.mlflow_port),
                    server_env(),
                    root,
                ),
            )
        )
        _wait_until(f"{prefect_api}/health", children, args.startup_timeout)
        _wait_until(f"{mlflow_uri}/health", children, args.startup_timeout)
        worker = [sys.executable, "-m", "unierase.cli", "schedule", "--root", str(root)]
        for flag, value in (("--params", args.params), ("--cron", args.cron), ("--base-model", args.base_model)):
            if value is not None:
                worker += [flag, str(value)]
        children.append(("worker", _start(worker, {**os.environ, "PREFECT_API_URL": prefect_api}, code)))
        name = deployment_name(root, args.params, args.base_model)
        # Ready when the worker has registered its deployment with the server.
        deployment = f"{prefect_api}/deployments/name/unierase-inbox/{urllib.parse.quote(name, safe='')}"
        _wait_until(deployment, children, args.startup_timeout)
        write_discovery(
            record, Served(os.getpid(), prefect_api, mlflow_uri, backend, tuple(c.pid for _, c in children))
        )
        print(f"Prefect UI: http://127.0.0.1:{args.prefect_port}   MLflow UI: {mlflow_uri}", flush=True)
        print(
            f"deployment unierase-inbox/{name} served; flows and the CLI use these servers (Ctrl-C stops)", flush=True
        )
        while True:
            for label, child in children:
                if child.poll() is not None:
                    raise RuntimeError(f"the {label} exited with status {child.returncode}; stopping the others")
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        record.unlink(missing_ok=True)
        _stop([c for _, c in reversed(children)])
    return 0


def _interrupt() -> None:
    raise KeyboardInterrupt


def _start(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    # A session of its own: a terminal's Ctrl-C reaches this process only, which stops the children in order.
    return subprocess.Popen(command, env=env, cwd=cwd, start_new_session=True)


def _wait_until(url: str, children: list[tuple[str, subprocess.Popen]], timeout_s: float) -> None:
    """Waits until ``url`` answers 200, failing early when a child exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for label, child in children:
            if child.poll() is not None:
                raise RuntimeError(f"the {label} exited with status {child.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")


def _stop(children: list[subprocess.Popen], timeout_s: float = 30.0) -> None:
    """SIGTERM to each child's process group, then SIGKILL to what is left after ``timeout_s``."""
    for child in children:
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("process %d did not stop on SIGTERM; killing it", child.pid)
            _signal_group(child, signal.SIGKILL)
            child.wait()
        _signal_group(child, signal.SIGKILL)  # what the child left in its group (uvicorn workers)


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(child.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
