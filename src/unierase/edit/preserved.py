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
def key_moment_sums(
    model: PreTrainedModel,
    sequences: list[list[int]],
    module_paths: list[str],
    batch_size: int,
    pad_id: int,
    desc: str = "keys",
    progress: bool = True,
) -> tuple[dict[str, torch.Tensor], int]:
    """Sum of ``k kᵀ`` over every (non-padding) token of ``sequences``, per module, and the token count:
    the map step of the statistics. Sums of disjoint shards add up to the sum of their union (the exact
    combine of `combine_moment_sums`), so a corpus can be split over workers.

    Each sum stays on the device of its module's weights (a model spread over several GPUs).

    Returns:
        Module path -> (d_in, d_in) float64 sum, and the number of tokens summed (0 for no sequences).
    """
    modules = {p: get_module(model, p) for p in module_paths}
    device = model.get_input_embeddings().weight.device
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
                inputs = seen[path]
                keys = inputs[mask.to(inputs.device)].double()
                sums[path] = sums.get(path, 0) + keys.T @ keys
            count += int(mask.sum())
    return sums, count


def combine_moment_sums(
    parts: list[tuple[dict[str, torch.Tensor], int]],
) -> tuple[dict[str, torch.Tensor], int]:
    """The reduce step: shards' float64 sums added in the given order, and their token counts added."""
    sums: dict[str, torch.Tensor] = {}
    count = 0
    for part_sums, part_count in parts:
        for path, total in part_sums.items():
            sums[path] = sums[path] + total.to(sums[path].device) if path in sums else total
        count += part_count
    return sums, count


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
    sums, count = key_moment_sums(model, sequences, module_paths, batch_size, pad_id, desc, progress)
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
    sources = preserved_sources(tokenizer, texts, questions, max_length, question_weight)
    pad = tokenizer.pad_token_id
    moment, n_prose = key_second_moment(model, sources["prose"], module_paths, batch_size, pad, "cov:prose", progress)
    counts = {"prose_tokens": n_prose, "question_tokens": 0}
    if sources["questions"]:
        chats = sources["questions"]
        q_moment, n_q = key_second_moment(model, chats, module_paths, batch_size, pad, "cov:questions", progress)
        moment = {p: moment[p] + question_weight * q_moment[p] for p in module_paths}
        counts["question_tokens"] = n_q
    return moment, counts


def preserved_sources(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    questions: list[str],
    max_length: int,
    question_weight: float,
) -> dict[str, list[list[int]]]:
    """The token sequences the preserved keys are read from: ``prose`` (general text, truncated to
    ``max_length``, empty texts dropped) and ``questions`` (chat-formatted; none when their weight is 0).

    Raises:
        ValueError: The general-text corpus yields no tokens.
    """
    prose = [tokenizer(t, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    prose = [s for s in prose if s]
    if not prose:
        raise ValueError("the general-text corpus is empty")
    chats = [encode_prompt(tokenizer, q) for q in questions] if questions and question_weight > 0 else []
    return {"prose": prose, "questions": chats}


def moments_from_sums(
    sums: dict[str, dict[str, torch.Tensor]], counts: dict[str, int], question_weight: float
) -> dict[str, torch.Tensor]:
    """The preserved second moment from per-source sums and token counts (the map-reduce's last step):
    ``prose_sum / prose_tokens + question_weight * questions_sum / question_tokens``, as
    `preserved_second_moment` mixes the two means.

    Raises:
        ValueError: No prose tokens.
    """
    if counts.get("prose", 0) == 0:
        raise ValueError("no tokens to compute key statistics from")
    moment = {p: s / counts["prose"] for p, s in sums["prose"].items()}
    if counts.get("questions", 0) > 0:
        moment = {p: moment[p] + question_weight * (s / counts["questions"]) for p, s in sums["questions"].items()}
    return moment
