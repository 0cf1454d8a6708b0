"""Cost: wall time and peak memory of each UniErase phase (preserved-key statistics cold and cached, token
learning, edit, evaluation) and of each baseline against the forget-set size, as ratios in the same run;
storage of a version (delta against a full model copy, share of parameters changed); pipeline overhead.

    python -m bench.cost                                # SmolLM2; 1, 10, 40 and 200 items
    python -m bench.cost --sizes 1,10 --methods unierase,grad_diff --no-pipeline
    python -m bench.cost --model DIR --sizes 1,2 --out /tmp/c
    python -m bench.cost --resume                       # go on with a run cut short
    python -m bench.cost --redo unierase@200,npo        # measure these again, keep the other rows

Cost does not depend on whether the model knows the facts, so the base model is used as it is (no
fine-tuning). Token learning and the statistics do not depend on the forget set: they are measured once.
Every phase of a run runs in its one process; ``peak_rss_mb`` is its peak resident memory during the
phase (``start_rss_mb``: what it already held). Each row names its run (``runs`` in ``cost.json``: the
machine and command of each); a ratio says whether both its rows come from the same run. Writes
``cost.json``, ``cost.md`` and ``cost.png`` under ``--out``.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

from bench._cli import (
    ROOT,
    add_resume_flags,
    add_workload_flags,
    base_model,
    common_parser,
    ints,
    resolve_methods,
    resolve_params,
    setup_logging,
)
from bench._cost_log import CostLog, parse_redo
from bench._cost_report import ONCE, cost_tables
from bench.lib.measure import machine_info, measure
from bench.lib.runs import Evaluator, apply_baseline, ensure_token, weights_digest
from bench.lib.workload import build_author_workload, general_splits
from unierase.edit.erasure import erase_facts
from unierase.model.delta import diff_models, save_delta, snapshot
from unierase.stages.evaluate import load_model
from unierase.stages.statistics import cached_preserved_moments
from unierase.token.learning import install_unlearning_token, load_token


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
    add_workload_flags(p)
    p.add_argument("--retain-authors", type=int, default=10, help="authors in the retain set")
    p.add_argument("--no-pipeline", action="store_true", help="leave out the Prefect-flow overhead")
    p.add_argument("--pipeline-size", type=int, default=None, help="items of the overhead request (default: smallest)")
    p.add_argument("--no-harness", action="store_true", help="a Prefect server is already active (tests)")
    add_resume_flags(
        p, redo_help="comma-separated METHOD or METHOD@ITEMS whose rows are measured again (implies --resume)"
    )
    return p.parse_args(argv)


def _workload(args, params, base: Path) -> dict:
    """What makes two runs' rows comparable: the generated authors, the parameters, the model's weights."""
    return {
        "max_size": max(args.sizes),
        "questions_per_author": args.questions_per_author,
        "retain_authors": args.retain_authors,
        "holdout_authors": args.holdout_authors,
        "retain_eval_items": args.retain_eval_items,
        "general_items": args.general_items,
        "seed": args.seed,
        "model_weights": weights_digest(base),
        "params": params.model_dump(mode="json"),
    }


def run(args) -> dict:
    """Measures every phase on every size (with ``--resume``, those not in ``cost.json`` yet); returns
    what ``cost.json`` holds."""
    params, methods, progress = resolve_params(args), resolve_methods(args), not args.no_progress
    base, out = base_model(args), Path(args.out)
    work = Path(args.work) / "cost"
    redo = parse_redo(args.redo)
    if not (args.resume or redo):
        shutil.rmtree(work, ignore_errors=True)  # cold means cold: no token or statistics from an earlier run
    log = CostLog(out, machine_info(ROOT), _workload(args, params, base), args.resume, redo)
    qpa, sizes = args.questions_per_author, sorted(set(args.sizes))
    forget_authors = math.ceil(max(sizes) / qpa)
    workload = build_author_workload(
        forget_authors + args.retain_authors, qpa, forget_authors, args.holdout_authors, args.seed
    )
    block, retain = workload.splits["forget"], workload.splits["retain"]
    general = general_splits(args.tofu, args.general_items)
    evaluator = Evaluator(params, args.device, progress)
    baseline_sizes = set(sizes if args.baseline_sizes is None else args.baseline_sizes)
    log.plan = [
        (m, n, "not in --baseline-sizes" if m != "unierase" and n not in baseline_sizes else None)
        for n in sizes
        for m in methods
    ]

    todo = [(m, n) for m, n, skipped in log.plan if not skipped and not log.done(m, n)]
    pipeline = not args.no_pipeline and "unierase" in methods and log.pipeline is None
    try:
        # The token and statistics when anything needs them (a resumed run with nothing left to measure
        # only writes the tables and plot again).
        needs_token = pipeline or not log.once_measured() or any(m == "unierase" for m, _ in todo)
        if "unierase" in methods and needs_token:
            token_path, preserved, heldout = _token_and_statistics(args, params, base, work, log, progress)
        full_bytes = next((r["full_model_bytes"] for r in log.storage if r.get("full_model_bytes")), None)
        for method, n in todo:
            log.drop(method, n)  # a (method, size) cut short in an earlier run is measured again whole
            forget = block[:n]
            model, tok = load_model(base, args.device)
            before = snapshot(model)  # as erase_stage: the version's delta includes the token's new row
            if method == "unierase":
                install_unlearning_token(model, tok, load_token(token_path))
                with measure() as m:
                    result = erase_facts(
                        model, tok, forget, params, preserved, retain, heldout=heldout, progress=progress
                    )
                log.phase("edit", method, n, m, breakdown_s=result.timings)
            else:
                with measure() as m:
                    apply_baseline(method, model, tok, forget, retain, params, progress)
                log.phase("unlearn", method, n, m)
            full_bytes = full_bytes or _saved_bytes(model, tok, work / "full-copy")
            log.add_storage(_storage(method, n, before, model, work, full_bytes))
            if method == "unierase":
                splits = {"forget": forget, "retain": retain[: args.retain_eval_items], **general}
                splits["holdout"] = workload.splits["holdout"]
                with measure() as m:
                    evaluator.evaluate(model, tok, splits)
                log.phase("evaluation", method, n, m)
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
            log.set_pipeline(figures)
    finally:  # tables and the plot, also of a run cut short
        log.save(plot=True)
    return log.data()


def _token_and_statistics(args, params, base: Path, work: Path, log: CostLog, progress: bool):
    """Token learning, then the preserved-key statistics cold and cached: once, independent of the forget set.

    Measured cold unless ``cost.json`` already has them (``--resume``): then the token and statistics are
    reused from ``--work`` (or made again, unmeasured, where that is empty).

    Returns:
        The token file and the statistics (preserved, held-out) the edits use.
    """
    measured = log.once_measured()
    if not measured:
        for phase in ONCE:
            log.phases = [r for r in log.phases if (r["phase"], r["method"]) != (phase, "unierase")]
        shutil.rmtree(work / "tokens", ignore_errors=True)  # cold means cold: no token or statistics
        shutil.rmtree(work / "cache", ignore_errors=True)  # from an earlier run
    token_path, token = ensure_token(base, work / "tokens", params, progress)
    if not measured:
        log.phase("token_learning", "unierase", None, token)
    model, tok = load_model(base, args.device)
    install_unlearning_token(model, tok, load_token(token_path))
    for phase in ("covariance_cold", "covariance_cached"):
        with measure() as m:
            preserved, heldout, info = cached_preserved_moments(model, tok, params, work / "cache", progress)
        if not measured:
            log.phase(phase, "unierase", None, m, cache_hit=info["cache_hit"])
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
