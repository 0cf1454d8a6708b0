"""File-level front doors of a sharded evaluation: one shard (a run of one split's items) evaluated into a
rows file, and the shards' rows merged into the same ``report.json`` and ``items/`` that `evaluate_stage`
writes. The evaluation flow (``flows/parallel.py``) runs the shards in-process or on a Ray cluster.

Each shard loads its own copy of the model; a shard's rows are the rows the whole split's evaluation
gives those items (same code, `unierase.evaluation.evaluate.evaluate_items`), and every summary is
computed from the merged rows, so a sharded evaluation reports what an unsharded one reports.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from unierase.atomic import write_text_atomic
from unierase.config import Params
from unierase.data.splits import load_splits
from unierase.evaluation.evaluate import evaluate_items, evaluated_items, relearn_items, report_from_items
from unierase.evaluation.metrics.similarity import load_embedder
from unierase.model.loading import load_configured_model
from unierase.parallel.shards import ItemShard, merge_item_shards, plan_item_shards
from unierase.stages.evaluate import evaluation_provenance, retain_truth_ratios, write_report
from unierase.token.vocabulary import unlearning_token_ids

logger = logging.getLogger(__name__)


def plan_evaluation(data_dir: str | Path, params: Params) -> list[ItemShard]:
    """The shards of an evaluation of ``data_dir``: each split's evaluated items in runs of
    ``ray.eval_chunk_size``."""
    items = evaluated_items(load_splits(data_dir), params.evaluation)
    return plan_item_shards({name: len(facts) for name, facts in items.items()}, params.ray.eval_chunk_size)


def evaluate_shard_stage(
    model_dir: str | Path,
    data_dir: str | Path,
    shard: ItemShard,
    output_file: str | Path,
    params: Params,
    device: str | None = None,
    progress: bool = False,
) -> Path:
    """Evaluates the items of one shard and writes their rows as JSON Lines to ``output_file``.

    Returns:
        ``output_file``.
    """
    items = evaluated_items(load_splits(data_dir), params.evaluation)
    facts = items[shard.split][shard.start : shard.stop]
    model, tokenizer = load_configured_model(model_dir, params.model, device)
    token_ids = unlearning_token_ids(tokenizer, params.token.token_template)
    config = params.evaluation
    embedder = (
        load_embedder(config.embedder_path, device=str(next(model.parameters()).device)) if config.similarity else None
    )
    torch.manual_seed(0)  # as evaluate_stage
    # Every shard of a forget split relearns on the same retain items with the same seed: the same attack.
    rows = evaluate_items(
        model,
        tokenizer,
        shard.split,
        facts,
        config,
        embedder=embedder,
        stop_token_ids=token_ids,
        relearn_facts=relearn_items(items),
        progress=progress,
    )
    return write_text_atomic(
        output_file, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    )


def merge_evaluation_stage(
    model_dir: str | Path,
    data_dir: str | Path,
    shards: list[ItemShard],
    shard_files: list[str | Path],
    output_dir: str | Path,
    params: Params,
    retain_eval: str | Path | None = None,
    progress: bool = False,
) -> Path:
    """Merges the shards' rows (in item order) into ``report.json`` and ``items/``, as `evaluate_stage`.

    Returns:
        The path of ``report.json``.
    """
    splits = load_splits(data_dir)
    sizes = {name: len(facts) for name, facts in evaluated_items(splits, params.evaluation).items()}
    rows = [
        [json.loads(line) for line in Path(f).read_text(encoding="utf-8").splitlines() if line.strip()]
        for f in shard_files
    ]
    items = merge_item_shards(sizes, shards, rows)
    from transformers import AutoTokenizer

    token_ids = unlearning_token_ids(AutoTokenizer.from_pretrained(model_dir), params.token.token_template)
    retain_ratios = retain_truth_ratios(retain_eval, splits, params, progress=progress)
    report = report_from_items(items, params.evaluation, retain_ratios, token_ids)
    path = write_report(report, output_dir, evaluation_provenance(model_dir, data_dir, retain_eval, params, token_ids))
    logger.info("evaluation of %d shards written to %s", len(shards), path)
    return path
