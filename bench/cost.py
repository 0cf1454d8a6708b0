"""Cost: wall time and peak memory of each UniErase phase (preserved-key statistics cold and cached, token
learning, edit, evaluation) and of each baseline against the forget-set size, as ratios in the same run;
storage of a version (delta against a full model copy, share of parameters changed); pipeline overhead.

    python -m bench.cost                                # SmolLM2; 1, 10, 40 and 200 items
    python -m bench.cost --sizes 1,10 --methods unierase,grad_diff --no-pipeline
    python -m bench.cost --model DIR --sizes 1,2 --out /tmp/c
    python -m bench.cost --redo unierase@200,npo        # measure these again, keep the other cells
    python -m bench.cost --sizes 40,200 --methods unierase,grad_diff --evaluation-sizes 40

Cost does not depend on whether the model knows the facts, so the base model is used as it is (no
fine-tuning). Token learning and the statistics do not depend on the forget set: they are measured once.
Every phase of a run runs in its one process; ``peak_rss_mb`` is its peak resident memory during the
phase (``start_rss_mb``: what it already held). Each (method, size), the once-measured phases
(``unierase@once``) and the pipeline overhead (``pipeline``) is one cell (`bench.lib.cells`). Each row
names its run (``runs`` in ``cost.json``: the machine and command of each); a ratio says whether
both its rows come from the same run. Writes ``cost.json``, ``cost.md`` and ``cost.png`` under ``--out``.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

from bench._cli import (
    ROOT,
    add_redo_flag,
    add_workload_flags,
    base_model,
    common_parser,
    ints,
    resolve_methods,
    resolve_params,
    setup_logging,
    workload,
)
from bench._cost_report import ONCE_CELL, PIPELINE_CELL, cost_summary, cost_tables, write_cost_outputs
from bench.lib.cells import Cells, open_cells
from bench.lib.measure import machine_info, measure
from bench.lib.output import write_json
from bench.lib.runs import Evaluator, apply_baseline, ensure_token
from bench.lib.workload import build_author_workload, general_splits
from unierase.edit.erasure import erase_facts
from unierase.model.delta import diff_models, save_delta, snapshot
from unierase.model.loading import load_model
from unierase.stages.artifacts import load_token
from unierase.stages.statistics import cached_preserved_moments
from unierase.token.vocabulary import install_unlearning_token


def parse_args(argv: list[str] | None = None):
    """The flags of this part (shared ones in `bench._cli.common_parser`)."""
    p = common_parser(__doc__)
    p.add_argument("--sizes", type=ints, default=[1, 10, 40, 200], help="forget-set sizes in items")
    p.add_argument(
        "--baseline-sizes",
        type=ints,
        default=None,
        help="sizes at which the baselines run too (default: every size); the others are listed as not measured",
    )
    p.add_argument(
        "--evaluation-sizes",
        type=ints,
        default=None,
        help="sizes at which UniErase's edited model is evaluated (default: every size); at the others the "
        "evaluation row is listed as not measured",
    )
    add_workload_flags(p)
    p.add_argument("--retain-authors", type=int, default=10, help="authors in the retain set")
    p.add_argument("--no-pipeline", action="store_true", help="leave out the Prefect-flow overhead")
    p.add_argument("--pipeline-size", type=int, default=None, help="items of the overhead request (default: smallest)")
    p.add_argument("--no-harness", action="store_true", help="a Prefect server is already active (tests)")
    add_redo_flag(p, "items, or once: token learning and statistics; --redo pipeline: the overhead")
    return p.parse_args(argv)


def run(args) -> dict:
    """Measures every cell (method x size, the once-per-model phases, the pipeline overhead) that has no
    file under ``<out>/cost_cells`` yet; returns what ``cost.json`` holds, rebuilt from every cell."""
    params, methods, progress = resolve_params(args), resolve_methods(args), not args.no_progress
    base, out, work = base_model(args), Path(args.out), Path(args.work) / "cost"
    flags = ("questions_per_author", "retain_authors", "holdout_authors", "retain_eval_items", "general_items", "seed")
    # The largest size decides how many authors are generated, so which facts every size's forget set holds.
    measured_on = workload(args, params, base, *flags, max_size=max(args.sizes))
    cells = open_cells(out, "cost", measured_on, machine_info(ROOT), args.redo)
    qpa, sizes = args.questions_per_author, sorted(set(args.sizes))
    baseline_sizes = set(sizes if args.baseline_sizes is None else args.baseline_sizes)
    evaluation_sizes = set(sizes if args.evaluation_sizes is None else args.evaluation_sizes)
    plan = [
        (m, n, "not in --baseline-sizes" if m != "unierase" and n not in baseline_sizes else None)
        for n in sizes
        for m in methods
    ]
    todo = [(m, n) for m, n, skipped in plan if not skipped and not cells.has(f"{m}@{n}")]
    pipeline = not args.no_pipeline and "unierase" in methods and not cells.has(PIPELINE_CELL)
    forget_authors = math.ceil(max(sizes) / qpa)
    authors = build_author_workload(
        forget_authors + args.retain_authors, qpa, forget_authors, args.holdout_authors, args.seed
    )
    block, retain = authors.splits["forget"], authors.splits["retain"]
    splits = {"retain": retain[: args.retain_eval_items], **general_splits(args.tofu, args.general_items)}
    splits["holdout"] = authors.splits["holdout"]
    evaluator, full_bytes = Evaluator(params, args.device, progress), None
    try:
        needs_token = pipeline or not cells.has(ONCE_CELL) or any(m == "unierase" for m, _ in todo)
        if "unierase" in methods and needs_token:
            token_path, preserved, heldout = _token_and_statistics(args, params, base, work, cells, progress)
        for method, n in todo:
            model, tok = load_model(base, args.device)
            before = snapshot(model)  # as erase_stage: the version's delta includes the token's new row
            if method == "unierase":
                install_unlearning_token(model, tok, load_token(token_path))
                with measure() as m:
                    result = erase_facts(
                        model, tok, block[:n], params, preserved, retain, heldout=heldout, progress=progress
                    )
                steps = result.outcome.value_steps
                phases = [
                    _phase(
                        "edit",
                        method,
                        n,
                        m.as_dict(),
                        breakdown_s=result.timings,
                        # One value per key: a subject's facts share one (edit.one_key_per_subject).
                        value_keys=len(steps),
                        value_steps_per_key=round(sum(steps) / len(steps), 2),
                        value_steps_max=max(steps),
                        value_share=round(result.timings["values_s"] / m.as_dict()["seconds"], 3),
                    )
                ]
            else:
                with measure() as m:
                    apply_baseline(method, model, tok, block[:n], retain, params, progress)
                phases = [_phase("unlearn", method, n, m.as_dict())]
            full_bytes = full_bytes or _saved_bytes(model, tok, work / "full-copy")
            storage = _storage(method, n, before, model, work, full_bytes)
            if method == "unierase" and n in evaluation_sizes:
                with measure() as m:
                    evaluator.evaluate(model, tok, {"forget": block[:n], **splits})
                phases.append(_phase("evaluation", method, n, m.as_dict()))
            cells.save(f"{method}@{n}", {"phases": phases, "storage": [storage]})
            del model, before
        if pipeline:
            from bench.pipeline import measure_pipeline_overhead

            figures = measure_pipeline_overhead(
                base,
                block[: args.pipeline_size or sizes[0]],
                retain,
                params,
                token_path,
                work / "cache",
                work / "pipeline",
                start_harness=not args.no_harness,
            )
            cells.save(PIPELINE_CELL, figures)
    finally:  # the summary from every cell, also after a run cut short
        data = cost_summary(cells, _not_measured(plan, cells) + _evaluations_left_out(plan, cells))
        write_json(data, out / "cost.json")
        write_cost_outputs(data, out)
    return data


def _phase(phase: str, method: str, size: int | None, figures: dict, **extra) -> dict:
    """A phase row: what was measured, and its time and memory (`bench.lib.measure.Measurement.as_dict`)."""
    return {"phase": phase, "method": method, "forget_size": size, **figures, **extra}


def _not_measured(plan: list[tuple[str, int, str | None]], cells: Cells) -> list[dict]:
    """Every planned (method, size) without a cell file, and why."""
    return [
        {"method": m, "forget_size": n, "why": why or "not measured yet (cut short: the same command goes on)"}
        for m, n, why in plan
        if not cells.has(f"{m}@{n}")
    ]


def _evaluations_left_out(plan: list[tuple[str, int, str | None]], cells: Cells) -> list[dict]:
    """Each measured UniErase cell whose edited model was not evaluated (``--evaluation-sizes``)."""
    return [
        {"method": m, "forget_size": n, "why": "its evaluation: not in --evaluation-sizes"}
        for m, n, _ in plan
        if m == "unierase"
        and cells.has(f"{m}@{n}")
        and not any(p["phase"] == "evaluation" for p in cells.read(f"{m}@{n}")["phases"])
    ]


def _token_and_statistics(args, params, base: Path, work: Path, cells: Cells, progress: bool):
    """Token learning, then the preserved-key statistics cold and cached: once, independent of the forget set.

    Measured cold (the ``unierase@once`` cell) unless that cell exists: then the token and statistics are
    reused from ``--work`` (or made again, unmeasured, where that is empty).

    Returns:
        The token file and the statistics (preserved, held-out) the edits use.
    """
    measured = cells.has(ONCE_CELL)
    if not measured:  # cold means cold: no token or statistics from an earlier run
        shutil.rmtree(work / "cache", ignore_errors=True)
    token_path, token = ensure_token(base, work / "cache", params, progress)
    phases = [_phase("token_learning", "unierase", None, token)]
    model, tok = load_model(base, args.device)
    install_unlearning_token(model, tok, load_token(token_path))
    for phase in ("covariance_cold", "covariance_cached"):
        with measure() as m:
            preserved, heldout, info = cached_preserved_moments(model, tok, params, work / "cache", progress)
        phases.append(_phase(phase, "unierase", None, m.as_dict(), cache_hit=info["cache_hit"]))
    if not measured:
        cells.save(ONCE_CELL, {"phases": phases})
    return token_path, preserved, heldout


def _saved_bytes(model, tok, path: Path) -> int:
    """Bytes of a full saved model directory (weights, config, tokenizer), the copy a version would be."""
    model.save_pretrained(path)
    tok.save_pretrained(path)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    shutil.rmtree(path)
    return size


def _storage(method: str, n: int, before: dict, model, work: Path, full_bytes: int | None) -> dict:
    """The version's delta (every changed tensor, before and after) written and measured, and the share
    of parameters it changes."""
    delta = diff_models(before, model, metadata={"method": method})
    path = work / "deltas" / f"{method}-{n}.safetensors"
    save_delta(delta, path)
    size = path.stat().st_size
    path.unlink()
    total = sum(p.numel() for p in before.values())
    return {
        "method": method,
        "forget_size": n,
        "delta_bytes": size,
        "full_model_bytes": full_bytes,
        "delta_to_full": size / full_bytes if full_bytes else None,
        "params_changed": delta.num_changed(),
        "params_total": total,
        "params_changed_share": delta.num_changed() / total,
        "changed_tensors": len(delta.names),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    print(cost_tables(run(parse_args(argv))))
    return 0


if __name__ == "__main__":
    setup_logging()
    sys.exit(main())
