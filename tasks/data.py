"""Data tasks: write the default request, validate the sets, record provenance."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from unierase.config import Params, ValidationConfig, config_hash
from unierase.data.provenance import as_dict, dataset_digest, git_commit
from unierase.data.validation import DataValidationError, validate_sets
from unierase.faults import fault_point


@task(name="prepare-default-sets", cache_policy=NO_CACHE)
def prepare_default_sets(out_dir: Path) -> dict[str, Path]:
    """Writes the embedded default forget and retain sets (as the DVC ``prepare`` stage does)."""
    from unierase.data.builtin_facts import default_forget, default_retain
    from unierase.data.facts import write_facts

    return {
        "forget": write_facts(default_forget(), Path(out_dir) / "forget.jsonl"),
        "retain": write_facts(default_retain(), Path(out_dir) / "retain.jsonl"),
    }


@task(name="check-inputs", cache_policy=NO_CACHE)
def check_inputs(request_id: str, base_model: Path, params: Params) -> None:
    """Refuses in seconds what would otherwise fail after minutes: a request id that is not a safe name
    (it names a folder and a tag), a base model directory that is not a causal LM or lacks a layer or
    module the edit config names. Nothing is loaded but the model's config."""
    from unierase.inputs import check_request_id
    from unierase.model.structure import check_edit_modules

    check_request_id(request_id)
    check_edit_modules(base_model, params)


@task(name="validate-sets", cache_policy=NO_CACHE)
def validate(
    forget: Path, retain: Path | None, config: ValidationConfig, model_dir: Path, docs_dir: Path
) -> dict[str, int]:
    """Runs the Great Expectations suite; raises `DataValidationError` (no retry) when a set is bad.

    Returns:
        Rows per set.
    """
    fault_point("validate")
    result = validate_sets(forget, retain, config, model_dir=model_dir, docs_dir=docs_dir)
    if not result.success:
        raise DataValidationError(result)
    return result.row_counts


@task(name="record-provenance", cache_policy=NO_CACHE)
def record_provenance(forget: Path, retain: Path | None, root: Path, params: Params) -> dict:
    """Git commit, DVC digests and revision of the data, and the config hash of this run."""
    sets = {"forget": forget, "retain": retain}
    return {
        "git_commit": git_commit(root),
        "config_hash": config_hash(params),
        "datasets": [as_dict(dataset_digest(name, path, root)) for name, path in sets.items() if path is not None],
    }
