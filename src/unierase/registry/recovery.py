"""What a killed run leaves in the registry, and how the next run of the same request finishes it.

A version is created in one call, after every artifact of its run is logged, so a killed run leaves
either no version or a complete one. Two traces remain to clean up when the request runs again:

* an MLflow run still ``RUNNING`` (the process died while logging): it is marked ``KILLED``, so the
  tracking store shows no run as live that is not;
* an accepted version that was never promoted (the process died between registering and promoting):
  it is promoted now, if it builds on the current champion and no alias ever pointed at it (a version
  that was promoted and then rolled back stays rolled back).
"""

from __future__ import annotations

import logging

from mlflow.exceptions import MlflowException

from mlflow import MlflowClient
from unierase.registry import tags as T
from unierase.registry.audit import read_audit
from unierase.registry.promotion import current_alias_version, promote

logger = logging.getLogger(__name__)


def version_of_flow_run(client: MlflowClient, name: str, flow_run_id: str) -> str | None:
    """The erasure version a flow run registered (a retry, or a run killed after registering), or None."""
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException as err:
        if "RESOURCE_DOES_NOT_EXIST" in str(getattr(err, "error_code", "")):
            return None
        raise
    for version in versions:
        if version.tags.get(T.FLOW_RUN_ID) == flow_run_id and version.tags.get(T.KIND) == T.ERASURE:
            return str(version.version)
    return None


def close_abandoned_runs(client: MlflowClient, experiment_id: str, request_id: str, flow_run_id: str) -> list[str]:
    """Marks ``KILLED`` the MLflow runs of ``request_id`` left ``RUNNING`` by other (dead) flow runs
    (every one when ``flow_run_id`` is empty).

    Call it under the registered model's lock: no other live run of the request can then be logging.

    Returns:
        The ids of the runs closed.
    """
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{T.REQUEST_ID}` = '{request_id}' and attributes.status = 'RUNNING'"
    )
    closed = []
    for run in runs:
        if run.data.tags.get(T.FLOW_RUN_ID) != flow_run_id:
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    if closed:
        logger.warning(
            "closed %d MLflow run(s) of request %s left running by a killed process", len(closed), request_id
        )
    return closed


def finish_interrupted_promotion(client: MlflowClient, name: str, alias: str, request_id: str) -> str | None:
    """Promotes the version of ``request_id`` that a killed run registered but never promoted.

    Returns:
        The version promoted now, or None when there is none to finish.
    """
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:  # no registered model yet
        return None
    champion = current_alias_version(client, name, alias)
    ever_promoted = {entry.get("to_version") for entry in read_audit(client, name)} if versions else set()
    for version in sorted(versions, key=lambda v: int(v.version)):
        tags, number = version.tags, str(version.version)
        if (
            tags.get(T.REQUEST_ID) == request_id
            and tags.get(T.STATUS) == T.ACCEPTED
            and champion is not None
            and tags.get(T.PARENT_VERSION) == champion
            and number not in ever_promoted
        ):
            promote(
                client,
                name,
                number,
                alias,
                f"passed the evaluation gate (request {request_id}; promotion "
                "finished by a rerun after the registering run was killed)",
            )
            return number
    return None
