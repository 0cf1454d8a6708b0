"""Front door of fine-tuning a target model (``unierase finetune``): a model directory and a question/answer
set in, the fine-tuned model directory with a ``finetune.json`` provenance record out."""

from __future__ import annotations

import json
from pathlib import Path

from unierase.config import FinetuneConfig, config_hash
from unierase.data.splits import load_split
from unierase.digests import file_sha256
from unierase.model.finetune import finetune_model
from unierase.model.loading import load_model


def finetune_stage(
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
