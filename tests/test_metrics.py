"""Every metric against values computed by hand on tiny inputs.

.venv/bin/pytest tests/test_metrics.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from unierase.evaluation.metrics.aggregates import forget_efficacy, harmonic_mean, model_ability, model_utility
from unierase.evaluation.metrics.fluency import ngram_entropy
from unierase.evaluation.metrics.forget_quality import forget_quality
from unierase.evaluation.metrics.membership import loss_auc
from unierase.evaluation.metrics.probability import (
    answer_token_nlls,
    normalised_probability,
    option_normalised_probability,
)
from unierase.evaluation.metrics.rouge import rouge_l_recall
from unierase.evaluation.metrics.similarity import cosine
from unierase.evaluation.metrics.truth_ratio import truth_ratio, truth_ratio_closer_to_1, truth_ratio_true_better


def test_normalised_probability_is_exp_of_minus_mean_nll():
    # P(a|q) = 0.5 * 0.125 over 2 tokens -> (1/16)^(1/2) = 0.25
    assert normalised_probability([math.log(2), math.log(8)]) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        normalised_probability([])


def test_option_normalised_probability():
    assert option_normalised_probability(0.6, [0.1, 0.2, 0.3]) == pytest.approx(0.5)


def test_truth_ratio_by_hand():
    # geometric mean of 0.1 and 0.4 is 0.2; over a paraphrase probability of 0.5 -> 0.4
    assert truth_ratio([0.1, 0.4], 0.5) == pytest.approx(0.4)
    ratios = [0.5, 2.0, 1.0]
    assert truth_ratio_closer_to_1(ratios) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert truth_ratio_true_better(ratios) == pytest.approx((0.5 + 0.0 + 0.0) / 3)
    with pytest.raises(ValueError):
        truth_ratio([], 0.5)


def test_forget_quality_is_the_exact_ks_p_value():
    # Disjoint samples of 3 and 3: D = 1, exact two-sided p = 2 / C(6,3) = 0.1.
    assert forget_quality([0.1, 0.2, 0.3], [0.7, 0.8, 0.9]) == pytest.approx(0.1)
    # Identical samples: D = 0, p = 1.
    assert forget_quality([0.1, 0.5, 0.9], [0.1, 0.5, 0.9]) == pytest.approx(1.0)
    # Invariant under R -> 1/R (original TOFU stores the inverse ratio).
    a, b = [0.2, 0.5, 0.9, 1.3], [0.4, 0.8, 1.1, 2.0, 3.0]
    assert forget_quality(a, b) == pytest.approx(forget_quality([1 / x for x in a], [1 / x for x in b]))


def test_harmonic_mean_by_hand():
    assert harmonic_mean([1.0, 0.5, 0.25]) == pytest.approx(3 / (1 + 2 + 4))
    assert harmonic_mean([0.3, 0.0]) == 0.0
    with pytest.raises(ValueError):
        harmonic_mean([-0.1, 0.5])


SPLITS = {
    "forget": {
        "prob": 0.2,
        "rougeL_recall": 0.4,
        "truth_ratio": 0.9,
        "truth_ratio_true_better": 0.1,
        "cosine_similarity": 0.5,
    },
    "retain": {
        "prob": 0.5,
        "rougeL_recall": 1.0,
        "truth_ratio": 0.25,
        "truth_ratio_true_better": 0.25,
        "cosine_similarity": None,
    },
    "real_authors": {"prob": 0.5, "rougeL_recall": 0.5, "truth_ratio": 0.5, "truth_ratio_true_better": 0.5},
    "world_facts": {"prob": 1.0, "rougeL_recall": 1.0, "truth_ratio": 1.0, "truth_ratio_true_better": 1.0},
    "holdout": {"prob": 0.01, "rougeL_recall": 0.01, "truth_ratio": 0.01, "truth_ratio_true_better": 0.01},
}
KINDS = {name: name for name in SPLITS}


def test_model_utility_is_the_harmonic_mean_of_nine():
    value, used = model_utility(SPLITS, KINDS)
    nine = [0.5, 1.0, 0.25, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0]
    assert len(used) == 9
    assert value == pytest.approx(9 / sum(1 / v for v in nine))
    assert not any(u.startswith(("forget", "holdout")) for u in used)


def test_forget_efficacy_and_model_ability_by_hand():
    metrics = ("prob", "rougeL_recall", "truth_ratio_true_better", "cosine_similarity")
    fe, fe_used = forget_efficacy(SPLITS, KINDS, metrics)
    assert fe == pytest.approx(1 - (0.2 + 0.4 + 0.1 + 0.5) / 4)
    assert fe_used == sorted(f"forget/{m}" for m in metrics)
    ma, ma_used = model_ability(SPLITS, KINDS, metrics)
    # cosine is None on retain and absent elsewhere: 3 + 3 + 3 values, holdout and forget left out.
    vals = [0.5, 1.0, 0.25, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0]
    assert ma == pytest.approx(len(vals) / sum(1 / v for v in vals))
    assert len(ma_used) == 9


def test_rouge_l_recall_by_hand():
    # answer "the cat sat on the mat" (6 words); LCS with "the cat lay on a mat" = the cat on mat = 4
    assert rouge_l_recall("the cat lay on a mat", "the cat sat on the mat") == pytest.approx(4 / 6)


def test_cosine_by_hand():
    assert cosine([1.0, 0.0], [1.0, 1.0]) == pytest.approx(1 / math.sqrt(2))
    assert cosine([1.0, 0.0], [-1.0, 0.0]) == 0.0  # clipped at 0


def test_ngram_entropy_by_hand():
    # "a b a b": bigrams ab, ba, ab -> freqs 2/3, 1/3; trigrams aba, bab -> 1/2, 1/2
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    h3 = 1.0
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * h3) / 2)
    assert ngram_entropy("word") == 0.0
    assert ngram_entropy("the the the the the") == 0.0


def test_loss_auc_by_hand():
    # members 1, 3; non-members 2, 4: pairs (1<2 yes, 1<4 yes, 3<2 no, 3<4 yes) -> 3/4
    assert loss_auc([1.0, 3.0], [2.0, 4.0]) == pytest.approx(0.75)
    assert loss_auc([1.0], [1.0]) == 0.5


class _Fixed(torch.nn.Module):
    """A "model" whose next-token distribution is uniform over 4 tokens everywhere."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, logits_to_keep=0, **_):
        logits = torch.zeros(*input_ids[:, -logits_to_keep:].shape, 4)
        return type("Out", (), {"logits": logits})()


class _Tok:
    chat_template = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [len(w) % 4 for w in text.split()]}


def test_answer_token_nlls_scores_only_answer_tokens():
    nlls = answer_token_nlls(_Fixed(), _Tok(), ["q1 q2", "q"], ["a bb ccc", "d"], progress=False)
    assert [len(n) for n in nlls] == [3, 1]
    assert all(v == pytest.approx(math.log(4)) for n in nlls for v in n)
    assert normalised_probability(nlls[0]) == pytest.approx(0.25)
