"""Fine-tuning a model on question/answer pairs: the target model that knows a set, and the retain
model (trained on the retain split only) that forget quality compares against.

`finetune_model` is the pure core; `unierase.stages.finetune.finetune_stage` is the file-level front door the CLI calls
(``unierase finetune --data FULL.jsonl --model DIR --output DIR``).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import FinetuneConfig
from unierase.data.facts import Fact
from unierase.model.qa_loss import collate, encode_example, make_optimizer, mean_token_nll, optimizer_step

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tuning run did.

    Attributes:
        losses: Loss of every optimisation step.
        epoch_losses: Mean loss of every epoch.
    """

    losses: list[float]
    epoch_losses: list[float]


def finetune_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    facts: Sequence[Fact],
    config: FinetuneConfig,
    progress: bool = True,
) -> FinetuneResult:
    """Trains all parameters on ``facts`` with the answer-only loss; the model changes in place.

    Raises:
        ValueError: No facts.
    """
    if not facts:
        raise ValueError("nothing to fine-tune on: no facts")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    examples = [encode_example(tokenizer, f.question, f.answer) for f in facts]
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total = config.epochs * steps_per_epoch
    optimizer, scheduler = make_optimizer(
        model, config.lr, config.weight_decay, total, round(config.warmup_ratio * total)
    )
    model.train()
    losses: list[float] = []
    epoch_losses: list[float] = []
    bar = tqdm(total=total, desc="finetune", disable=not progress)
    try:
        for _ in range(config.epochs):
            order = rng.sample(range(len(examples)), len(examples))
            start_step = len(losses)
            for start in range(0, len(order), config.batch_size):
                batch = collate([examples[i] for i in order[start : start + config.batch_size]], pad)
                loss = mean_token_nll(model, batch)
                losses.append(optimizer_step(model, loss, optimizer, scheduler, config.max_grad_norm))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            epoch_losses.append(sum(losses[start_step:]) / (len(losses) - start_step))
            logger.debug("epoch %d: mean loss %.4f", len(epoch_losses), epoch_losses[-1])
    finally:
        bar.close()
        model.eval()
    logger.info("fine-tuned on %d pairs: loss %.4f -> %.4f", len(examples), epoch_losses[0], epoch_losses[-1])
    return FinetuneResult(losses=losses, epoch_losses=epoch_losses)
