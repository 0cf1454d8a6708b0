"""The relearning attack: a few optimiser steps on data that does not contain the forgotten facts.

Hu et al. (ICLR 2025) showed that fine-tuning an unlearned model briefly on benign, related data
brings the unlearned answers back when unlearning only obfuscated them. The audit trains every
weight on retain items only (never a forget item), asks the forget questions again, and then puts the
model back exactly as it was.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import EvalConfig, FinetuneConfig
from unierase.data.facts import Fact
from unierase.model.finetune import FinetuneResult, finetune_model

logger = logging.getLogger(__name__)


def relearning_config(config: EvalConfig) -> FinetuneConfig:
    """The attack's optimiser: AdamW at ``relearn_lr``, no warm-up, one pass over ``relearn_steps`` batches."""
    return FinetuneConfig(
        lr=config.relearn_lr, epochs=1, batch_size=config.relearn_batch_size, warmup_ratio=0.0, seed=0
    )


def relearning_items(facts: Sequence[Fact], config: EvalConfig) -> list[Fact]:
    """``relearn_steps`` batches of the given (retain) items, cycled when there are fewer."""
    if not facts:
        raise ValueError("the relearning attack needs retain items")
    return list(itertools.islice(itertools.cycle(facts), config.relearn_steps * config.relearn_batch_size))


@contextlib.contextmanager
def relearned_weights(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    retain: Sequence[Fact],
    config: EvalConfig,
) -> Iterator[FinetuneResult]:
    """Within the block the model is fine-tuned on ``retain`` for ``config.relearn_steps`` steps;
    afterwards every parameter, its ``requires_grad`` and the eval mode are exactly as before (the
    originals wait on the CPU, so an accelerator holds one copy).

    Yields:
        The fine-tuning's losses.
    """
    params = dict(model.named_parameters())
    saved = {name: p.detach().to("cpu", copy=True) for name, p in params.items()}
    flags = {name: p.requires_grad for name, p in params.items()}
    try:
        for p in params.values():
            p.requires_grad_(True)
        with torch.enable_grad():
            result = finetune_model(
                model, tokenizer, relearning_items(retain, config), relearning_config(config), False
            )
        logger.info(
            "relearning attack: %d steps, loss %.4f -> %.4f", len(result.losses), result.losses[0], result.losses[-1]
        )
        yield result
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(saved[name])
                p.requires_grad_(flags[name])
        model.eval()
