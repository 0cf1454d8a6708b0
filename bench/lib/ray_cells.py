"""A benchmark's independent cells (one method on one forget size each) as tasks on a Ray cluster, through
the same prefect-ray task runner and per-task resources as the flows' shards (`unierase.parallel.runner`).

Each task runs a top-level function of plain arguments in a Ray worker (its own model copies) and returns
its row; the rows come back in the order of the calls, so the caller saves cells as an in-process run would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE

from unierase.config import RayConfig
from unierase.parallel.runner import ray_task_runner, shard_options


@task(name="bench-cell", cache_policy=NONE, persist_result=False)
def _cell(measure: Callable[..., dict], arguments: tuple) -> dict:
    return measure(*arguments)


def run_cells(measure: Callable[..., dict], calls: Sequence[tuple], config: RayConfig) -> list[dict]:
    """``[measure(*call) for call in calls]``, each call a task on the cluster ``config.address`` names."""

    @flow(name="unierase-bench-cells", task_runner=ray_task_runner(config), persist_result=False)
    def cells() -> list[Any]:
        with shard_options(config):
            futures = [_cell.submit(measure, tuple(call)) for call in calls]
        return [future.result() for future in futures]

    return cells()
