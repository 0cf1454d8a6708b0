"""ROUGE-L recall of a generation against the reference answer, as TOFU and OpenUnlearning compute it
(``rouge_score`` with the Porter stemmer)."""

from __future__ import annotations

from functools import lru_cache

from rouge_score import rouge_scorer


@lru_cache(maxsize=1)
def _scorer() -> rouge_scorer.RougeScorer:
    # Stateless and costly to build; one instance is shared (no mutable state is kept in it).
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_recall(generation: str, answer: str) -> float:
    """Share of the answer's longest common subsequence found in the generation (0 to 1)."""
    return float(_scorer().score(answer, generation)["rougeL"].recall)
