"""Answer probabilities under the common protocol (OpenUnlearning, TOFU).

The prompt is `unierase.model.prompts.encode_prompt` (chat template with ``add_generation_prompt=True``,
or TOFU's plain ``Question: ... Answer:``); the answer is tokenised on its own with
``add_special_tokens=False`` (`unierase.model.prompts.encode_answer`) and appended to the prompt ids. Only
answer tokens are scored, and no end-of-turn token is added (OpenUnlearning scores the answer alone).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from unierase.model.batching import IGNORE_INDEX, pad_sequences
from unierase.model.prefix_cache import additive_mask, cache_rows
from unierase.model.prompts import encode_answer, encode_prompt

logger = logging.getLogger(__name__)


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


# The cached-prompt check's probe: this many of the prompt's last and the answer's first tokens.
_PROBE_PROMPT, _PROBE_ANSWER = 16, 4


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

    A question scored with several answers (the true one, its paraphrase, the perturbed ones) runs its
    prompt once: its attention keys and values are cached and each answer runs after them. Prompts are
    most of the tokens (a chat template's system turn and the question against one short answer), so
    this is where the time goes. The cached path is checked once per call against the whole sequence
    and left for whole sequences where they differ (an architecture whose cache changes the numbers).

    Args:
        model: A causal LM (its device is used; nothing is moved).
        tokenizer: Its tokenizer.
        questions: One question per answer.
        answers: The answers to score.
        batch_size: Answers per forward pass.
        progress: Show a progress bar.

    Raises:
        ValueError: The lists differ in length, or an answer tokenises to nothing.
    """
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions for {len(answers)} answers")
    prompts: dict[str, list[int]] = {}
    pairs = []
    for q, a in zip(questions, answers):
        answer = encode_answer(tokenizer, a)
        if not answer:
            raise ValueError(f"the answer to {q!r} tokenises to nothing")
        if q not in prompts:
            prompts[q] = encode_prompt(tokenizer, q)
        pairs.append((q, answer))
    device = next(model.parameters()).device
    shared = len(prompts) < len(pairs) and _shared_prompt_agrees(model, prompts[pairs[0][0]], pairs[0][1], device)
    out: list[list[float]] = []
    starts = range(0, len(pairs), batch_size)
    for start in tqdm(starts, desc="answer NLL", disable=not progress or len(starts) < 2, leave=False):
        chunk = pairs[start : start + batch_size]
        if shared:
            out += _shared_prompt_nlls(model, prompts, chunk, device)
        else:
            out += _whole_sequence_nlls(model, [(prompts[q], answer) for q, answer in chunk], device)
    return out


def _whole_sequence_nlls(
    model: PreTrainedModel, pairs: Sequence[tuple[list[int], list[int]]], device: torch.device
) -> list[list[float]]:
    """Each (prompt, answer) pair's answer NLLs from one pass over the whole sequences."""
    # Left padding ends every answer at the last column, so only the last (longest answer + 1)
    # columns need the vocabulary projection: the prompts' logits are never scored.
    batch = pad_sequences(
        [prompt + answer for prompt, answer in pairs],
        0,
        side="left",
        labels=[[IGNORE_INDEX] * len(prompt) + answer for prompt, answer in pairs],
    ).to(device)
    keep = max(len(answer) for _, answer in pairs) + 1
    logits = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids(),
        logits_to_keep=keep,
    ).logits.float()
    targets = batch.labels[:, -keep + 1 :]
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    return [nll[row][targets[row] != IGNORE_INDEX].tolist() for row in range(len(pairs))]


def _shared_prompt_nlls(
    model: PreTrainedModel,
    prompts: dict[str, list[int]],
    pairs: Sequence[tuple[str, list[int]]],
    device: torch.device,
) -> list[list[float]]:
    """Each (question, answer) pair's answer NLLs, with each distinct prompt run once.

    The prompts are left-padded (each ends at the last prefix column, whose logits score the first
    answer token); the answers follow right-padded, each row with its prompt's cached keys and values.
    """
    questions = list(dict.fromkeys(q for q, _ in pairs))
    prefix = pad_sequences([prompts[q] for q in questions], 0, side="left").to(device)
    past = DynamicCache()
    last = model(
        input_ids=prefix.input_ids,
        attention_mask=prefix.attention_mask,
        position_ids=prefix.position_ids(),
        past_key_values=past,
        use_cache=True,
        logits_to_keep=1,
    ).logits
    first = last[:, -1].float().log_softmax(-1)  # each prompt's next-token distribution: the first answer token
    place = {q: i for i, q in enumerate(questions)}
    owner = torch.tensor([place[q] for q, _ in pairs], device=device)
    suffix = pad_sequences([answer for _, answer in pairs], 0).to(device)
    p_len, s_len = prefix.input_ids.shape[1], suffix.input_ids.shape[1]
    valid = torch.cat([prefix.attention_mask[owner], suffix.attention_mask], dim=1).bool()
    logits = model(
        input_ids=suffix.input_ids,
        attention_mask=additive_mask(suffix.attention_mask.bool(), valid, model.dtype, causal_offset=p_len),
        position_ids=prefix.attention_mask.sum(1)[owner, None] + torch.arange(s_len, device=device),
        cache_position=torch.arange(p_len, p_len + s_len, device=device),
        past_key_values=cache_rows(past, owner),
        use_cache=True,
    ).logits
    out = []
    for row, (_, answer) in enumerate(pairs):
        ids = torch.tensor(answer, device=device)
        rest = F.cross_entropy(logits[row, : len(answer) - 1].float(), ids[1:], reduction="none")
        out.append([float(-first[owner[row], ids[0]]), *rest.tolist()])
    return out


def _shared_prompt_agrees(
    model: PreTrainedModel, prompt: list[int], answer: list[int], device: torch.device, tolerance: float = 1e-3
) -> bool:
    """Whether the cached-prompt path gives one pair's NLLs as the whole sequence does, on a probe cut
    from the pair (the prompt's last tokens, the answer's first): the check is of the model's cache,
    which a short sequence exercises as a long one does, at a fraction of the cost."""
    prompt, answer = prompt[-_PROBE_PROMPT:], answer[:_PROBE_ANSWER]
    whole = torch.tensor(_whole_sequence_nlls(model, [(prompt, answer)], device)[0])
    cached = torch.tensor(_shared_prompt_nlls(model, {"q": prompt}, [("q", answer), ("q", answer)], device)[1])
    if torch.allclose(cached, whole, atol=tolerance, rtol=tolerance):
        return True
    logger.warning(
        "answer NLLs with the prompt's attention cached differ from whole sequences (max |diff| %.2g): "
        "scoring whole sequences",
        float((cached - whole).abs().max()),
    )
    return False
