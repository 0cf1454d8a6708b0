"""Fine-tuning a model on question/answer pairs: the target model that knows a set, and the retain
model (trained on the retain split only) that forget quality compares against.

`finetune_model` is the pure core; `unierase.stages.finetune.finetune_stage` is the file-level front door the CLI calls
(``unierase finetune --data FULL.jsonl --model DIR --output DIR``).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.atomic import atomic_file
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
    resumed_epochs: int = 0


@dataclass(frozen=True)
class Checkpoint:
    """Where a fine-tuning run saves its whole state at the end of an epoch (weights, optimiser, schedule,
    shuffling), so that a run killed part way goes on from its last saved epoch instead of starting
    over: a fine-tune of a few hundred pairs takes an hour on a CPU.

    Attributes:
        path: The checkpoint file (written whole or not at all).
        fingerprint: What the run depends on (base model, data digest, settings): a checkpoint with
            another one is not resumed, it is trained over.
        every_s: Save at an epoch's end only when this many seconds have passed since the run (or its
            resume) began or since the last save; 0 saves after every epoch. The state is three times
            the weights (AdamW's two moments): writing it after each of a short run's epochs would cost
            more than the run would lose.
    """

    path: Path
    fingerprint: str
    every_s: float = 300.0


def finetune_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    facts: Sequence[Fact],
    config: FinetuneConfig,
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
    after_epoch: Callable[[int], None] | None = None,
) -> FinetuneResult:
    """Trains all parameters on ``facts`` with the answer-only loss; the model changes in place.

    Args:
        checkpoint: Save the state there at the end of an epoch (as often as its ``every_s`` lets), and
            resume from it where it holds a finished epoch of this same run. The caller removes it once
            the model is saved.
        after_epoch: Called with the number of epochs done, after the epoch's checkpoint is written.

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
    losses: list[float] = []
    epoch_losses: list[float] = []
    if checkpoint is not None and (saved := _load_checkpoint(checkpoint)) is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        rng.setstate(saved["shuffle_rng"])
        torch.set_rng_state(saved["torch_rng"])
        losses, epoch_losses = list(saved["losses"]), list(saved["epoch_losses"])
        logger.info("resuming fine-tuning after epoch %d of %d (%s)", len(epoch_losses), config.epochs, checkpoint.path)
    resumed = len(epoch_losses)
    last_saved = time.monotonic()
    model.train()
    bar = tqdm(total=total, initial=len(losses), desc="finetune", disable=not progress)
    try:
        for _ in range(resumed, config.epochs):
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
            last_epoch = len(epoch_losses) == config.epochs  # the model itself is saved next
            if checkpoint is not None and not last_epoch and time.monotonic() - last_saved >= checkpoint.every_s:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
                state |= {"scheduler": scheduler.state_dict(), "shuffle_rng": rng.getstate()}
                state |= {"torch_rng": torch.get_rng_state(), "losses": losses, "epoch_losses": epoch_losses}
                _save_checkpoint(checkpoint, state)
                last_saved = time.monotonic()
            if after_epoch is not None:
                after_epoch(len(epoch_losses))
    finally:
        bar.close()
        model.eval()
    logger.info("fine-tuned on %d pairs: loss %.4f -> %.4f", len(examples), epoch_losses[0], epoch_losses[-1])
    return FinetuneResult(losses=losses, epoch_losses=epoch_losses, resumed_epochs=resumed)


def _save_checkpoint(checkpoint: Checkpoint, state: dict) -> None:
    """Writes ``state`` atomically: a run killed while writing leaves the previous epoch's checkpoint whole."""
    with atomic_file(checkpoint.path) as tmp:
        torch.save({"fingerprint": checkpoint.fingerprint, **state}, tmp)


def _load_checkpoint(checkpoint: Checkpoint) -> dict | None:
    """The saved state of this same run, or None (no checkpoint, or one from other inputs)."""
    if not checkpoint.path.is_file():
        return None
    saved = torch.load(checkpoint.path, map_location="cpu", weights_only=True)
    if saved.get("fingerprint") != checkpoint.fingerprint:
        logger.warning("%s is from another fine-tuning run (other data or settings): starting over", checkpoint.path)
        return None
    return saved
