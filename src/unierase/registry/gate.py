"""The evaluation gate: thresholds from ``params.yaml`` on an erasure's measured figures."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from unierase.config import GateConfig

_REPORT_FIGURES = ("forget_rougeL_recall", "retain_rougeL_recall", "forget_refusal_rate", "retain_refusal_rate")
_EVAL_AGGREGATES = ("forget_efficacy", "model_ability", "forget_quality", "model_utility")


@dataclass(frozen=True)
class GateResult:
    """Whether a version may become champion.

    Attributes:
        passed: True when every threshold holds.
        failures: One line per threshold that did not hold, naming the metric, its value and the bound.
    """

    passed: bool
    failures: list[str] = field(default_factory=list)


def erasure_metrics(
    erase_report: Mapping, eval_report: Mapping | None = None, eval_audits: Mapping | None = None
) -> dict[str, float]:
    """Flat metrics of an erasure: before/after figures of the erase report, the retain ratio, the share
    of parameters changed, the evaluation's aggregates (``eval_*``) and its leak audits
    (``audit_<split>_<audit>_<figure>``, e.g. ``audit_forget_ban_token_rougeL_recall``).

    Args:
        erase_report: The erase stage's report.
        eval_report: The evaluation's ``aggregates``.
        eval_audits: The evaluation's ``audits`` (split -> audit -> figures).
    """
    metrics: dict[str, float] = {}
    for phase in ("before", "after"):
        for key in _REPORT_FIGURES:
            value = (erase_report.get(phase) or {}).get(key)
            if isinstance(value, (int, float)):
                metrics[f"{phase}_{key}"] = float(value)
    before_retain = metrics.get("before_retain_rougeL_recall")
    if before_retain is not None and "after_retain_rougeL_recall" in metrics:
        # No retain knowledge to lose (a random model) counts as nothing lost.
        metrics["retain_ratio"] = metrics["after_retain_rougeL_recall"] / before_retain if before_retain > 0 else 1.0
    for key in ("params_changed", "params_changed_share"):
        if isinstance(erase_report.get(key), (int, float)):
            metrics[key] = float(erase_report[key])
    for key, value in (erase_report.get("timings_s") or {}).items():
        if isinstance(value, (int, float)):
            metrics[f"time_{key.removesuffix('_s')}_s"] = float(value)
    cache_hit = ((erase_report.get("diagnostics") or {}).get("covariance") or {}).get("cache_hit")
    if cache_hit is not None:
        metrics["covariance_cache_hit"] = float(bool(cache_hit))
    for key in _EVAL_AGGREGATES:
        value = (eval_report or {}).get(key)
        if isinstance(value, (int, float)):
            metrics[f"eval_{key}"] = float(value)
    for split, audits in (eval_audits or {}).items():
        for audit, figures in audits.items():
            for key, value in figures.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    metrics[f"audit_{split}_{audit}_{key}"] = float(value)
    return metrics


def check_gate(metrics: Mapping[str, float], config: GateConfig) -> GateResult:
    """Checks every configured threshold; a metric the gate needs but the run did not measure fails it."""
    bounds = {
        "after_forget_refusal_rate": config.min_forget_refusal_rate,
        "retain_ratio": config.min_retain_ratio,
        "eval_forget_efficacy": config.min_forget_efficacy,
        "eval_model_ability": config.min_model_ability,
    }
    failures = []
    for metric, bound in {**bounds, **config.min_metrics}.items():
        if bound is None:
            continue
        value = metrics.get(metric)
        if value is None:
            failures.append(f"{metric} was not measured (gate needs >= {bound})")
        elif value < bound:
            failures.append(f"{metric} = {value:.4f} < {bound}")
    for metric, bound in config.max_metrics.items():
        value = metrics.get(metric)
        if value is None:
            failures.append(f"{metric} was not measured (gate needs <= {bound})")
        elif value > bound:
            failures.append(f"{metric} = {value:.4f} > {bound}")
    return GateResult(passed=not failures, failures=failures)
