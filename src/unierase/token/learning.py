"""Phase I of UniErase: learn the unlearning token.

One new token ``<unlearn_0>`` is added and only its embedding row is trained, everything else
frozen, so that a prompt followed by the token makes the model produce a refusal and close it with
the token again. Targets are ``{question}<unlearn_0>{refusal}<unlearn_0>``; the loss covers what
follows the first unlearning token (the refusal and the closing token). Predicting the first token
itself is left to the edit (Phase II): trained here, it would make every question refuse.

Tied embeddings (SmolLM2): the new row is both the token's input embedding and its output vector. A
trial that trained the shared row on refusals alone made the model emit the token and a refusal after
ordinary answers ("... is Berlin. Sorry, I'm sorry."). So every step also holds ordinary questions
with the model's own answers under a plain LM loss: on the new row it only acts through the token's
logit, which it keeps low wherever the token is not the target. Untied models get their new output
row trained under the same loss.

Each stage computes once what the token's rows cannot change (the prompts before the token, the anchors'
hidden states; `unierase.token.cached_loss`), so a step runs the model over the refusals only.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import Params, TokenConfig
from unierase.data.general_questions import general_questions
from unierase.model.batching import IGNORE_INDEX, pad_sequences
from unierase.model.freezing import frozen_parameters
from unierase.model.generation import generate_answers
from unierase.model.hooks import get_module
from unierase.model.prompts import encode_prompt
from unierase.token.cached_loss import build_token_loss_cache
from unierase.token.refusals import refusal_ids
from unierase.token.vocabulary import UnlearningToken, add_unlearning_tokens, is_tied, token_names

logger = logging.getLogger(__name__)


@dataclass
class _Example:
    ids: list[int]
    labels: list[int]


def _refusal_example(prefix: list[int], question: str, tokenizer, token_id: int) -> _Example:
    refusal = refusal_ids(tokenizer, question)
    # EOS after the closing token: a plain ``generate()`` on the exported model then ends there too.
    tail = refusal + [token_id, tokenizer.eos_token_id]
    return _Example(prefix + [token_id] + tail, [IGNORE_INDEX] * (len(prefix) + 1) + tail)


def build_refusal_examples(
    tokenizer: PreTrainedTokenizerBase, questions: list[str], token_id: int, chat: bool
) -> list[_Example]:
    """``{question}<unlearn_0>{refusal}<unlearn_0>``, plain or chat-formatted, loss after the first token."""
    out = []
    for q in questions:
        prefix = encode_prompt(tokenizer, q) if chat else tokenizer(q, add_special_tokens=False)["input_ids"]
        out.append(_refusal_example(prefix, q, tokenizer, token_id))
    return out


def build_anchor_examples(
    tokenizer: PreTrainedTokenizerBase, questions: list[str], answers: list[str]
) -> list[_Example]:
    """Ordinary chat prompts with the model's own answers, LM loss on the answer: they keep the
    unlearning token's logit low wherever the token is not the target."""
    out = []
    for q, a in zip(questions, answers, strict=True):
        prompt = encode_prompt(tokenizer, q)
        answer = tokenizer(a, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append(_Example(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer))
    return out


def _collate(batch: list[_Example], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    # right padding: positions of real tokens do not move
    padded = pad_sequences([e.ids for e in batch], pad_id, labels=[e.labels for e in batch])
    return padded.to(device).model_inputs()


def _trainable_rows(model: PreTrainedModel) -> list[nn.Parameter]:
    """Unfreezes the embedding matrices (input, and output when untied) that hold the new rows."""
    params = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and not is_tied(model):
        params.append(out.weight)
    for p in params:
        p.requires_grad_(True)
    return params


class _RowAdam:
    """Adam on the new rows of each matrix alone: the optimiser's state and step cover those rows, not
    the whole vocabulary (Adam with a zero gradient and zero state would move no other row anyway, at
    the price of updating every element of the matrix at every step). Each step reads the rows'
    gradients from the matrices' and writes the updated rows back; the other rows never change."""

    def __init__(self, params: list[nn.Parameter], ids: list[int], lr: float):
        self.params, self.ids = params, torch.tensor(ids, device=params[0].device)
        self.rows = [p.detach()[self.ids].clone().requires_grad_(True) for p in params]
        self.optimizer = torch.optim.Adam(self.rows, lr=lr)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p, rows in zip(self.params, self.rows, strict=True):
            rows.grad = torch.zeros_like(rows) if p.grad is None else p.grad[self.ids]
        self.optimizer.step()
        for p, rows in zip(self.params, self.rows, strict=True):
            p[self.ids] = rows


def _run_epochs(
    model: PreTrainedModel,
    examples: list[_Example],
    params: list[nn.Parameter],
    token_ids: list[int],
    lr: float,
    epochs: int,
    config: TokenConfig,
    pad_id: int,
    rng: random.Random,
    desc: str,
    progress: bool,
    known: dict,
) -> list[float]:
    if epochs == 0 or not examples:
        return []
    device = next(model.parameters()).device
    cache = None
    if config.prefix_cache:
        cache, why = build_token_loss_cache(model, examples, token_ids, pad_id, known)
        if cache is None:
            logger.warning("%s: %s; recomputing whole sequences at every step", desc, why)
    optimizer = _RowAdam(params, token_ids, lr)
    losses = []
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        order = list(range(len(examples)))
        rng.shuffle(order)
        total, count = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            if cache is not None:
                loss = cache.loss(batch)
            else:
                loss = model(**_collate([examples[i] for i in batch], pad_id, device)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + loss.item(), count + 1
        losses.append(total / count)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


def learn_unlearning_token(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: list[str],
    anchor_answers: list[str],
    config: TokenConfig,
    perturb_modules: list[nn.Module] | None = None,
    progress: bool = True,
) -> UnlearningToken:
    """Adds the unlearning token(s) to ``model`` and ``tokenizer`` and trains their rows.

    Schedule (UniErase, with the learning rates of ``config``): plain-format refusal examples; then
    the same in chat format alongside the plain ones and the anchors; then a pass with the weights of
    ``perturb_modules`` (the MLPs of the layers to be edited) slightly perturbed, so the token still
    works once the edit has moved them. The perturbation is undone exactly afterwards.

    Args:
        model: The base model; modified in place (new rows only).
        tokenizer: Its tokenizer; the tokens are added to it.
        questions: Ordinary questions to train the refusal on (the token must work for any prompt).
        anchor_answers: The model's own answers to ``questions`` (greedy, before any change): the
            anchor examples that keep the token from appearing after ordinary answers.
        config: Token-learning hyperparameters.
        perturb_modules: Modules whose weights are perturbed in the robustness pass.
        progress: Show progress bars.

    Returns:
        The learned token.
    """
    if not questions:
        raise ValueError("token learning needs at least one question")
    if len(anchor_answers) != len(questions):
        raise ValueError(f"{len(anchor_answers)} anchor answers for {len(questions)} questions")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token")
    started = time.perf_counter()
    rng = random.Random(config.seed)
    names = token_names(config)
    ids = add_unlearning_tokens(model, tokenizer, names, seed=config.seed)
    token_id = ids[0]  # with several tokens, the first is the trigger; the others are spare capacity

    plain = build_refusal_examples(tokenizer, questions, token_id, chat=False)
    chat = build_refusal_examples(tokenizer, questions, token_id, chat=True)
    anchors = build_anchor_examples(tokenizer, questions, anchor_answers)

    was_training = model.training
    with frozen_parameters(model):  # only the token's rows train (re-enabled by _trainable_rows)
        params = _trainable_rows(model)
        model.train()
        pad = tokenizer.pad_token_id
        losses: list[float] = []
        # What the token's rows cannot change, shared by the stages on the unperturbed weights.
        unperturbed: dict = {}
        try:
            losses += _run_epochs(
                model,
                plain + anchors,
                params,
                ids,
                config.stage1_lr,
                config.stage1_epochs,
                config,
                pad,
                rng,
                "token:plain",
                progress,
                unperturbed,
            )
            losses += _run_epochs(
                model, plain + chat + anchors, params, ids, config.stage2_lr, config.stage2_epochs, config, pad, rng,
                "token:chat", progress, unperturbed,
            )  # fmt: skip
            if config.robust_epochs and perturb_modules:
                originals = _perturb(perturb_modules, config.robust_noise, config.seed)
                try:
                    losses += _run_epochs(
                        model, chat + anchors, params, ids, config.stage2_lr, config.robust_epochs, config, pad, rng,
                        "token:robust", progress, {},
                    )  # fmt: skip
                finally:
                    _restore(perturb_modules, originals)
        finally:
            model.train(was_training)

    out = model.get_output_embeddings()
    token = UnlearningToken(
        names=names,
        input_rows=model.get_input_embeddings().weight[ids].detach().clone(),
        output_rows=None if is_tied(model) or out is None else out.weight[ids].detach().clone(),
        losses=losses,
        seconds=time.perf_counter() - started,
    )
    logger.info("learned %s in %.1fs; loss %s", names, token.seconds, [round(x, 3) for x in losses])
    return token


def _perturb(modules: list[nn.Module], scale: float, seed: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    originals = []
    with torch.no_grad():
        for module in modules:
            originals.append({n: p.detach().clone() for n, p in module.named_parameters()})
            for p in module.parameters():
                noise = torch.randn(p.shape, generator=gen).to(p.device, p.dtype)
                p.add_(noise * scale * p.std())
    return originals


def _restore(modules: list[nn.Module], originals: list[dict[str, torch.Tensor]]) -> None:
    with torch.no_grad():
        for module, saved in zip(modules, originals, strict=True):
            for n, p in module.named_parameters():
                p.copy_(saved[n])


def token_training_questions(params: Params, domain: Sequence[str] = ()) -> list[str]:
    """``token.num_general_questions`` ordinary questions, shuffled with ``token.seed``, then up to
    ``token.domain_questions`` distinct questions of ``domain`` (a retain set's), drawn with the same seed
    whatever their order in the file."""
    # The token is learned once per base model and reused by every request, so it is trained on
    # ordinary and retain questions only, never on a forget set.
    questions = general_questions()
    random.Random(params.token.seed).shuffle(questions)
    picked = questions[: params.token.num_general_questions]
    own = sorted(set(domain) - set(picked))
    random.Random(params.token.seed).shuffle(own)
    return picked + own[: params.token.domain_questions]


def learn_token(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    params: Params,
    progress: bool = True,
    domain: Sequence[str] = (),
) -> UnlearningToken:
    """Learns the unlearning token on ordinary questions and up to ``token.domain_questions`` of
    ``domain`` (retain questions), with the model's own answers as anchors and the MLPs of the layers
    to be edited perturbed in the robustness pass."""
    questions = token_training_questions(params, domain)
    anchors = [g.text for g in generate_answers(model, tokenizer, questions, max_new_tokens=32, progress=progress)]
    mlps = [get_module(model, params.model.mlp_out_template.format(layer)) for layer in params.edit.layers]
    return learn_unlearning_token(model, tokenizer, questions, anchors, params.token, mlps, progress)
