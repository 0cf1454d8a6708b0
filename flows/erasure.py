"""The erasure flow: validate, learn or reuse the unlearning token, edit, evaluate, gate, register, promote.

    python -m flows.erasure                       # the embedded default request on SmolLM2 (make demo)
    python -m flows.erasure --forget F.jsonl --retain R.jsonl --request-id acme-42

Runs on the embedded defaults: Prefect's ephemeral server, the SQLite MLflow store under ``mlflow/``,
the DVC-tracked sets under ``data/sets/``. A run that fails registers no model version and moves no
alias; a run whose edit misses the gate registers a version tagged ``rejected`` and leaves champion.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from tasks.data import prepare_default_sets, record_provenance, validate
from tasks.registry import discard, ensure_base, promote_if_accepted, register, resolve_parent
from tasks.report import publish_evaluation
from tasks.unlearn import erase, evaluate, has_unlearning_token, learn_token, token_artifact_path
from unierase.config import Params, load_params
from unierase.registry import tags as T
from unierase.registry.gate import check_gate, erasure_metrics
from unierase.registry.lineage import format_lineage, lineage
from unierase.registry.store import connect, model_name_for
from unierase.registry.versions import model_dir_sha256

ROOT = Path(__file__).resolve().parent.parent


def _flat_params(params: Params) -> dict[str, str]:
    """Config values as MLflow params (``edit.layers`` -> "[4, 5, 6, 7, 8]"); configs hold no data text."""
    sections = ("model", "token", "covariance", "edit", "erase", "gate")
    return {f"{s}.{k}": json.dumps(v) for s in sections for k, v in getattr(params, s).model_dump(mode="json").items()}


def _eval_data(out: Path, forget: Path, retain: Path | None) -> Path:
    """A directory holding just this request's splits, as the evaluation stage reads a directory."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(forget, out / "forget.jsonl")
    if retain is not None:
        shutil.copyfile(retain, out / "retain.jsonl")
    return out


def _request_id(forget: Path) -> str:
    return "adhoc-" + hashlib.sha256(Path(forget).read_bytes()).hexdigest()[:12]


