"""Answer probabilities under the common protocol (OpenUnlearning, TOFU).

The prompt is `unierase.model.prompts.encode_prompt` (chat template with ``add_generation_prompt=True``,
or TOFU's plain ``Question: ... Answer:``); the answer is tokenised on its own with
``add_special_tokens=False`` (`unierase.model.prompts.encode_answer`) and appended to the prompt ids. Only
answer tokens are scored, and no end-of-turn token is added (OpenUnlearning scores the answer alone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.model.batching import IGNORE_INDEX, pad_sequences
from unierase.model.prompts import encode_answer, encode_prompt


def normalised_probability(token_nlls: Sequence[float]) -> float:
    """Length-normalised answer probability ``P(a|q)^(1/|a|) = exp(-mean token NLL)``.

    Raises:
        ValueError: No answer tokens.
    """
    if len(token_nlls) == 0:
        raise ValueError("an answer with no tokens has no probability")
    return math.exp(-sum(token_nlls) / len(token_nlls))


def option_normalised_probability(p_true: float, p_wrong: Sequence[float]) -> float:
    """TOFU's probability on real authors and world facts: ``P̄(a) / (P̄(a) + Σ_j P̄(perturbed_j))``."""
    total = p_true + sum(p_wrong)
    if total <= 0:
        raise ValueError("all option probabilities are zero")
    return p_true / total


@torch.no_grad()
def answer_token_nlls(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    answers: Sequence[str],
    batch_size: int = 16,
    progress: bool = True,
) -> list[list[float]]:
    """Per-token negative log-likelihood of each answer given its question (natural log).

    Args:
        model: A causal LM (its device is used; nothing is moved).
        tokenizer: Its tokenizer.
        questions: One question per answer.
        answers: The answers to score.
        batch_size: Pairs per forward pass (right-padded).
        progress: Show a progress bar.

    Raises:
        ValueError: The lists differ in length, or an answer tokenises to nothing.
    """
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions for {len(answers)} answers")
    device = next(model.parameters()).device
    out: list[list[float]] = []
    starts = range(0, len(questions), batch_size)
    for start in tqdm(starts, desc="answer NLL", disable=not progress or len(starts) < 2, leave=False):
        pairs = []
        for q, a in zip(questions[start : start + batch_size], answers[start : start + batch_size]):
            prompt, answer = encode_prompt(tokenizer, q), encode_answer(tokenizer, a)
            if not answer:
                raise ValueError(f"the answer to {q!r} tokenises to nothing")
            pairs.append((prompt, answer))
        batch = pad_sequences(
            [prompt + answer for prompt, answer in pairs],
            0,  # right padding: no real position attends it, so any id does
            labels=[[IGNORE_INDEX] * len(prompt) + answer for prompt, answer in pairs],
        ).to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
        shifted, targets = logits[:, :-1], batch.labels[:, 1:]
        nll = F.cross_entropy(shifted.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
        for row in range(len(pairs)):
            mask = targets[row] != IGNORE_INDEX
            out.append(nll[row][mask].tolist())
    return out
