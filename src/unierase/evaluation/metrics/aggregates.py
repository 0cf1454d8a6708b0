"""Aggregates over per-split metrics: TOFU's model utility, UniErase's forget efficacy and model ability.

Each function returns the value and the names of the metrics that went into it, so a report can say
what was averaged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

UTILITY_SPLIT_KINDS = ("retain", "real_authors", "world_facts")
UTILITY_METRICS = ("prob", "rougeL_recall", "truth_ratio")


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean; 0 when any value is 0 (the limit), as ``scipy.stats.hmean`` gives.

    Raises:
        ValueError: No values, or a negative one.
    """
    if not values:
        raise ValueError("no values to average")
    if any(v < 0 for v in values):
        raise ValueError(f"the harmonic mean needs non-negative values, got {list(values)}")
    if any(v == 0 for v in values):
        return 0.0
    return len(values) / sum(1 / v for v in values)


def _pick(
    split_metrics: Mapping[str, Mapping[str, float | None]], splits: Sequence[str], metrics: Sequence[str]
) -> dict[str, float]:
    picked = {}
    for split in splits:
        for metric in metrics:
            value = split_metrics[split].get(metric)
            if value is not None:
                picked[f"{split}/{metric}"] = float(value)
    return picked


def model_utility(
    split_metrics: Mapping[str, Mapping[str, float | None]], split_kinds: Mapping[str, str]
) -> tuple[float | None, list[str]]:
    """TOFU model utility: harmonic mean of probability, ROUGE-L recall and truth ratio (``max(0, 1-R)``)
    on the retain, real-author and world-fact splits (9 numbers with one split of each kind).

    Returns:
        The value (None when no such split exists) and the ``split/metric`` names used.
    """
    splits = [s for s in split_metrics if split_kinds[s] in UTILITY_SPLIT_KINDS]
    picked = _pick(split_metrics, splits, UTILITY_METRICS)
    return (harmonic_mean(list(picked.values())) if picked else None), sorted(picked)


def forget_efficacy(
    split_metrics: Mapping[str, Mapping[str, float | None]], split_kinds: Mapping[str, str], metrics: Sequence[str]
) -> tuple[float | None, list[str]]:
    """UniErase's forget efficacy: ``1 - mean`` of the given metrics over the forget splits.

    Returns:
        The value (None without a forget split) and the ``split/metric`` names used.
    """
    splits = [s for s in split_metrics if split_kinds[s] == "forget"]
    picked = _pick(split_metrics, splits, metrics)
    if not picked:
        return None, []
    return 1.0 - sum(picked.values()) / len(picked), sorted(picked)


def model_ability(
    split_metrics: Mapping[str, Mapping[str, float | None]], split_kinds: Mapping[str, str], metrics: Sequence[str]
) -> tuple[float | None, list[str]]:
    """UniErase's model ability: harmonic mean of the given metrics over the splits that are neither
    forgotten nor held out (retain, real authors, world facts and any other split).

    Returns:
        The value (None without such a split) and the ``split/metric`` names used.
    """
    splits = [s for s in split_metrics if split_kinds[s] not in ("forget", "holdout")]
    picked = _pick(split_metrics, splits, metrics)
    return (harmonic_mean(list(picked.values())) if picked else None), sorted(picked)
