"""Pipeline overhead with `unierase serve` running: the erasure flow against the same stages called
directly, on one request, added to ``cost.json`` and ``cost.md`` (with the registry's storage per
version from ``registry_storage.json`` when it is there).

    python -m bench.serve_overhead --size 10 [--set erase.max_new_tokens=32 ...] [--out bench/results]
    python -m bench.serve_overhead --help

Both sides start from the same base model (the embedded SmolLM2 unless ``--model``), the same cached
token and warm preserved-key statistics, and the first ``--size`` facts of the default forget set with
the default retain set. The direct side calls the two stages the flow chains, `erase_stage` then
`evaluate_stage` on the request's splits. The flow side runs in a fresh erasure project
(`unierase.data.project.init_project`) whose ``unierase serve`` (a Prefect server, its MLflow server and
the inbox worker, on free loopback ports) was started first and is ready; its base version is
registered beforehand (once per registered model, timed apart), so the flow measured is an ordinary
erasure: validation, DVC provenance, the parent, the edit, the evaluation, the gate, the registration
of a delta version and the promotion, every task reported to the served Prefect and every registry
call sent to the served MLflow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.lib.measure import machine_info, measure

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_serve(root: Path, model: Path, logs: Path, timeout_s: float = 400) -> tuple[subprocess.Popen, object]:
    """``unierase serve`` for ``root`` on free ports, with a Prefect home of its own; waits until ready."""
    from unierase.config import load_params
    from unierase.services import served

    env = {**os.environ, "PREFECT_HOME": str(root / ".prefect-home")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "unierase.cli", "serve", "--root", str(root), "--base-model", str(model)]
    command += ["--prefect-port", str(_free_port()), "--mlflow-port", str(_free_port())]
    log = (logs / "serve.log").open("w")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    work_dir = load_params(root / "params.yaml").registry.work_dir
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if (found := served(root, work_dir)) is not None:
            return process, found
        time.sleep(1)
    process.kill()
    raise RuntimeError(f"unierase serve did not get ready; see {logs / 'serve.log'}")


def measure_served_overhead(model: Path, size: int, params, work: Path, progress: bool = False) -> dict:
    """Times the direct stages, then the flow under ``unierase serve``; returns the figures."""
    from flows.erasure import erasure_flow
    from flows.steps import evaluation_data
    from tasks.registry import ensure_base
    from unierase.data.builtin_facts import default_forget, default_retain
    from unierase.data.project import init_project
    from unierase.model.default import default_cache_dir
    from unierase.registry.store import model_name_for
    from unierase.services import use_served_prefect
    from unierase.stages.erase import erase_stage
    from unierase.stages.evaluate import evaluate_stage
    from unierase.stages.token import ensure_token_stage

    forget, retain = default_forget()[:size], default_retain()
    if len(forget) < size:
        raise ValueError(f"the default forget set has {len(forget)} facts, fewer than --size {size}")
    shutil.rmtree(work, ignore_errors=True)
    root = init_project(work / "repo", params, forget, retain)
    sets = root / "data" / "sets"
    token, _ = ensure_token_stage(model, params, default_cache_dir(), progress)  # cached: shared by both sides
    with measure() as erase:
        erase_stage(sets / "forget.jsonl", work / "core", params, model, sets / "retain.jsonl", token, None, progress)
    data = evaluation_data(work / "core-eval-data", sets / "forget.jsonl", sets / "retain.jsonl")
    with measure() as evaluate:
        evaluate_stage(work / "core" / "model", data, work / "core-eval", params, progress=progress)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with measure() as startup:
        process, found = _start_serve(root, model, logs)
    try:
        with use_served_prefect(root, params.registry.work_dir):
            with measure() as base:
                ensure_base.fn(params.registry, root, model_name_for(model, params.registry), model)
            with measure() as flow:
                summary = erasure_flow(
                    forget=sets / "forget.jsonl",
                    retain=sets / "retain.jsonl",
                    request_id="bench-served-overhead",
                    base_model=model,
                    root=root,
                )
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
    core = erase.seconds + evaluate.seconds
    return {
        "forget_size": size,
        "core_erase_seconds": erase.seconds,
        "core_evaluate_seconds": evaluate.seconds,
        "core_seconds": core,
        "flow_seconds": flow.seconds,
        "overhead_seconds": flow.seconds - core,
        "overhead_share": (flow.seconds - core) / flow.seconds,
        "serve_startup_seconds": startup.seconds,
        "base_registration_seconds": base.seconds,
        "core_peak_rss_mb": max(erase.peak_rss_mb, evaluate.peak_rss_mb),
        "flow_peak_rss_mb": flow.peak_rss_mb,
        "prefect_api_url": found.prefect_api_url,
        "mlflow_tracking_uri": found.mlflow_tracking_uri,
        "version": summary["version"],
        "status": summary["status"],
    }


def main(argv: list[str] | None = None) -> int:
    """Measures, then merges the figures into ``<out>/cost.json`` and renders ``<out>/cost.md``."""
    from bench._cli import base_model, common_parser, resolve_params
    from bench._cost_report import write_cost_outputs

    p = common_parser(__doc__)
    p.add_argument("--size", type=int, default=10, help="facts of the request (from the default forget set)")
    args = p.parse_args(argv)
    params, model = resolve_params(args), base_model(args)
    figures = measure_served_overhead(
        model, args.size, params, Path(args.work) / "serve-overhead", not args.no_progress
    )
    figures["machine"] = machine_info(ROOT)
    path = Path(args.out) / "cost.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: run python -m bench.cost first (this adds a section to its results)")
    data = json.loads(path.read_text())
    data["pipeline_served"] = figures
    if (storage := Path(args.out) / "registry_storage.json").is_file():
        data["registry_storage"] = json.loads(storage.read_text())
    path.write_text(json.dumps(data, indent=2) + "\n")
    write_cost_outputs(data, Path(args.out))
    print(json.dumps({k: v for k, v in figures.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
