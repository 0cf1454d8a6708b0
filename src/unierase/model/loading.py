"""Loading a model directory: the one loader every stage, the registry's pyfunc and the benchmarks use."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import ModelConfig


class ModelDirectoryError(ValueError):
    """A path that is not a loadable causal-LM directory."""


def default_device() -> str:
    """CUDA when there is a GPU, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_model_dir(model_dir: str | Path) -> Path:
    """Checks, without loading weights, that ``model_dir`` holds a Hugging Face causal LM.

    Raises:
        ModelDirectoryError: No directory, no ``config.json``, or a config of a model that is not a
            causal LM (its ``architectures`` name no ``...ForCausalLM``).
    """
    model_dir = Path(model_dir)
    config_file = model_dir / "config.json"
    if not model_dir.is_dir():
        raise ModelDirectoryError(f"{model_dir}: no such model directory")
    if not config_file.is_file():
        raise ModelDirectoryError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelDirectoryError(f"{config_file}: not a JSON model config ({err})") from err
    architectures = config.get("architectures") or []
    if architectures and not any(str(a).endswith("ForCausalLM") for a in architectures):
        raise ModelDirectoryError(
            f"{model_dir} holds a {', '.join(architectures)}, not a causal language model (…ForCausalLM)"
        )
    return model_dir


def load_model(
    model_dir: str | Path,
    device: str | None = None,
    dtype: str = "float32",
    device_map: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM in eval mode, with its tokenizer (pad token set for batched generation).

    Args:
        model_dir: A transformers model directory.
        device: Torch device; `default_device` when None. Ignored with ``device_map``.
        dtype: Weight dtype by name (``ModelConfig.dtype``): float32 (the default), bfloat16 or float16.
        device_map: None keeps the model on ``device``; "auto" lets accelerate spread its layers over every
            GPU of the machine (a model larger than one GPU), each layer's weights on one device.
    """
    model_dir = check_model_dir(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch_dtype = getattr(torch, dtype)
    if device_map is not None:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype, device_map=device_map)
        return model.eval(), tokenizer
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype)
    return model.to(device or default_device()).eval(), tokenizer


def load_configured_model(
    model_dir: str | Path, config: ModelConfig, device: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """`load_model` with the dtype and device map of ``params.model``."""
    return load_model(model_dir, device, dtype=config.dtype, device_map=config.device_map)
