"""Greedy generation for a batch of questions, the one way answers are produced everywhere."""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import (
    DynamicCache,
    LogitsProcessor,
    NoBadWordsLogitsProcessor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
)

from unierase.model.batching import pad_sequences, shared_head
from unierase.model.prompts import encode_answer, encode_prompt


@dataclass(frozen=True)
class Generation:
    """One greedy answer.

    Attributes:
        question: The question asked.
        text: The answer with special tokens (the unlearning token included) stripped.
        token_ids: The generated token ids, special tokens included.
    """

    question: str
    text: str
    token_ids: tuple[int, ...]

    def opens_with(self, token_ids: Collection[int]) -> bool:
        """Whether the answer's first token is one of ``token_ids`` (the unlearning token's gate fired)."""
        return bool(self.token_ids) and self.token_ids[0] in token_ids


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: list[str],
    max_new_tokens: int = 200,
    batch_size: int = 32,
    bad_words_ids: list[list[int]] | None = None,
    stop_token_ids: list[int] | None = None,
    prefills: list[str] | None = None,
    refusals: list[list[int]] | None = None,
    progress: bool = True,
) -> list[Generation]:
    """Greedy answers to ``questions``, in batches of prompts of like length.

    Args:
        model: A causal LM.
        tokenizer: Its tokenizer (needs a pad token).
        questions: Questions, formatted with `unierase.model.prompts.format_prompt`.
        max_new_tokens: Generation length limit (200 in the common evaluation protocol).
        batch_size: Prompts per forward pass.
        bad_words_ids: Token sequences generation may not produce (leak audit: ban the unlearning token).
        stop_token_ids: Ids that end a generation when they follow its first token: the unlearning
            token opens a refusal and closes it again, so its second appearance is the end. An answer
            that did not open with one may not produce one later: the token is a gate on the whole
            answer, and a stray one mid-answer (its row of a tied output matrix is the trained
            embedding) would otherwise cut an ordinary answer short. Right after an opening one,
            the answer may not close, end, or write a token that shows nothing: a refusal is never
            empty.
        prefills: One text per question that starts the assistant's answer (appended to the prompt,
            as an API that accepts a partial assistant turn does); the generation is what follows it.
        refusals: With ``stop_token_ids``: token id sequences an answer that opened with a stop id goes on
            with, one of them and then the closing id (`unierase.token.refusals.refusal_phrase_ids`);
            greedy among them, token by token, so the one the model finds likeliest after the question
            and the token. None: the model goes on freely.
        progress: Show a progress bar.
    """
    if prefills is not None and len(prefills) != len(questions):
        raise ValueError(f"{len(prefills)} prefills for {len(questions)} questions")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token before batched generation")
    device = next(model.parameters()).device
    eos = model.generation_config.eos_token_id
    eos_ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
    stops = list(stop_token_ids or [])
    # What may not come right after an opening stop id: a closing one, EOS, or a token that shows nothing.
    silent = sorted({*stops, *eos_ids, *_blank_ids(tokenizer)}) if stops else []
    encoded = [encode_prompt(tokenizer, q) for q in questions]
    if prefills is not None:
        encoded = [ids + encode_answer(tokenizer, p) for ids, p in zip(encoded, prefills)]
    # Batched by length, so little of a batch is padding; the answers come back in the questions' order.
    order = sorted(range(len(questions)), key=lambda i: len(encoded[i]))
    out: list[Generation | None] = [None] * len(questions)
    batches = range(0, len(order), batch_size)
    for start in tqdm(batches, desc="generate", disable=not progress or len(batches) < 2, leave=False):
        chunk = order[start : start + batch_size]
        prompts = [encoded[i] for i in chunk]
        width = max(len(ids) for ids in prompts)
        processors = [NoBadWordsLogitsProcessor(bad_words_ids, eos_ids or None)] if bad_words_ids else []
        if stops:
            processors.append(_OnlyClosingWhatOpened(stops, silent, width))
            if refusals:
                processors.append(_RefusalAfterOpening(stops, refusals, width))
        generated = _greedy(
            model,
            _prefill(model, prompts, tokenizer.pad_token_id, device),
            max_new_tokens,
            eos_ids,
            processors,
            _StopAfterFirst(stops, width) if stops else None,
        )
        for i, ids in zip(chunk, generated):
            text = tokenizer.decode(ids, skip_special_tokens=True).strip()
            out[i] = Generation(question=questions[i], text=text, token_ids=tuple(ids))
    return out


@dataclass
class _Prefilled:
    """A batch of prompts after its forward pass: the rows (``[shared head][pad][tail]``, each as wide as
    the longest prompt), their attention mask and positions, the attention cache and the next-token logits."""

    seqs: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    past: DynamicCache
    logits: torch.Tensor


def _prefill(model: PreTrainedModel, encoded: list[list[int]], pad_id: int, device: torch.device) -> _Prefilled:
    """The prompts' forward pass. The head every prompt shares is run once, its attention cache repeated
    for every row, and only the tails (left-padded after it) run as a batch: chat-formatted questions share
    the template's head, often longer than the question, and generation reads many of them (the edit's
    check of every retain question's first token is this pass alone)."""
    head = shared_head(encoded)
    rows, head_ids = len(encoded), torch.tensor(encoded[0][:head], dtype=torch.long, device=device)
    tails = pad_sequences([ids[head:] for ids in encoded], pad_id, side="left").to(device)
    past = DynamicCache()
    if head:
        model(input_ids=head_ids[None], past_key_values=past, use_cache=True, logits_to_keep=1)
        past.batch_repeat_interleave(rows)
    seqs = torch.cat([head_ids.expand(rows, head), tails.input_ids], dim=1)
    mask = torch.cat([torch.ones(rows, head, dtype=tails.attention_mask.dtype, device=device), tails.attention_mask], 1)
    positions = tails.position_ids() + head
    logits = model(
        input_ids=tails.input_ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=past,
        use_cache=True,
        logits_to_keep=1,
    ).logits[:, -1]
    return _Prefilled(seqs, mask, positions, past, logits)


