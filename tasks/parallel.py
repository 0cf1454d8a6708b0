"""Shard tasks of the parallel parts: one evaluation shard, one statistics shard, and their merges. Each
loads its own model copy and returns the path of the file it wrote; on a Ray cluster they run on workers."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from unierase.config import Params
from unierase.parallel.shards import ItemShard


@task(name="evaluate-shard", cache_policy=NO_CACHE)
def evaluate_shard(model_dir: Path, data_dir: Path, shard: ItemShard, out_file: Path, params: Params) -> Path:
    """Evaluates one shard of items; returns its rows file."""
    from unierase.stages.evaluate_shards import evaluate_shard_stage

    return evaluate_shard_stage(Path(model_dir), Path(data_dir), shard, Path(out_file), params)


@task(name="merge-evaluation", cache_policy=NO_CACHE)
def merge_evaluation(
    model_dir: Path, data_dir: Path, shards: list[ItemShard], files: list[Path], out_dir: Path, params: Params
) -> Path:
    """Merges the shards' rows into the evaluation's ``report.json`` and ``items/``; returns the report path."""
    from unierase.stages.evaluate_shards import merge_evaluation_stage

    return merge_evaluation_stage(Path(model_dir), Path(data_dir), shards, files, Path(out_dir), params)


@task(name="statistics-target", cache_policy=NO_CACHE)
def statistics_target(model_dir: Path, params: Params, token: Path | None, cache_dir: Path) -> Path:
    """The statistics cache file the edit of this model reads (it may not exist yet)."""
    from unierase.stages.statistics_shards import statistics_target as target

    return target(Path(model_dir), params, token, Path(cache_dir))


@task(name="statistics-shard", cache_policy=NO_CACHE)
def statistics_shard(
    model_dir: Path, params: Params, token: Path | None, cache_dir: Path, index: int, out_file: Path
) -> Path:
    """Sums of key outer products and token counts over one corpus shard; returns its file."""
    from unierase.stages.statistics_shards import statistics_shard_stage

    return statistics_shard_stage(Path(model_dir), params, token, Path(cache_dir), index, Path(out_file))


@task(name="reduce-statistics", cache_policy=NO_CACHE)
def reduce_statistics(files: list[Path], params: Params) -> Path:
    """Adds the shards' sums and counts and writes the statistics cache file; returns its path."""
    from unierase.stages.statistics_shards import reduce_statistics_stage

    return reduce_statistics_stage(files, params)
