"""File-level front doors of the preserved-key statistics as map-reduce: each shard sums ``k kᵀ`` (float64)
and counts tokens over its part of the corpus, the general questions and the held-out texts; the reduce
adds the shards' sums and counts exactly and writes the statistics cache file that
`unierase.stages.statistics.cached_preserved_moments` reads, under the same key, so the edit that follows
finds them there. The statistics flow (``flows/parallel.py``) runs the shards in-process or on Ray.

A shard's file holds ``d_in x d_in`` float64 sums per edited layer and source (prose, questions, held-out):
8 d_in² bytes each, 1.6 GB for a 14336-wide layer, so the shards of a large model want a local disk.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import Params
from unierase.data.corpus import load_corpus
from unierase.data.general_questions import general_questions
from unierase.edit.preserved import combine_moment_sums, key_moment_sums, moments_from_sums, preserved_sources
from unierase.model.loading import load_configured_model
from unierase.parallel.shards import plan_ranges
from unierase.stages.artifacts import load_token
from unierase.stages.statistics import split_heldout, statistics_cache_path, write_statistics
from unierase.token.vocabulary import has_unlearning_token, install_unlearning_token

logger = logging.getLogger(__name__)

SOURCES = ("prose", "questions", "heldout")


def statistics_model(
    model_dir: str | Path, params: Params, token_path: str | Path | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model the edit computes its statistics on: ``model_dir`` with the unlearning token installed
    (as `unierase.methods.unierase.UniErase.prepare` installs it before the statistics)."""
    model, tokenizer = load_configured_model(model_dir, params.model)
    if token_path is not None and not has_unlearning_token(tokenizer, params.token):
        install_unlearning_token(model, tokenizer, load_token(token_path))
    return model, tokenizer


def statistics_target(model_dir: str | Path, params: Params, token_path: str | Path | None, cache_dir: Path) -> Path:
    """The statistics cache file the edit of this model will read (it may not exist yet)."""
    model, _ = statistics_model(model_dir, params, token_path)
    _, path = statistics_cache_path(model, params, cache_dir, load_corpus(params.covariance), general_questions())
    return path


def _sequences(tokenizer: PreTrainedTokenizerBase, params: Params, texts: list[str]) -> dict[str, list[list[int]]]:
    kept, held = split_heldout(texts)
    cov = params.covariance
    sources = preserved_sources(tokenizer, kept, general_questions(), cov.max_length, cov.question_weight)
    held_ids = [
        tokenizer(t, add_special_tokens=False, truncation=True, max_length=cov.max_length)["input_ids"] for t in held
    ]
    return {**sources, "heldout": [s for s in held_ids if s]}


def statistics_shard_stage(
    model_dir: str | Path,
    params: Params,
    token_path: str | Path | None,
    cache_dir: Path,
    index: int,
    output_file: str | Path,
) -> Path:
    """Shard ``index`` of ``ray.statistics_shards``: the float64 sums of ``k kᵀ`` and token counts of its
    part of each source, written to ``output_file`` with the cache key they belong to.

    Returns:
        ``output_file``.
    """
    model, tokenizer = statistics_model(model_dir, params, token_path)
    texts = load_corpus(params.covariance)
    key, path = statistics_cache_path(model, params, cache_dir, texts, general_questions())
    paths = [params.model.mlp_out_template.format(layer) for layer in sorted(params.edit.layers)]
    tensors, counts = {}, {}
    batch = params.covariance.batch_size
    for source, sequences in _sequences(tokenizer, params, texts).items():
        ranges = plan_ranges(len(sequences), params.ray.statistics_shards, batch)
        start, stop = ranges[index] if index < len(ranges) else (0, 0)
        sums, counts[source] = key_moment_sums(
            model, sequences[start:stop], paths, batch, tokenizer.pad_token_id, f"cov:{source}", False
        )
        tensors.update({f"{source}|{p}": s.cpu().contiguous() for p, s in sums.items()})
    kept, held = split_heldout(texts)
    meta = {"cache_key": key, "cache_path": str(path), "counts": counts, "texts": [len(kept), len(held)]}
    output_file = Path(output_file)
    output_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(output_file), metadata={"shard": json.dumps(meta)})
    return output_file


def _read_shard(path: Path) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    sums: dict[str, dict[str, torch.Tensor]] = {s: {} for s in SOURCES}
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads((fh.metadata() or {})["shard"])
        for name in fh.keys():
            source, module = name.split("|")
            sums[source][module] = fh.get_tensor(name)
    return meta, sums


def reduce_statistics_stage(shard_files: list[str | Path], params: Params) -> Path:
    """Adds the shards' sums and counts (in shard order) and writes the statistics cache file.

    Returns:
        The cache file's path.

    Raises:
        ValueError: No shards, or shards of different models, corpora or settings (different cache keys).
    """
    if not shard_files:
        raise ValueError("no statistics shards to reduce")
    shards = [_read_shard(Path(f)) for f in shard_files]
    keys = {meta["cache_key"] for meta, _ in shards}
    if len(keys) != 1:
        raise ValueError(f"statistics shards of different inputs (cache keys {sorted(keys)}): rerun them together")
    combined = {
        source: combine_moment_sums([(sums[source], meta["counts"][source]) for meta, sums in shards])
        for source in SOURCES
    }
    counts = {source: count for source, (_, count) in combined.items()}
    sums = {source: total for source, (total, _) in combined.items()}
    if counts["heldout"] == 0:
        raise ValueError("no held-out tokens to compute key statistics from")
    layers = sorted(params.edit.layers)
    paths = [params.model.mlp_out_template.format(layer) for layer in layers]
    moments = moments_from_sums(sums, counts, params.covariance.question_weight)
    preserved = {layer: moments[p].float() for layer, p in zip(layers, paths, strict=True)}
    heldout = {layer: (sums["heldout"][p] / counts["heldout"]).float() for layer, p in zip(layers, paths, strict=True)}
    kept, held = shards[0][0]["texts"]
    info = {
        "prose_tokens": counts["prose"],
        "question_tokens": counts["questions"],
        "heldout_tokens": counts["heldout"],
        "texts": kept,
        "heldout_texts": held,
        "shards": len(shards),
    }
    path = Path(shards[0][0]["cache_path"])
    write_statistics(path, preserved, heldout, info)
    logger.info("preserved-key statistics of %d shards written to %s", len(shards), path)
    return path
