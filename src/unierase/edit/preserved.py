"""Second moments of the keys (inputs of the edited MLP output projections) on text the edit must
leave alone: the preserved-knowledge statistics behind AlphaEdit's null-space projection.

Two kinds of text feed them: general prose, and ordinary questions in the model's chat format,
because prose alone protected question-style keys little on SmolLM2 (forget keys kept 70-82% of
their norm under a prose-only projection, so the projection constrained almost nothing they use).
"""

from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.model.batching import pad_sequences
from unierase.model.hooks import capture_inputs, get_module, run_until_captured
from unierase.model.prompts import encode_prompt

logger = logging.getLogger(__name__)


@torch.no_grad()
def key_second_moment(
    model: PreTrainedModel,
    sequences: list[list[int]],
    module_paths: list[str],
    batch_size: int,
    pad_id: int,
    desc: str = "keys",
    progress: bool = True,
) -> tuple[dict[str, torch.Tensor], int]:
    """Mean of ``k kᵀ`` over every (non-padding) token of ``sequences``, per module.

    Returns:
        Module path -> (d_in, d_in) float64 second moment, and the number of tokens it averages.
    """
    modules = {p: get_module(model, p) for p in module_paths}
    device = next(model.parameters()).device
    sums: dict[str, torch.Tensor] = {}
    count = 0
    batches = range(0, len(sequences), batch_size)
    with capture_inputs(modules) as seen:
        for start in tqdm(batches, desc=desc, disable=not progress, leave=False):
            chunk = sequences[start : start + batch_size]
            batch = pad_sequences(chunk, pad_id)
            mask = batch.attention_mask.bool()
            run_until_captured(model, seen, **batch.to(device).model_inputs())
            for path in module_paths:
                keys = seen[path][mask.to(device)].double()
                sums[path] = sums.get(path, 0) + keys.T @ keys
            count += int(mask.sum())
    if count == 0:
        raise ValueError("no tokens to compute key statistics from")
    return {p: s / count for p, s in sums.items()}, count


def preserved_second_moment(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    questions: list[str],
    module_paths: list[str],
    max_length: int,
    question_weight: float,
    batch_size: int,
    progress: bool = True,
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """The preserved keys' second moment: general prose plus chat-formatted ordinary questions,
    each averaged over its own tokens, mixed as ``prose + question_weight * questions``.

    Returns:
        Module path -> (d_in, d_in) float64 matrix, and token counts by source.
    """
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token")
    prose = [tokenizer(t, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    prose = [s for s in prose if s]
    if not prose:
        raise ValueError("the general-text corpus is empty")
    pad = tokenizer.pad_token_id
    moment, n_prose = key_second_moment(model, prose, module_paths, batch_size, pad, "cov:prose", progress)
    counts = {"prose_tokens": n_prose, "question_tokens": 0}
    if questions and question_weight > 0:
        chats = [encode_prompt(tokenizer, q) for q in questions]
        q_moment, n_q = key_second_moment(model, chats, module_paths, batch_size, pad, "cov:questions", progress)
        moment = {p: moment[p] + question_weight * q_moment[p] for p in module_paths}
        counts["question_tokens"] = n_q
    return moment, counts
