"""Front door of fine-tuning a target model (``unierase finetune``): a model directory and a question/answer
set in, the fine-tuned model directory with a ``finetune.json`` provenance record out."""

from __future__ import annotations

import json
from pathlib import Path

from unierase.config import FinetuneConfig, config_hash
from unierase.data.splits import load_split
from unierase.digests import file_sha256, texts_sha256
from unierase.model.finetune import Checkpoint, finetune_model
from unierase.model.loading import load_model

CHECKPOINT_NAME = "finetune-checkpoint.pt"


def finetune_stage(
    model_dir: str | Path,
    data: str | Path,
    output_dir: str | Path,
    config: FinetuneConfig,
    device: str | None = None,
    progress: bool = True,
    checkpoint_every_s: float = Checkpoint.every_s,
) -> Path:
    """Loads a model, fine-tunes it on a JSON Lines set (or hub name) and saves it with its tokenizer
    and a ``finetune.json`` provenance record (data digest, config and its hash, losses). The state at an
    epoch's end is saved under ``output_dir`` (`CHECKPOINT_NAME`) until the model is, at most every
    ``checkpoint_every_s``: the same call after a run was killed goes on from its last saved epoch.

    Args:
        model_dir: The model to start from.
        data: The question/answer set (`unierase.data.splits.load_split`).
        output_dir: Where the fine-tuned model goes.
        config: Fine-tuning settings.
        device: Torch device; CUDA when there is one (GPU), else the CPU.
        progress: Show a progress bar.
        checkpoint_every_s: Least seconds between two checkpoints (`Checkpoint.every_s`; 0: every epoch).

    Returns:
        ``output_dir``.
    """
    facts = load_split(data)
    model, tokenizer = load_model(model_dir, device)
    output_dir = Path(output_dir)
    digest = file_sha256(data) if Path(data).is_file() else None
    # A hub set has no file digest: its rows stand for it.
    rows = digest or texts_sha256(f"{f.question}\t{f.answer}" for f in facts)
    checkpoint = Checkpoint(
        output_dir / CHECKPOINT_NAME, f"{model_dir}|{rows}|{config_hash(config)}", checkpoint_every_s
    )
    result = finetune_model(model, tokenizer, facts, config, progress=progress, checkpoint=checkpoint)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    record = {
        "base_model": str(model_dir),
        "data": str(data),
        "data_sha256": digest,
        "num_facts": len(facts),
        "config": config.model_dump(mode="json"),
        "config_hash": config_hash(config),
        "epoch_losses": result.epoch_losses,
        "resumed_after_epochs": result.resumed_epochs,
    }
    (output_dir / "finetune.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    checkpoint.path.unlink(missing_ok=True)  # the model is whole: nothing to resume
    return output_dir
