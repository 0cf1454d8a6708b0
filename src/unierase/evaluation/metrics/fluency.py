"""Fluency as the n-gram entropy of a generation (ROME and RWKU's "Flu"): a repetitive or degenerate
output has low entropy. Words are split by a regular expression instead of NLTK's tokenizer, which
would need a data download."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"\w+|[^\w\s]")


def ngram_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """ROME's ``compute_n_gram_entropy``: the mean over ``ns`` of ``weight_n * H_n`` with
    ``H_n = -Σ f log2 f`` over the relative frequencies of the text's word n-grams (0 for no n-grams)."""
    if len(ns) != len(weights):
        raise ValueError("one weight per n is needed")
    words = _WORD.findall(text.lower())
    terms = []
    for n, weight in zip(ns, weights):
        counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        total = sum(counts.values())
        entropy = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        terms.append(weight * entropy)
    return sum(terms) / len(terms)
