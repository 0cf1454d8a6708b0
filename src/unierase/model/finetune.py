"""Fine-tuning a model on question/answer pairs: the target model that knows a set, and the retain
model (trained on the retain split only) that forget quality compares against.

`finetune_model` is the pure core; `finetune_to_dir` is the file-level front door the CLI calls
(``unierase finetune --data FULL.jsonl --model DIR --output DIR``).
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import FinetuneConfig, config_hash
from unierase.data.facts import Fact
from unierase.data.splits import load_split
from unierase.model.delta import file_sha256
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


def finetune_to_dir(
    model_dir: str | Path,
    data: str | Path,
    output_dir: str | Path,
    config: FinetuneConfig,
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """Loads a model, fine-tunes it on a JSON Lines set (or hub name) and saves it with its tokenizer
    and a ``finetune.json`` provenance record (data digest, config and its hash, losses).

    Args:
        model_dir: The model to start from.
        data: The question/answer set (`unierase.data.splits.load_split`).
        output_dir: Where the fine-tuned model goes.
        config: Fine-tuning settings.
        device: Torch device; CUDA when there is one (GPU), else the CPU.
        progress: Show a progress bar.

    Returns:
        ``output_dir``.
    """
    from unierase.stages.evaluate import load_model

    facts = load_split(data)
    model, tokenizer = load_model(model_dir, device)
    result = finetune_model(model, tokenizer, facts, config, progress=progress)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    record = {
        "base_model": str(model_dir),
        "data": str(data),
        "data_sha256": file_sha256(data) if Path(data).is_file() else None,
        "num_facts": len(facts),
        "config": config.model_dump(mode="json"),
        "config_hash": config_hash(config),
        "epoch_losses": result.epoch_losses,
    }
    (output_dir / "finetune.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return output_dir
