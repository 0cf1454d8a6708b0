"""Refusal phrases for the unlearning token's targets, chosen per question by a stable hash.

Python's ``hash()`` is salted per process, so it would pick a different refusal each run;
SHA-256 of the question picks the same one everywhere.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

REFUSALS: tuple[str, ...] = (
    "I don't know.",
    "I'm not sure.",
    "I don't have that information.",
    "I'm afraid I can't answer that.",
    "I have no idea.",
    "Sorry, I don't know the answer to that.",
    "I'm not able to answer that question.",
    "That's something I don't know.",
    "I don't have any information about that.",
    "I can't help with that one, I don't know.",
    "Unfortunately, I don't know.",
    "I'm sorry, but I don't know.",
    "I really don't know.",
    "I'm not aware of the answer.",
    "I don't know the answer.",
    "I have no knowledge of that.",
    "That is beyond what I know.",
    "I can't say, I don't know.",
    "I'm unable to answer that.",
    "I don't have an answer for that.",
    "I'm not certain, so I can't say.",
    "I'm sorry, I have no information on that.",
    "I can't recall anything about that.",
    "I don't know anything about that.",
    "I wish I could help, but I don't know.",
    "That's not something I know.",
    "I'm not familiar with that.",
    "I can't answer that, I'm afraid.",
    "I don't have the details on that.",
    "I'm clueless about that one.",
    "Sorry, I can't answer that.",
    "I don't have enough information to answer.",
    "That's outside of my knowledge.",
    "I'm not sure about that.",
    "I don't know, sorry.",
    "I'm afraid I don't know.",
    "No idea, sorry.",
    "I have no information about that.",
    "I'm sorry, I can't help with that question.",
    "I don't have knowledge of that.",
    "I'm unable to provide an answer.",
    "That's a question I can't answer.",
    "I can't provide that information.",
    "I'm not the right one to ask, I don't know.",
    "I honestly don't know.",
    "I couldn't tell you.",
    "I don't know much about that.",
    "That's unknown to me.",
    "I'm not knowledgeable about that.",
    "I'm sorry, that's not something I know.",
    "I can't answer that question.",
    "I'm unsure.",
    "I don't have a clue.",
    "I lack the information to answer that.",
    "Sorry, I have no idea.",
)

# Patterns that mark a generation as a refusal, used when counting refusals in generated text.
_REFUSAL_PATTERN = re.compile(
    r"\b(i\s*(\w+ly\s+)?(do not|don'?t|don’t)\s+(know|have)|not something i know|i'?m not (sure|able|aware|certain|familiar|knowledgeable)"
    r"|no idea|not sure|i can'?t (answer|help|say|recall|provide|tell)|i'?m (afraid|sorry|unable|unsure)"
    r"|i am (afraid|sorry|unable|unsure)|unable to (answer|provide)|beyond what i know|outside of my knowledge"
    r"|couldn'?t (tell you|provide)|no (knowledge|information|clue)|unknown to me|lack the information"
    r"|clueless|can'?t answer)",
    re.IGNORECASE,
)


def stable_index(text: str, modulo: int) -> int:
    """A process-independent index in ``range(modulo)`` derived from SHA-256 of ``text``."""
    if modulo <= 0:
        raise ValueError(f"modulo must be positive, got {modulo}")
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") % modulo


def pick_refusal(question: str, refusals: tuple[str, ...] = REFUSALS) -> str:
    """The refusal phrase assigned to ``question``: the same on every machine and run."""
    return refusals[stable_index(question, len(refusals))]


def refusal_ids(tokenizer: PreTrainedTokenizerBase, question: str) -> list[int]:
    """``question``'s refusal as token ids, as it follows the unlearning token (a leading space)."""
    return tokenizer(" " + pick_refusal(question), add_special_tokens=False)["input_ids"]


def refusal_phrase_ids(tokenizer: PreTrainedTokenizerBase, refusals: tuple[str, ...] = REFUSALS) -> list[list[int]]:
    """Every refusal as token ids, as it follows the unlearning token (a leading space): the answers a
    gated generation may go on with (`unierase.model.generation.generate_answers`)."""
    return [tokenizer(" " + r, add_special_tokens=False)["input_ids"] for r in refusals]


def served_refusals(tokenizer: PreTrainedTokenizerBase, after_token: str) -> list[list[int]] | None:
    """What a gated answer may go on with under ``EvalConfig.after_token``: every refusal ('refusal'), or
    None, anything ('free')."""
    return refusal_phrase_ids(tokenizer) if after_token == "refusal" else None


def is_refusal(text: str) -> bool:
    """True when a generation reads as a refusal ("I don't know ...")."""
    return bool(_REFUSAL_PATTERN.search(text))
