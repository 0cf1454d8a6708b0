"""Recovery tasks: before a run of a request, finish what a killed run of the same request left behind
(an MLflow run still marked running, a version registered but never promoted, its kept outputs)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from unierase.config import Params


@task(name="recover-request", cache_policy=NO_CACHE)
def recover_request(params: Params, root: Path, name: str, request_id: str, run_id: str) -> str | None:
    """Closes the request's abandoned MLflow runs, promotes its version that a killed run registered but
    never promoted, and marks the kept outputs of registered runs done. Returns the version promoted now."""
    from prefect import get_run_logger

    from unierase.registry.reach import bound_http_calls, call_with_retries
    from unierase.registry.recovery import close_abandoned_runs, finish_interrupted_promotion
    from unierase.registry.store import connect
    from unierase.stages.register import settle_kept_runs

    config = params.registry
    bound_http_calls(config)
    client = connect(config, root)

    def recover() -> str | None:
        experiment = client.get_experiment_by_name(config.experiment_name)
        if experiment is not None:
            close_abandoned_runs(client, experiment.experiment_id, request_id, run_id)
        return finish_interrupted_promotion(client, name, config.champion_alias, request_id)

    promoted = call_with_retries(recover, config, "recovering earlier runs of the request")
    settle_kept_runs(client, root, params, name, request_id)
    if promoted:
        get_run_logger().warning(
            "request %s: version %s, registered by a killed run, promoted now", request_id, promoted
        )
    return promoted
