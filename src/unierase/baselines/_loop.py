"""The optimisation loop every fine-tuning baseline shares; a baseline only supplies its loss.

As in OpenUnlearning's ``ForgetRetainDataset``, the forget set drives the epochs and each forget
item is paired with a retain item drawn at random (seeded).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import BaselineConfig
from unierase.data.facts import Fact
from unierase.model.qa_loss import collate, encode_example, make_optimizer, mean_token_nll, optimizer_step

logger = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
# loss(model, forget batch, retain batch or None, indices of the forget items in the batch)
LossFn = Callable[[PreTrainedModel, Batch, "Batch | None", list[int]], torch.Tensor]


def encode_facts(
    tokenizer: PreTrainedTokenizerBase, facts: Sequence[Fact], answers: Sequence[str] | None = None
) -> list[tuple[list[int], list[int]]]:
    """Training examples of ``facts`` (with ``answers`` in place of theirs when given)."""
    answers = [f.answer for f in facts] if answers is None else answers
    return [encode_example(tokenizer, f.question, a) for f, a in zip(facts, answers)]


def run_unlearning(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    forget: Sequence[Fact],
    retain: Sequence[Fact],
    config: BaselineConfig,
    loss_fn: LossFn,
    forget_answers: Sequence[str] | None = None,
    name: str = "unlearn",
    progress: bool = True,
) -> list[float]:
    """Optimises ``loss_fn`` for ``config.epochs`` passes over the forget set; the model changes in place.

    Returns:
        The loss of every step.

    Raises:
        ValueError: The forget set is empty.
    """
    if not forget:
        raise ValueError("the forget set is empty")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    forget_ex = encode_facts(tokenizer, forget, forget_answers)
    retain_ex = encode_facts(tokenizer, retain)
    rng = random.Random(config.seed)
    steps_per_epoch = math.ceil(len(forget_ex) / config.batch_size)
    total = config.epochs * steps_per_epoch
    optimizer, scheduler = make_optimizer(
        model, config.lr, config.weight_decay, total, round(config.warmup_epochs * steps_per_epoch)
    )
    model.train()
    losses = []
    bar = tqdm(total=total, desc=name, disable=not progress, leave=False)
    try:
        for _ in range(config.epochs):
            order = rng.sample(range(len(forget_ex)), len(forget_ex))
            for start in range(0, len(order), config.batch_size):
                idx = order[start : start + config.batch_size]
                forget_batch = collate([forget_ex[i] for i in idx], pad)
                retain_batch = collate([rng.choice(retain_ex) for _ in idx], pad) if retain_ex else None
                loss = loss_fn(model, forget_batch, retain_batch, idx)
                losses.append(optimizer_step(model, loss, optimizer, scheduler, config.max_grad_norm))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    finally:
        bar.close()
        model.eval()
    logger.info("%s: %d steps, loss %.4f -> %.4f", name, len(losses), losses[0], losses[-1])
    return losses


def require_retain(retain: Sequence[Fact], config: BaselineConfig, method: str) -> None:
    """Raises ValueError when a method with a retain term gets no retain items."""
    if config.retain_weight > 0 and not retain:
        raise ValueError(f"{method} has a retain term (retain_weight={config.retain_weight}) but no retain items")


def retain_term(model: PreTrainedModel, retain_batch: dict | None, config: BaselineConfig) -> torch.Tensor | float:
    """``retain_weight * NLL(retain)``, the retain term GradDiff, NPO and IdkSFT share (0 without one)."""
    if retain_batch is None or config.retain_weight <= 0:
        return 0.0
    return config.retain_weight * mean_token_nll(model, retain_batch)
