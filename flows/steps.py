"""The erasure flow's steps that are not Prefect tasks of their own: where the request's sets are, the
request id, the evaluation's data directory, and what a registered version is tagged and logged with."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from unierase.config import Params
from unierase.registry import tags as T
from unierase.registry.gate import GateResult

_LOGGED_SECTIONS = ("model", "token", "covariance", "edit", "erase", "gate")


def request_sets(root: Path, forget: Path | None, retain: Path | None) -> tuple[Path, Path | None, bool]:
    """The request's forget and retain files, resolved; with no forget set, the embedded default request
    under ``data/sets`` (the last value says whether it must be written first)."""
    if forget is None:
        sets = root / "data/sets"
        return sets / "forget.jsonl", Path(retain).resolve() if retain else sets / "retain.jsonl", True
    return Path(forget).resolve(), Path(retain).resolve() if retain else None, False


def request_id_of(forget: Path) -> str:
    """The id of an ad-hoc request: the forget set's digest, so the same file is the same request."""
    return "adhoc-" + hashlib.sha256(Path(forget).read_bytes()).hexdigest()[:12]


def evaluation_data(out: Path, forget: Path, retain: Path | None) -> Path:
    """A directory holding just this request's splits, as the evaluation stage reads a directory."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(forget, out / "forget.jsonl")
    if retain is not None:
        shutil.copyfile(retain, out / "retain.jsonl")
    return out


def needs_statistics(model_dir: Path, params: Params) -> bool:
    """True when the edit of ``model_dir`` computes preserved-key statistics: a UniErase edit of a model
    without an edit state (an erased model's state carries the statistics of its unedited base)."""
    from unierase.stages.artifacts import STATE_FILE

    return params.erase.method == "unierase" and not (Path(model_dir) / STATE_FILE).exists()


def logged_params(params: Params) -> dict[str, str]:
    """Config values as MLflow params (``edit.layers`` -> "[4, 5, 6, 7, 8]"); configs hold no data text."""
    return {
        f"{section}.{key}": json.dumps(value)
        for section in _LOGGED_SECTIONS
        for key, value in getattr(params, section).model_dump(mode="json").items()
    }


def version_tags(
    request_id: str,
    parent_version: str,
    gate: GateResult,
    run_id: str,
    base_model: Path,
    provenance: dict,
    evaluation: dict,
) -> dict[str, str]:
    """Lineage, gate and leak-verdict tags of an erasure version."""
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
    if verdict := leak_verdict(evaluation):
        tags[T.LEAK_VERDICT] = verdict
    return tags


def leak_verdict(evaluation: dict) -> str | None:
    """The leak audits' verdict of each forget split (`unierase.evaluation.leak_audits.attack_verdict`),
    one line each; counts and audit names only, no text of the facts."""
    lines = [
        f"{split}: {audits['attacks']['verdict']}"
        for split, audits in sorted((evaluation.get("audits") or {}).items())
        if "attacks" in audits
    ]
    return "; ".join(lines) or None


def write_gate_summary(path: Path, metrics: dict[str, float], gate: GateResult) -> Path:
    """The figures and gate outcome as JSON: only figures go to MLflow, since the raw reports hold
    generations, i.e. the text being erased."""
    path.write_text(json.dumps({"metrics": metrics, "gate_failures": gate.failures}, indent=2) + "\n")
    return path
