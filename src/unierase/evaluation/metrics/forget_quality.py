"""TOFU's forget quality: do the unlearned model's forget truth ratios look like a retain model's?"""

from __future__ import annotations

from collections.abc import Sequence

from scipy.stats import ks_2samp


def forget_quality(unlearned_ratios: Sequence[float], retain_ratios: Sequence[float]) -> float:
    """p-value of the two-sample Kolmogorov-Smirnov test between the per-item forget truth ratios of the
    unlearned model and of a model trained on the retain split only (``scipy.stats.ks_2samp``,
    two-sided, exact for small samples, as OpenUnlearning and TOFU call it).

    Raises:
        ValueError: Either sample is empty.
    """
    if not unlearned_ratios or not retain_ratios:
        raise ValueError("forget quality needs truth ratios of both models")
    return float(ks_2samp(list(unlearned_ratios), list(retain_ratios)).pvalue)