@flow(name="unierase-erasure", log_prints=True)
def erasure_flow(
    forget: Path | None = None,
    retain: Path | None = None,
    request_id: str | None = None,
    params_file: str = "params.yaml",
    base_model: Path | None = None,
    root: Path = ROOT,
    full_evaluation: bool = False,
) -> dict:
    """Erases the facts of ``forget`` from the champion of the base model's registered model.

    Args:
        forget: Forget set (JSON Lines); None writes and uses the embedded default under ``data/sets/``.
        retain: Retain set; None uses ``data/sets/retain.jsonl`` with the default forget set, else none.
        request_id: Id of the erasure request; None derives one from the forget set's digest.
        params_file: ``params.yaml``, relative to ``root``.
        base_model: Base model directory; None is the embedded default (SmolLM2-135M-Instruct).
        root: Repo root: data, params, the embedded MLflow store and outputs are relative to it.
        full_evaluation: Also run the evaluation stage on the edited model (always when the gate needs it).

    Returns:
        A summary: request id, registered model, new version, its status, champion, metrics, gate failures.
    """
    from unierase.model.default import ensure_default_model

    logger = get_run_logger()
    root = Path(root).resolve()
    params = load_params(root / params_file if (root / params_file).is_file() else None)
    base_model = Path(base_model or ensure_default_model()).resolve()
    if forget is None:
        sets = {"forget": root / "data/sets/forget.jsonl", "retain": root / "data/sets/retain.jsonl"}
        if not sets["forget"].is_file():
            sets = prepare_default_sets(root / "data/sets")
        forget, retain = sets["forget"], retain or sets["retain"]
    forget, retain = Path(forget).resolve(), Path(retain).resolve() if retain else None
    request_id = request_id or _request_id(forget)
    run_id = flow_run.get_id() or "local"
    work = root / params.registry.work_dir / f"{request_id}-{run_id[:8]}"

    # 1. Validation, before any model weights are loaded; a failure raises here and registers nothing.
    docs = root / params.validation.docs_dir / f"{request_id}-{run_id[:8]}"
    validate(forget, retain, params.validation, base_model, docs)
    provenance = record_provenance(forget, retain, root, params)

    # 2. The version this erasure builds on: the champion, or the base model on a first run.
    name = model_name_for(base_model, params.registry)
    parent = resolve_parent(params.registry, root, name, base_model)

    # 3. Token (learned once per base model and token config), then the edit.
    token = None
    if not has_unlearning_token(parent["model_dir"], params):
        digest, tokens = model_dir_sha256(parent["model_dir"]), root / ".cache/tokens"
        fresh = not token_artifact_path(tokens, digest, params).is_file()  # a deleted token is learned again
        token = learn_token.with_options(refresh_cache=fresh)(parent["model_dir"], digest, params, tokens)
    erase_dir = erase(forget, retain, work / "erase", params, parent["model_dir"], token)
    report = json.loads((erase_dir / "report.json").read_text(encoding="utf-8"))

    # 4. Evaluation and gate.
    eval_report = None
    if full_evaluation or params.gate.min_forget_efficacy is not None or params.gate.min_model_ability is not None:
        eval_path = evaluate(erase_dir / "model", _eval_data(work / "eval-data", forget, retain), work / "eval", params)
        eval_report = json.loads(eval_path.read_text(encoding="utf-8")).get("aggregates")
    metrics = erasure_metrics(report, eval_report)
    gate = check_gate(metrics, params.gate)
    # Only figures go to MLflow: the raw reports hold generations, i.e. the text being erased.
    summary_file = work / "erasure-summary.json"
    summary_file.write_text(json.dumps({"metrics": metrics, "gate_failures": gate.failures}, indent=2) + "\n")
    publish_evaluation(request_id, metrics, gate.passed, gate.failures, parent["version"] or "base")

    # 5. Register (accepted or rejected), then promote; a failure after registering discards the version.
    # The base model becomes version 1 (and champion) only now, once an edit of it has succeeded.
    parent_version = parent["version"] or ensure_base(params.registry, root, name, base_model)
    tags = {
        T.PARENT_VERSION: parent_version,
        T.REQUEST_ID: request_id,
        T.STATUS: T.ACCEPTED if gate.passed else T.REJECTED,
        T.FLOW_RUN_ID: run_id,
        T.BASE_MODEL: base_model.name,
        "unierase.git_commit": provenance["git_commit"] or "unknown",
        "unierase.config_hash": provenance["config_hash"],
    }
    if gate.failures:
        tags[T.GATE_FAILURES] = "; ".join(gate.failures)
    version = register(
        params.registry,
        root,
        name,
        erase_dir,
        report,
        metrics,
        _flat_params(params),
        provenance["datasets"],
        tags,
        [summary_file],
    )
    try:
        champion = promote_if_accepted(params.registry, root, name, version, request_id)
    except Exception:
        discard(params.registry, root, name, version)
        raise
    shutil.rmtree(erase_dir / "model", ignore_errors=True)  # the registry holds it now
    summary = {
        "request_id": request_id,
        "registered_model": name,
        "version": version,
        "parent_version": parent_version,
        "status": tags[T.STATUS],
        "champion": champion,
        "metrics": metrics,
        "gate_failures": gate.failures,
    }
    logger.info("%s version %s (%s); champion is version %s", name, version, summary["status"], champion)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command line of the flow (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forget", type=Path, default=None, help="forget set (default: the embedded request)")
    parser.add_argument("--retain", type=Path, default=None, help="retain set")
    parser.add_argument("--request-id", default=None, help="erasure request id")
    parser.add_argument("--params", default="params.yaml", help="params.yaml, relative to the repo root")
    parser.add_argument("--base-model", type=Path, default=None, help="base model directory")
    parser.add_argument("--full-evaluation", action="store_true", help="also run the evaluation stage")
    args = parser.parse_args(argv)
    summary = erasure_flow(
        forget=args.forget,
        retain=args.retain,
        request_id=args.request_id,
        params_file=args.params,
        base_model=args.base_model,
        full_evaluation=args.full_evaluation,
    )
    print(json.dumps(summary, indent=2))
    params = load_params(ROOT / args.params if (ROOT / args.params).is_file() else None)
    client = connect(params.registry, ROOT)
    print(f"\n{summary['registered_model']}@{params.registry.champion_alias} is version {summary['champion']}")
    print(format_lineage(lineage(client, summary["registered_model"], summary["version"])))
    print(f"\nmlflow.pyfunc.load_model('models:/{summary['registered_model']}@{params.registry.champion_alias}')")
    print("UIs: unierase ui   (Prefect on http://127.0.0.1:4200, MLflow on http://127.0.0.1:5000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
