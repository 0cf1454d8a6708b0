"""Preserved-key statistics with an on-disk cache, keyed by a digest of the model's weights, the
edited layers, the corpus, the sample count and the question set, so a second run skips them."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.atomic import atomic_file
from unierase.config import Params
from unierase.data.corpus import load_corpus
from unierase.data.general_questions import general_questions
from unierase.digests import texts_sha256, weights_sha256
from unierase.edit.preserved import key_second_moment, preserved_second_moment

logger = logging.getLogger(__name__)


def split_heldout(texts: list[str], every: int = 5) -> tuple[list[str], list[str]]:
    """Every ``every``-th text is held out of the preserved set, to measure how the edit treats
    general text it was not constrained on."""
    kept = [t for i, t in enumerate(texts) if i % every != every - 1]
    held = [t for i, t in enumerate(texts) if i % every == every - 1]
    return kept, held


def statistics_cache_path(
    model: PreTrainedModel, params: Params, cache_dir: Path, texts: list[str], questions: list[str]
) -> tuple[str, Path]:
    """The cache key and file of the statistics of ``model`` under ``params`` (weights up to the last
    edited layer, layers, corpus, sample count, questions): every path that computes them writes there."""
    layers = sorted(params.edit.layers)
    spec = {
        "model": weights_sha256(model, params.model.layer_template, max(layers)),
        "layers": layers,
        "template": params.model.mlp_out_template,
        "corpus": texts_sha256(texts),
        "num_samples": params.covariance.num_samples,
        "max_length": params.covariance.max_length,
        "questions": texts_sha256(questions),
        "question_weight": params.covariance.question_weight,
    }
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]
    return key, Path(cache_dir) / "covariance" / f"{key}.safetensors"


def cached_preserved_moments(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    params: Params,
    cache_dir: Path,
    progress: bool = True,
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], dict]:
    """Second moments of the preserved keys and of held-out general-text keys, per edited layer.

    Returns:
        (preserved, heldout, info) where info has the cache key, whether it was a hit, token counts
        and the seconds spent.
    """
    started = time.perf_counter()
    texts = load_corpus(params.covariance)
    kept, held = split_heldout(texts)
    questions = general_questions()
    layers = sorted(params.edit.layers)
    key, path = statistics_cache_path(model, params, cache_dir, texts, questions)
    if path.exists():
        preserved, heldout, info = read_statistics(path)
        info.update(cache_key=key, cache_hit=True, seconds=time.perf_counter() - started)
        return preserved, heldout, info

    paths = [params.model.mlp_out_template.format(layer) for layer in layers]
    cov = params.covariance
    moments, counts = preserved_second_moment(
        model, tokenizer, kept, questions, paths, cov.max_length, cov.question_weight, cov.batch_size, progress
    )
    held_ids = [
        tokenizer(t, add_special_tokens=False, truncation=True, max_length=cov.max_length)["input_ids"] for t in held
    ]
    held_moments, held_count = key_second_moment(
        model, [s for s in held_ids if s], paths, cov.batch_size, tokenizer.pad_token_id, "cov:heldout", progress
    )
    preserved = {layer: moments[p].float() for layer, p in zip(layers, paths, strict=True)}
    heldout = {layer: held_moments[p].float() for layer, p in zip(layers, paths, strict=True)}
    info = {**counts, "heldout_tokens": held_count, "texts": len(kept), "heldout_texts": len(held)}
    write_statistics(path, preserved, heldout, info)
    info.update(cache_key=key, cache_hit=False, seconds=time.perf_counter() - started)
    logger.info("preserved-key statistics computed in %.1fs (%s)", info["seconds"], path)
    return preserved, heldout, info


def write_statistics(
    path: Path, preserved: dict[int, torch.Tensor], heldout: dict[int, torch.Tensor], info: dict
) -> None:
    """Writes the statistics file of the cache (through a temporary file, renamed when complete)."""
    tensors = {f"preserved.{k}": v.contiguous() for k, v in preserved.items()}
    tensors.update({f"heldout.{k}": v.contiguous() for k, v in heldout.items()})
    # Two runs computing the same statistics at once each write a whole file (the same statistics).
    with atomic_file(path) as tmp:
        save_file(tensors, tmp, metadata={"info": json.dumps(info)})


def read_statistics(path: Path) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], dict]:
    """The preserved and held-out moments of a statistics file, and its info."""
    preserved, heldout = {}, {}
    with safe_open(str(path), framework="pt") as fh:
        info = json.loads((fh.metadata() or {}).get("info", "{}"))
        for key in fh.keys():
            kind, layer = key.split(".")
            (preserved if kind == "preserved" else heldout)[int(layer)] = fh.get_tensor(key)
    return preserved, heldout, info


def first_edit_statistics(
    parent_dir: Path, result_dir: Path, settings: dict, cache_dir: Path, progress: bool = False
) -> tuple[dict[int, torch.Tensor], str]:
    """The preserved-key statistics a first erasure of ``parent_dir`` used, computed again (and cached)
    as the erase stage computed them: on the parent with the unlearning token installed, its rows taken
    from the erased model ``result_dir`` (an edit changes MLP matrices, never the token's rows).

    Args:
        parent_dir: The model the first erasure started from (no edit state).
        result_dir: The erased model's directory (its weights and tokenizer).
        settings: ``covariance``, ``model`` and ``edit`` (``layers``) sections of the run's parameters.
        cache_dir: Root of the statistics cache.
        progress: Show progress bars.

    Returns:
        The preserved second moments per layer, and their cache key.
    """
    from transformers import AutoTokenizer

    from unierase.model.loading import load_model
    from unierase.token.vocabulary import is_tied

    params = Params.model_validate(settings)
    model, _ = load_model(parent_dir)
    tokenizer = AutoTokenizer.from_pretrained(result_dir)
    erased, _ = load_model(result_dir)
    rows = model.get_input_embeddings().weight.shape[0]
    input_rows = erased.get_input_embeddings().weight[rows:].detach().clone()
    head = erased.get_output_embeddings()
    output_rows = None if head is None or is_tied(erased) else head.weight[rows:].detach().clone()
    del erased
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # as `add_unlearning_tokens`; every new row is overwritten below anyway
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    with torch.no_grad():
        model.get_input_embeddings().weight[rows:] = input_rows
        if output_rows is not None:
            model.get_output_embeddings().weight[rows:] = output_rows
    preserved, _, info = cached_preserved_moments(model, tokenizer, params, Path(cache_dir), progress)
    return preserved, info["cache_key"]
