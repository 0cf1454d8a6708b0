"""Loss-based membership inference: can the forget items still be told from never-seen items?

A lower answer loss is taken as evidence of membership. The AUC is the probability that a random
member scores as more of a member than a random non-member (ties count half): 0.5 means the loss no
longer separates them, which is what a model that never saw the forget set shows.
"""

from __future__ import annotations

from collections.abc import Sequence


def loss_auc(member_losses: Sequence[float], nonmember_losses: Sequence[float]) -> float:
    """ROC AUC of the score ``-loss`` for members (forget items) against non-members (holdout items),
    by the Mann-Whitney count.

    Raises:
        ValueError: Either group is empty.
    """
    if not member_losses or not nonmember_losses:
        raise ValueError("membership inference needs members and non-members")
    wins = 0.0
    for m in member_losses:
        for n in nonmember_losses:
            wins += 1.0 if m < n else 0.5 if m == n else 0.0
    return wins / (len(member_losses) * len(nonmember_losses))
