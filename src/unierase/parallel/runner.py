"""Which Prefect task runner runs a flow's shards: none (the flow's process, one shard after another)
or prefect-ray's `RayTaskRunner` on the cluster `RayConfig.address` names, with GPUs per task where
the cluster has them."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from unierase.config import RayConfig

logger = logging.getLogger(__name__)


def uses_ray(config: RayConfig) -> bool:
    """True when the parallel parts run on a Ray cluster."""
    return config.address is not None


def ray_task_runner(config: RayConfig) -> Any:
    """prefect-ray's task runner for ``config.address``: 'local' starts a Ray instance of ``num_cpus`` CPUs
    on this machine for the run (no dashboard), 'auto' joins this machine's cluster, 'ray://...' a remote one.

    Raises:
        ValueError: ``config.address`` is None (the in-process default has no Ray runner).
        ImportError: prefect-ray is not installed.
    """
    if config.address is None:
        raise ValueError("ray.address is null: the parallel parts run in-process")
    from prefect_ray import RayTaskRunner

    if config.address == "local":
        kwargs: dict[str, Any] = {"include_dashboard": False}
        if config.num_cpus is not None:
            kwargs["num_cpus"] = config.num_cpus
        return RayTaskRunner(init_kwargs=kwargs)
    return RayTaskRunner(address=config.address)


def gpus_per_task(config: RayConfig) -> float:
    """GPUs a shard task requests: the configured number, else one where the cluster has GPUs, else none."""
    if config.gpus_per_task is not None:
        return config.gpus_per_task
    import ray

    return 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else 0.0


@contextlib.contextmanager
def shard_options(config: RayConfig) -> Iterator[None]:
    """Within it, tasks submitted to the Ray runner request `gpus_per_task` GPUs (and one CPU) each."""
    from prefect_ray.context import remote_options

    gpus = gpus_per_task(config)
    logger.info("shard tasks request %s GPU(s) each", gpus)
    with remote_options(num_cpus=1, num_gpus=gpus):
        yield
