"""TOFU's truth ratio: how much more likely wrong answers are than the (paraphrased) right one.

Per item ``R = geometric mean_j P̄(perturbed_j) / P̄(paraphrased_answer)`` over length-normalised
probabilities (the ``answer`` itself where there is no paraphrase: real authors, world facts). With
mean token NLLs this is ``exp(nll_para - mean_j nll_pert_j)``, as OpenUnlearning computes it. The
original TOFU code keeps the inverse ``1/R``; the KS test of forget quality gives the same p-value on
either, since it is invariant under a monotone map of both samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def truth_ratio(p_perturbed: Sequence[float], p_true: float) -> float:
    """``R`` for one item from length-normalised probabilities.

    Raises:
        ValueError: No perturbed answers, or a probability that is not positive.
    """
    if not p_perturbed:
        raise ValueError("a truth ratio needs at least one perturbed answer")
    if p_true <= 0 or any(p <= 0 for p in p_perturbed):
        raise ValueError("probabilities must be positive")
    geometric_mean = math.exp(sum(math.log(p) for p in p_perturbed) / len(p_perturbed))
    return geometric_mean / p_true


def truth_ratio_closer_to_1(ratios: Sequence[float]) -> float:
    """Forget-set aggregation: ``mean min(R, 1/R)`` (1 when right and wrong answers are alike)."""
    if not ratios:
        raise ValueError("no truth ratios to aggregate")
    return sum(min(r, 1 / r) for r in ratios) / len(ratios)


def truth_ratio_true_better(ratios: Sequence[float]) -> float:
    """Retain/utility aggregation: ``mean max(0, 1 - R)`` (high when the right answer is preferred)."""
    if not ratios:
        raise ValueError("no truth ratios to aggregate")
    return sum(max(0.0, 1 - r) for r in ratios) / len(ratios)
