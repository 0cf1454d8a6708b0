"""What wraps every erasure run so that nothing is lost: one run per registered model at a time, the
outputs kept for a later registration before the registry is touched, and the private area tidied
after it. Used by ``flows/erasure.py`` (run from the repo root)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from flows.steps import logged_params, version_tags
from unierase.config import Params, repo_params
from unierase.registry.gate import GateResult
from unierase.registry.locking import registry_lock
from unierase.registry.reach import TrackingUnavailableError
from unierase.registry.store import model_name_for
from unierase.stages.private import pending_registration, private_root
from unierase.stages.register import finish_run_dir, mark_registered, write_registration

F = TypeVar("F", bound=Callable[..., dict])


def serialised_per_model(fn: F) -> F:
    """Runs the erasure flow body under its registered model's lock (`unierase.registry.locking`), so that two
    runs against the same model queue instead of both building on the same champion; a run still
    waiting after ``registry.lock_timeout_s`` is refused with the holder named. A run that fails because
    the tracking server stayed unreachable says how to register its kept outputs later."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> dict:
        from unierase.model.default import default_model_dir

        call = inspect.signature(fn).bind(*args, **kwargs)
        call.apply_defaults()
        root = Path(call.arguments["root"]).resolve()
        params = repo_params(root, call.arguments["params_file"])
        base = Path(call.arguments["base_model"] or default_model_dir())
        name = model_name_for(base, params.registry)
        lock_dir = root / params.registry.work_dir / "locks"
        holder = call.arguments.get("request_id") or "a request"
        with registry_lock(lock_dir, name, params.registry.lock_timeout_s, holder=holder):
            try:
                return fn(*args, **kwargs)
            except TrackingUnavailableError as err:
                raise TrackingUnavailableError(f"{err}{_register_later_hint(root, params)}") from err

    return wrapper  # type: ignore[return-value]


def _register_later_hint(root: Path, params: Params) -> str:
    from prefect.runtime import flow_run

    run = (flow_run.get_id() or "local")[:8]
    area = private_root(root, params.privacy)
    kept = [p for p in area.glob(f"*-{run}") if pending_registration(p)] if area.is_dir() else []
    if not kept:
        return "; nothing was registered and no alias moved"
    return (
        f"; nothing was registered and no alias moved. The run's outputs are kept: once the server is back, "
        f"register them with `unierase register --run-dir {kept[0]}`"
    )


def keep_for_registration(
    work: Path,
    name: str,
    request_id: str,
    run_id: str,
    parent_version: str | None,
    base_model: Path,
    erase_dir: Path,
    report: dict,
    metrics: dict[str, float],
    params: Params,
    provenance: dict,
    gate: GateResult,
    reports: list[Path],
    evaluation: dict,
) -> Path:
    """Writes the run's registration manifest before anything is registered, so that a run whose
    registration fails (server down, process killed) can be registered later by `unierase register`."""
    return write_registration(
        work,
        name=name,
        request_id=request_id,
        run_id=run_id,
        parent_version=parent_version,
        base_model=base_model,
        erase_dir=erase_dir,
        delta_sha256=report["delta_sha256"],
        metrics=metrics,
        params=logged_params(params),
        datasets=provenance["datasets"],
        tags=version_tags(request_id, parent_version or "", gate, run_id, base_model, provenance, evaluation),
        reports=reports,
    )


def finish_registered_run(work: Path, version: str, champion: str | None, params: Params) -> None:
    """Marks the run registered and tidies its private folder: the model copy goes (the registry holds
    it), and the whole folder when ``privacy.purge_after_registration`` is set."""
    mark_registered(work, version, champion)
    finish_run_dir(work, params)
