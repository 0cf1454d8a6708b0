"""Prefect artifacts of an erasure: the evaluation as markdown and as a table."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

_ROWS = ("forget_rougeL_recall", "forget_refusal_rate", "retain_rougeL_recall", "retain_refusal_rate")


@task(name="publish-evaluation", cache_policy=NO_CACHE)
def publish_evaluation(
    request_id: str,
    metrics: dict[str, float],
    gate_passed: bool,
    gate_failures: list[str],
    parent_version: str,
    leak_verdict: str | None = None,
) -> None:
    """Publishes ``erasure-evaluation`` (markdown) and ``erasure-metrics`` (table) artifacts."""
    table = [
        {"metric": key, "before": metrics.get(f"before_{key}"), "after": metrics.get(f"after_{key}")} for key in _ROWS
    ]
    extra = {k: v for k, v in metrics.items() if not k.startswith(("before_", "after_"))}
    lines = [
        f"# Erasure {request_id}",
        f"Parent version: **{parent_version}**. Gate: **{'passed' if gate_passed else 'FAILED'}**.",
        *([f"Leak audits: {leak_verdict}."] if leak_verdict else []),
        "",
        "| metric | before | after |",
        "|---|---|---|",
        *[f"| {r['metric']} | {_fmt(r['before'])} | {_fmt(r['after'])} |" for r in table],
        "",
        *[f"- {k}: {_fmt(v)}" for k, v in sorted(extra.items())],
        *([""] + [f"- gate failure: {f}" for f in gate_failures] if gate_failures else []),
    ]
    create_markdown_artifact("\n".join(lines), key="erasure-evaluation", description=f"Evaluation of {request_id}")
    create_table_artifact(table, key="erasure-metrics", description=f"Before/after figures of {request_id}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