def _greedy(
    model: PreTrainedModel,
    prefilled: _Prefilled,
    max_new_tokens: int,
    eos_ids: list[int],
    processors: list[LogitsProcessor],
    stop: _StopAfterFirst | None,
) -> list[list[int]]:
    """Greedy continuation of each prefilled row, the end token included. A row that has ended leaves
    the batch and its rows of the attention cache go with it: answers differ much in length, and the
    batch would otherwise keep computing the finished ones until the longest ends."""
    seqs, mask, past, logits = prefilled.seqs, prefilled.mask, prefilled.past, prefilled.logits
    device = seqs.device
    position = prefilled.positions[:, -1] + 1
    active = torch.arange(len(seqs), device=device)
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    out: list[list[int]] = [[] for _ in range(len(seqs))]
    for step in range(max_new_tokens):
        scores = logits.float()
        for processor in processors:
            scores = processor(seqs, scores)
        chosen = scores.argmax(-1)
        seqs = torch.cat([seqs, chosen[:, None]], dim=1)
        for row, token in zip(active.tolist(), chosen.tolist()):
            out[row].append(token)
        done = torch.isin(chosen, eos)
        if stop is not None:
            done |= stop(seqs, scores)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero()[:, 0]
            past.batch_select_indices(keep)
            seqs, mask, position, active, chosen = seqs[keep], mask[keep], position[keep], active[keep], chosen[keep]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        logits = model(
            input_ids=chosen[:, None],
            attention_mask=mask,
            position_ids=position[:, None],
            past_key_values=past,
            use_cache=True,
        ).logits[:, -1]
        position = position + 1
    return out


def _blank_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """Ids that decode to nothing visible: special tokens and whitespace."""
    return _blank_ids_of(tokenizer, len(tokenizer))


@functools.lru_cache(maxsize=4)
def _blank_ids_of(tokenizer: PreTrainedTokenizerBase, size: int) -> tuple[int, ...]:
    # Decoding the whole vocabulary takes a noticeable part of a second, and an evaluation serves many
    # batches with one tokenizer; the size is in the key because adding tokens changes the answer.
    return tuple(i for i in range(size) if not tokenizer.decode([i], skip_special_tokens=True).strip())


class _OnlyClosingWhatOpened(LogitsProcessor):
    """Masks the stop ids in every row whose first generated token was not one of them, and, right
    after an opening one, every id of ``silent_ids`` (closing ids, EOS, tokens that show nothing): a
    refusal says something before it closes (an edit that moved what follows the token otherwise left
    answers that open and close on nothing)."""

    def __init__(self, stop_ids: list[int], silent_ids: list[int], prompt_width: int) -> None:
        self.stop_ids = torch.tensor(stop_ids)
        self.silent_ids = torch.tensor(silent_ids)
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] <= self.prompt_width:  # the first token: the gate may open
            return scores
        vocab = torch.arange(scores.shape[1], device=scores.device)
        stop_ids = self.stop_ids.to(scores.device)
        opened = torch.isin(input_ids[:, self.prompt_width], stop_ids)
        scores = scores.masked_fill(~opened[:, None] & torch.isin(vocab, stop_ids), -torch.inf)
        if input_ids.shape[1] == self.prompt_width + 1:  # the token right after an opening one
            silent = torch.isin(vocab, self.silent_ids.to(scores.device))
            scores = scores.masked_fill(opened[:, None] & silent, -torch.inf)
        return scores


class _RefusalAfterOpening(LogitsProcessor):
    """In every row whose first generated token is a stop id, lets the answer go on only along one of
    ``refusals`` (token ids) and, once it has said one whole, only close. The unlearning token was
    trained to open these refusals, but what a small model says after it wanders ("I am in a bad
    mood."), and an edit moves it further; among the refusals, greedy decoding follows the model's own
    preference, so the gate's answer still reads as the model's."""

    def __init__(self, stop_ids: list[int], refusals: list[list[int]], prompt_width: int) -> None:
        self.stop_ids = list(stop_ids)
        self.refusals = [tuple(r) for r in refusals if r]
        self.prompt_width = prompt_width

    def allowed(self, said: tuple[int, ...]) -> list[int]:
        """What may follow ``said`` (the answer after its opening stop id): the next token of every
        refusal it begins, and the stop ids where it is a whole one (or, off every refusal, only they)."""
        n = len(said)
        nexts = {r[n] for r in self.refusals if len(r) > n and r[:n] == said}
        if not nexts or said in self.refusals:
            nexts.update(self.stop_ids)
        return sorted(nexts)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] <= self.prompt_width:  # the first token: the gate may open
            return scores
        barred = torch.zeros_like(scores, dtype=torch.bool)
        for row, ids in enumerate(input_ids[:, self.prompt_width :].tolist()):
            if ids[0] in self.stop_ids:
                barred[row] = True
                barred[row, self.allowed(tuple(ids[1:]))] = False
        return scores.masked_fill(barred, -torch.inf)


class _StopAfterFirst(StoppingCriteria):
    """Ends a row once a stop id appears anywhere after the row's first generated token."""

    def __init__(self, stop_ids: list[int], prompt_width: int) -> None:
        self.stop_ids = torch.tensor(stop_ids)
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        later = input_ids[:, self.prompt_width + 1 :]
        return torch.isin(later, self.stop_ids.to(later.device)).any(dim=1)
