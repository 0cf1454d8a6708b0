"""Novel-word recall: how much of what an answer adds to its question a generation says.

ROUGE-L recall credits words an answer shares with its question: against "The capital of France is
Paris.", the wrong "The capital of France is London." scores 0.83. A leak audit needs the part only a
model that knows the fact can produce, so this metric keeps the answer's content words that the
question does not contain (tokenised and stemmed as ROUGE does, function words dropped) and measures
the share of them the generation contains. An answer that adds no such word is not scored (None).
"""

from __future__ import annotations

from functools import lru_cache

from rouge_score.tokenizers import DefaultTokenizer

# Function words, stemmed as the tokenizer stems them: saying them is no evidence of knowing a fact.
_FUNCTION_WORDS = frozenset(
    """a an the and or but of in on at to for from by with as into onto over under about after before
    is are was were be been being am do doe did has have had it it its thi that these those there here
    he she they we you i him her them his hers their our your my me us who whom whose what which when
    where why how not no so than then also veri s""".split()
)


@lru_cache(maxsize=1)
def _tokenizer() -> DefaultTokenizer:
    return DefaultTokenizer(use_stemmer=True)


def novel_words(answer: str, question: str) -> frozenset[str]:
    """The answer's stemmed content words that the question does not contain."""
    tokenize = _tokenizer().tokenize
    return frozenset(tokenize(answer)) - frozenset(tokenize(question)) - _FUNCTION_WORDS


def novel_word_recall(generation: str, answer: str, question: str) -> float | None:
    """Share of the answer's novel words (`novel_words`) found in the generation; None when it has none."""
    novel = novel_words(answer, question)
    if not novel:
        return None
    return len(novel & frozenset(_tokenizer().tokenize(generation))) / len(novel)
