"""The parallel parts of an erasure as subflows whose shards run where ``ray.address`` says: in the
flow's process (null) or on a Ray cluster through prefect-ray's task runner ('local', 'auto', an address).

    python -m flows.parallel evaluate --model DIR --data DIR --output OUT [--params params.yaml]
    python -m flows.parallel statistics --model DIR [--token TOKEN.safetensors] [--params params.yaml]

The erasure flow calls `run_sharded_evaluation` and `run_preserved_statistics` when ``ray.address`` is set;
with it unset it keeps its single in-process evaluation task and the edit computes its own statistics.
Shard files go under the run's folder; on a cluster of several machines that folder, the model
directories and the cache must be on storage every node mounts (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.parallel import (
    evaluate_shard,
    merge_evaluation,
    reduce_statistics,
    statistics_shard,
    statistics_target,
)
from unierase.config import Params, load_params
from unierase.parallel.runner import ray_task_runner, shard_options, uses_ray
from unierase.stages.evaluate_shards import plan_evaluation


@flow(name="unierase-sharded-evaluation")
def sharded_evaluation(model_dir: Path, data_dir: Path, out_dir: Path, params: Params) -> Path:
    """Evaluates ``model_dir`` on ``data_dir`` in shards of ``ray.eval_chunk_size`` items (one task each,
    each with its own model copy) and merges their rows in item order; returns the ``report.json`` path."""
    shards = plan_evaluation(data_dir, params)
    get_run_logger().info("evaluation in %d shards", len(shards))
    rows_dir = Path(out_dir) / "shards"
    with shard_options(params.ray) if uses_ray(params.ray) else contextlib.nullcontext():
        futures = [
            evaluate_shard.submit(model_dir, data_dir, shard, rows_dir / f"{shard.name}.jsonl", params)
            for shard in shards
        ]
    files = [future.result() for future in futures]
    report = merge_evaluation(model_dir, data_dir, shards, files, out_dir, params)
    shutil.rmtree(rows_dir)  # the merged items/ hold the same rows
    return report


@flow(name="unierase-preserved-statistics")
def preserved_statistics(model_dir: Path, params: Params, token: Path | None, cache_dir: Path, work_dir: Path) -> Path:
    """The preserved-key statistics of ``model_dir`` (with ``token`` installed) as map-reduce over
    ``ray.statistics_shards`` corpus shards, written to the cache the edit reads; returns the cache file.
    Nothing is computed when the cache has them."""
    target = statistics_target(model_dir, params, token, cache_dir)
    if target.exists():
        get_run_logger().info("preserved-key statistics are cached: %s", target)
        return target
    shards = params.ray.statistics_shards
    with shard_options(params.ray) if uses_ray(params.ray) else contextlib.nullcontext():
        futures = [
            statistics_shard.submit(model_dir, params, token, cache_dir, i, Path(work_dir) / f"shard-{i}.safetensors")
            for i in range(shards)
        ]
    files = [future.result() for future in futures]
    path = reduce_statistics(files, params)
    shutil.rmtree(work_dir)  # the shards' sums are large (8 d_in² bytes per layer and source)
    return path


def task_runner(params: Params):
    """The task runner of the shards: prefect-ray's on the cluster of ``ray.address``; else one thread in
    the flow's process (shards one after another, as the unsharded run)."""
    return ray_task_runner(params.ray) if uses_ray(params.ray) else ThreadPoolTaskRunner(max_workers=1)


def run_sharded_evaluation(model_dir: Path, data_dir: Path, out_dir: Path, params: Params) -> Path:
    """`sharded_evaluation` under the task runner of ``params.ray``."""
    return sharded_evaluation.with_options(task_runner=task_runner(params))(
        Path(model_dir), Path(data_dir), Path(out_dir), params
    )


def run_preserved_statistics(
    model_dir: Path, params: Params, token: Path | None, cache_dir: Path, work_dir: Path
) -> Path:
    """`preserved_statistics` under the task runner of ``params.ray``."""
    return preserved_statistics.with_options(task_runner=task_runner(params))(
        Path(model_dir), params, Path(token) if token else None, Path(cache_dir), Path(work_dir)
    )


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    from unierase.model.default import default_cache_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["evaluate", "statistics"])
    parser.add_argument("--model", type=Path, required=True, help="model directory")
    parser.add_argument("--data", type=Path, help="evaluation splits directory (evaluate)")
    parser.add_argument("--output", type=Path, help="evaluation output directory (evaluate)")
    parser.add_argument("--token", type=Path, default=None, help="learned token to install first (statistics)")
    parser.add_argument("--params", type=Path, default=None, help="params.yaml (default: the defaults)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if args.part == "evaluate":
        if args.data is None or args.output is None:
            parser.error("evaluate needs --data and --output")
        print(run_sharded_evaluation(args.model, args.data, args.output, params))
    else:
        cache = default_cache_dir()
        print(json.dumps(str(run_preserved_statistics(args.model, params, args.token, cache, cache / "shards"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
