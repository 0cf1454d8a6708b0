"""``unierase schedule`` and ``unierase ui``: recurring erasure and the two web UIs.

    unierase schedule --cron "0 2 * * *"   # serve the inbox deployment; Ctrl-C stops it
    unierase schedule --work-pool unierase-pool   # deploy it to a process work pool (a worker runs it)
    unierase ui                            # Prefect on http://127.0.0.1:4200, MLflow on http://127.0.0.1:5000

While `unierase serve` runs for the project, ``unierase ui`` opens its two UIs instead of starting
servers, and ``unierase schedule`` registers its deployment with the served Prefect.

Both run from the repo root (``--root``): the flows are repo-root packages, and the embedded MLflow
store and the request inbox live there.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``schedule`` and ``ui`` subcommands."""
    schedule = subparsers.add_parser("schedule", help="serve a deployment that processes the request inbox")
    schedule.add_argument("--cron", default=None, help="cron schedule (default: schedule.cron of params.yaml)")
    schedule.add_argument("--params", default=None, help="params.yaml, relative to --root (default: its params.yaml)")
    schedule.add_argument(
        "--root", type=Path, default=Path.cwd(), help="data root: params, inbox, MLflow store (default: here)"
    )
    schedule.add_argument("--base-model", type=Path, default=None, help="base model directory (default: SmolLM2)")
    schedule.add_argument(
        "--work-pool",
        default=None,
        help="deploy to this Prefect work pool (a `prefect worker` runs each scheduled run from this checkout) "
        "instead of serving from this process",
    )
    schedule.set_defaults(func=run_schedule)

    ui = subparsers.add_parser("ui", help="start the Prefect and MLflow UIs on loopback")
    ui.add_argument("--params", default=None, help="params.yaml, relative to --root (default: its params.yaml)")
    ui.add_argument("--root", type=Path, default=Path.cwd(), help="repo root (default: the current directory)")
    ui.add_argument("--prefect-port", type=int, default=4200, help="Prefect UI port")
    ui.add_argument("--mlflow-port", type=int, default=5000, help="MLflow UI port")
    ui.set_defaults(func=run_ui)


def _params(root: Path, params_file: str | None):
    from unierase.config import repo_params

    return repo_params(root, params_file)


def deployment_name(root: Path, params_file: str | None, base_model: Path | None) -> str:
    """The served deployment's name: ``schedule.deployment_name`` or the registered model's name, so that
    the deployment's limit of one run at a time is a limit per registered model."""
    from unierase.model.default import default_model_dir
    from unierase.registry.store import model_name_for

    params = _params(root, params_file)
    return params.schedule.deployment_name or model_name_for(base_model or default_model_dir(), params.registry)


def run_schedule(args: argparse.Namespace) -> int:
    """Serves ``flows.scheduled.process_inbox`` on a cron schedule until interrupted."""
    from unierase.inputs import check_cron

    root = args.root.resolve()
    cron = check_cron(args.cron or _params(root, args.params).schedule.cron)  # before anything is served
    # flows/ is a repo-root package of the code checkout (the current directory): this process and the
    # flow runs it starts import it from there. --root may name another data root.
    code = Path.cwd().resolve()
    if not (code / "flows" / "scheduled.py").is_file():
        raise FileNotFoundError(f"{code}/flows/scheduled.py: run unierase schedule from the unierase checkout")
    sys.path.insert(0, str(code))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))
    from flows.scheduled import process_inbox

    name = deployment_name(root, args.params, args.base_model)
    parameters = {"params_file": args.params or "params.yaml", "root": str(root)}
    if args.base_model is not None:
        parameters["base_model"] = str(args.base_model.resolve())
    from unierase.services import use_served_prefect

    with use_served_prefect(root, _params(root, args.params).registry.work_dir):
        if args.work_pool:
            # A worker of the pool starts each run as a process in this checkout (the flow's source).
            deployment = process_inbox.from_source(source=str(code), entrypoint="flows/scheduled.py:process_inbox")
            deployment_id = deployment.deploy(
                name=name,
                work_pool_name=args.work_pool,
                cron=cron,
                parameters=parameters,
                concurrency_limit=1,
                print_next_steps=False,
            )
            print(f"deployment unierase-inbox/{name} ({deployment_id}) on work pool {args.work_pool}, cron {cron!r}")
            return 0
        process_inbox.serve(name=name, cron=cron, parameters=parameters, global_limit=1, pause_on_shutdown=False)
    return 0


def run_ui(args: argparse.Namespace) -> int:
    """Opens the UIs of the project's `unierase serve` when it runs; else starts ``prefect server`` and
    ``mlflow server`` on 127.0.0.1 and waits, Ctrl-C stopping both."""
    import webbrowser

    from unierase.cli.serve import mlflow_server_command, prefect_server_command, server_env
    from unierase.registry.store import resolve_artifact_location, resolve_tracking_uri
    from unierase.services import served

    root = args.root.resolve()
    config = _params(root, args.params).registry
    if (found := served(root, config.work_dir)) is not None:
        urls = [found.prefect_api_url.removesuffix("/api"), found.mlflow_tracking_uri]
        print(f"Prefect UI: {urls[0]}   MLflow UI: {urls[1]}   (unierase serve, process {found.pid})")
        for url in urls:
            webbrowser.open(url)  # a no-op where there is no browser
        return 0
    env = server_env()
    commands = [
        prefect_server_command(args.prefect_port),
        mlflow_server_command(
            resolve_tracking_uri(config, root), resolve_artifact_location(config, root), args.mlflow_port
        ),
    ]
    # SIGTERM (a service manager, `timeout`) ends this process like Ctrl-C: the finally below stops both.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    children = [subprocess.Popen(command, env=env, cwd=root) for command in commands]
    print(f"Prefect UI: http://127.0.0.1:{args.prefect_port}   MLflow UI: http://127.0.0.1:{args.mlflow_port}")
    try:
        for child in children:
            child.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=30)
    return 0
