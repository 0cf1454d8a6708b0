"""Recurring erasure: process the pending requests of the inbox, in order, as sequential erasures.

    unierase schedule --cron "0 2 * * *"     # serves this flow as a deployment (one run at a time)
    python -m flows.scheduled                # processes the inbox once, now

Each request builds on the champion left by the one before it. A processed request moves to
``done/`` (with its version and status) or ``failed/`` (with the error); one that fails does not
stop the next, whose erasure then builds on the champion as it stands.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow, get_run_logger

from flows.erasure import ROOT, erasure_flow
from unierase.config import load_params
from unierase.data.inbox import DONE, FAILED, mark_request, pending_requests, read_request


@flow(name="unierase-inbox", log_prints=True)
def process_inbox(params_file: str = "params.yaml", base_model: Path | None = None, root: Path = ROOT) -> list[dict]:
    """Applies every pending request of the inbox and marks it done or failed.

    Args:
        params_file: ``params.yaml``, relative to ``root`` (its ``schedule.inbox_dir`` is the inbox).
        base_model: Base model directory; None is the embedded default.
        root: Repo root.

    Returns:
        One entry per processed request: its file, outcome and (when done) version and status.
    """
    logger = get_run_logger()
    root = Path(root).resolve()
    params = load_params(root / params_file)
    inbox = root / params.schedule.inbox_dir
    processed = []
    for path in pending_requests(inbox):
        try:
            request = read_request(path)
            summary = erasure_flow(
                forget=root / request.forget,
                retain=root / request.retain if request.retain else None,
                request_id=request.request_id,
                params_file=params_file,
                base_model=base_model,
                root=root,
            )
        except Exception as err:  # noqa: BLE001 - any failure is recorded on the request, then the next one runs
            logger.error("request %s failed: %s", path.name, err)
            moved = mark_request(path, FAILED, {"error": f"{type(err).__name__}: {err}"})
            processed.append({"file": moved.name, "outcome": FAILED})
            continue
        details = {k: summary[k] for k in ("version", "parent_version", "champion", "registered_model")}
        details["version_status"] = summary["status"]  # accepted (now champion) or rejected by the gate
        moved = mark_request(path, DONE, details)
        processed.append({"file": moved.name, "outcome": DONE, **details})
    logger.info("processed %d request(s) from %s", len(processed), inbox)
    return processed


if __name__ == "__main__":
    print(process_inbox())
    sys.exit(0)
