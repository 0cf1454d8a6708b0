"""The erasure flow: validate, learn or reuse the unlearning token, edit, evaluate, gate, register, promote.

    python -m flows.erasure                       # the embedded default request on SmolLM2 (make demo)
    python -m flows.erasure --forget F.jsonl --retain R.jsonl --request-id acme-42

Runs on the embedded defaults: Prefect's ephemeral server, the SQLite MLflow store under ``mlflow/``,
the DVC-tracked sets under ``data/sets/``; while ``unierase serve`` runs for the project, its Prefect
and MLflow servers. A run that fails registers no model version and moves no
alias; a run whose edit misses the gate registers a version tagged ``rejected`` and leaves champion.
With ``ray.address`` set, the statistics and the evaluation run as shards on a Ray cluster (flows/parallel.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.guards import finish_registered_run, keep_for_registration, serialised_per_model
from flows.parallel import run_preserved_statistics, run_sharded_evaluation
from flows.steps import (
    evaluation_data,
    leak_verdict,
    logged_params,
    needs_statistics,
    request_id_of,
    request_sets,
    version_tags,
    write_gate_summary,
)
from tasks.data import check_inputs, prepare_default_sets, record_provenance, validate
from tasks.recovery import recover_request
from tasks.registry import (
    applied_version,
    discard,
    ensure_base,
    existing_summary,
    promote_if_accepted,
    register,
    resolve_parent,
)
from tasks.report import publish_evaluation
from tasks.unlearn import erase, evaluate, has_unlearning_token, learn_token
from unierase.cli import is_user_error
from unierase.config import load_params
from unierase.parallel.runner import uses_ray
from unierase.registry import tags as T
from unierase.registry.gate import check_gate, erasure_metrics
from unierase.registry.lineage import format_lineage, lineage
from unierase.registry.store import connect, model_name_for
from unierase.stages.private import private_run_dir

ROOT = Path(__file__).resolve().parent.parent


@flow(name="unierase-erasure", log_prints=True)
@serialised_per_model  # one run per registered model at a time (flows/guards.py)
def erasure_flow(
    forget: Path | None = None,
    retain: Path | None = None,
    request_id: str | None = None,
    params_file: str = "params.yaml",
    base_model: Path | None = None,
    root: Path = ROOT,
) -> dict:
    """Erases the facts of ``forget`` from the champion of the base model's registered model.

    Args:
        forget: Forget set (JSON Lines); None writes and uses the embedded default under ``data/sets/``.
        retain: Retain set; None uses ``data/sets/retain.jsonl`` with the default forget set, else none.
        request_id: Id of the erasure request; None derives one from the forget set's digest.
        params_file: ``params.yaml``, relative to ``root``; it must exist.
        base_model: Base model directory; None is the embedded default (SmolLM2-135M-Instruct).
        root: Repo root: data, params, the embedded MLflow store and outputs are relative to it.

    Returns:
        A summary: request id, registered model, new version, its status, champion, metrics, gate failures.
    """
    from unierase.model.default import default_cache_dir, ensure_default_model

    root = Path(root).resolve()
    params = load_params(root / params_file)
    base_model = Path(base_model or ensure_default_model()).resolve()
    forget, retain, default_request = request_sets(root, forget, retain)
    if default_request and not forget.is_file():
        prepare_default_sets(forget.parent)
    request_id = request_id or request_id_of(forget)
    run_id = flow_run.get_id() or "local"
    # Refuse a bad request id or model directory in seconds, before any work.
    check_inputs(request_id, base_model, params)
    # The run's files, per-item text included, live in the private area only (privacy.private_dir).
    work = private_run_dir(root, params.privacy, request_id, run_id)

    # Validate, before any model weights are loaded: a bad set fails here and registers nothing.
    validate(forget, retain, params.validation, base_model, root / params.validation.docs_dir / work.name)
    # Version the data: DVC digests, git commit and config hash of this run.
    provenance = record_provenance(forget, retain, root, params)
    # The version this erasure builds on: the champion, or the base model on a first run.
    name = model_name_for(base_model, params.registry)
    # Finish what a killed run of this request left: a run marked running, a version never promoted.
    recover_request(params, root, name, request_id, run_id)
    parent = resolve_parent(params.registry, root, name, base_model)
    # The same request on the same parent is done already: return its version, register nothing.
    if existing := applied_version(params.registry, root, name, request_id, parent["version"]):
        get_run_logger().info("request %s already produced %s version %s", request_id, name, existing)
        return existing_summary(params.registry, root, name, existing, request_id)
    # Learn or reuse the token (once per base model and token config; an erased parent carries it).
    token = None
    if not has_unlearning_token(parent["model_dir"], params):
        token = learn_token(parent["model_dir"], params, default_cache_dir(), retain)
    # On a Ray cluster, the preserved-key statistics first, as map-reduce over corpus shards, into the cache
    # the edit reads (in-process, the edit computes them itself on a cache miss).
    if uses_ray(params.ray) and needs_statistics(parent["model_dir"], params):
        run_preserved_statistics(parent["model_dir"], params, token, default_cache_dir(), work / "statistics-shards")
    # Edit (one task, sequential, wherever the flow runs).
    erase_dir = erase(forget, retain, work / "erase", params, parent["model_dir"], token)
    report = json.loads((erase_dir / "report.json").read_text(encoding="utf-8"))
    # Evaluate (the evaluation stage with its leak audits, on the request's splits; sharded on a Ray
    # cluster, with the same rows and report), and gate.
    eval_data = evaluation_data(work / "eval-data", forget, retain)
    if uses_ray(params.ray):
        evaluation_file = run_sharded_evaluation(erase_dir / "model", eval_data, work / "eval", params)
    else:
        evaluation_file = evaluate(erase_dir / "model", eval_data, work / "eval", params)
    evaluation = json.loads(evaluation_file.read_text(encoding="utf-8"))
    metrics = erasure_metrics(report, evaluation.get("aggregates"), evaluation.get("audits"))
    gate = check_gate(metrics, params.gate)
    summary_file = write_gate_summary(work / "erasure-summary.json", metrics, gate)
    publish_evaluation(
        request_id, metrics, gate.passed, gate.failures, parent["version"] or "base", leak_verdict(evaluation)
    )
    # Keep what a later `unierase register --run-dir` needs, should registration fail (server down, kill).
    keep_for_registration(
        work,
        name,
        request_id,
        run_id,
        parent["version"],
        base_model,
        erase_dir,
        report,
        metrics,
        params,
        provenance,
        gate,
        [summary_file],
        evaluation,
    )
    # Register (accepted or rejected); the base model becomes version 1 only now, once an edit of it succeeded.
    parent_version = parent["version"] or ensure_base(params.registry, root, name, base_model)
    tags = version_tags(request_id, parent_version, gate, run_id, base_model, provenance, evaluation)
    version = register(
        params.registry,
        root,
        name,
        erase_dir,
        report,
        metrics,
        logged_params(params),
        provenance["datasets"],
        tags,
        [summary_file],
        parent["model_dir"],
    )
    # Promote; a failure after registering discards the version, so no run leaves half a record.
    try:
        champion = promote_if_accepted(params.registry, root, name, version, request_id)
    except Exception:
        discard(params.registry, root, name, version)
        raise
    finish_registered_run(work, version, champion, params)  # the registry holds the model now
    get_run_logger().info("%s version %s (%s); champion is version %s", name, version, tags[T.STATUS], champion)
    return {
        "request_id": request_id,
        "registered_model": name,
        "version": version,
        "parent_version": parent_version,
        "status": tags[T.STATUS],
        "champion": champion,
        "metrics": metrics,
        "gate_failures": gate.failures,
        "already_applied": False,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line of the flow (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forget", type=Path, default=None, help="forget set (default: the embedded request)")
    parser.add_argument("--retain", type=Path, default=None, help="retain set")
    parser.add_argument("--request-id", default=None, help="erasure request id")
    parser.add_argument("--params", default="params.yaml", help="params.yaml, relative to the repo root")
    parser.add_argument("--base-model", type=Path, default=None, help="base model directory")
    parser.add_argument("--root", type=Path, default=ROOT, help="repo root: data, params, store (default: here)")
    args = parser.parse_args(argv)
    from unierase.services import use_served_prefect

    try:
        # The Prefect server of `unierase serve` when it runs for this project, else the ephemeral one.
        with use_served_prefect(args.root, load_params(args.root / args.params).registry.work_dir):
            summary = erasure_flow(
                forget=args.forget,
                retain=args.retain,
                request_id=args.request_id,
                params_file=args.params,
                base_model=args.base_model,
                root=args.root,
            )
    except Exception as err:
        if not is_user_error(err):
            raise
        # Bad input or an unreachable server: one message naming the problem (Prefect logged the rest).
        print(f"erasure failed: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    params = load_params(args.root / args.params)
    client = connect(params.registry, args.root)
    print(f"\n{summary['registered_model']}@{params.registry.champion_alias} is version {summary['champion']}")
    print(format_lineage(lineage(client, summary["registered_model"], summary["version"])))
    print(f"\nmlflow.pyfunc.load_model('models:/{summary['registered_model']}@{params.registry.champion_alias}')")
    print("UIs: unierase ui   (Prefect on http://127.0.0.1:4200, MLflow on http://127.0.0.1:5000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
