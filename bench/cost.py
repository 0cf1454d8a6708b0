"""Cost: wall time and peak memory of each UniErase phase (preserved-key statistics cold and cached, token
learning, edit, evaluation) and of each baseline against the forget-set size, as ratios in the same run;
storage of a version (delta against a full model copy, share of parameters changed); pipeline overhead.

    python -m bench.cost                                # SmolLM2; 1, 10, 40 and 200 items
    python -m bench.cost --sizes 1,10 --methods unierase,grad_diff --no-pipeline
    python -m bench.cost --model DIR --sizes 1,2 --out /tmp/c

Cost does not depend on whether the model knows the facts, so the base model is used as it is (no
fine-tuning). Token learning and the statistics do not depend on the forget set: they are measured once.
Every phase runs in this one process; ``peak_rss_mb`` is its peak resident memory during the phase
(``start_rss_mb``: what it already held). Writes ``cost.json``, ``cost.md`` and ``cost.png`` under ``--out``.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

from bench._cli import (
    ROOT,
    add_workload_flags,
    base_model,
    common_parser,
    ints,
    resolve_methods,
    resolve_params,
    setup_logging,
)
from bench._cost_report import cost_tables, growth, ratios, write_cost_outputs
from unierase.benchmark.measure import machine_info, measure
from unierase.benchmark.output import write_json
from unierase.benchmark.runs import Evaluator, apply_baseline, ensure_token
from unierase.benchmark.workload import build_author_workload, general_splits
from unierase.delta import diff_models, save_delta, snapshot
from unierase.erasure import erase_facts
from unierase.evaluate_stage import load_model
from unierase.preserved import cached_preserved_moments
from unierase.token_learning import install_unlearning_token, load_token


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
    return p.parse_args(argv)


class _CostLog:
    """``cost.json``: every measurement so far, rewritten after each one."""

    def __init__(self, out: Path, machine: dict) -> None:
        self.path, self.machine = out / "cost.json", machine
        self.phases: list[dict] = []
        self.storage: list[dict] = []
        self.pipeline: dict | None = None
        self.not_measured: list[dict] = []

    def save(self, plot: bool = False) -> None:
        data = {
            "machine": self.machine,
            "phases": self.phases,
            "storage": self.storage,
            "ratios": ratios(self.phases),
            "growth": growth(self.phases),
            "pipeline": self.pipeline,
            "not_measured": self.not_measured,
        }
        write_json(data, self.path)
        write_cost_outputs(data, self.path.parent, plot)

    def phase(self, phase: str, method: str, size: int | None, m, **extra) -> None:
        self.phases.append({"phase": phase, "method": method, "forget_size": size, **m.as_dict(), **extra})
        self.save()


def run(args) -> dict:
    """Measures every phase on every size; returns what ``cost.json`` holds."""
    params, methods, progress = resolve_params(args), resolve_methods(args), not args.no_progress
    base, out = base_model(args), Path(args.out)
    work = Path(args.work) / "cost"
    shutil.rmtree(work, ignore_errors=True)  # cold means cold: no token or statistics from an earlier run
    qpa, sizes = args.questions_per_author, sorted(set(args.sizes))
    forget_authors = math.ceil(max(sizes) / qpa)
    workload = build_author_workload(
        forget_authors + args.retain_authors, qpa, forget_authors, args.holdout_authors, args.seed
    )
    block, retain = workload.splits["forget"], workload.splits["retain"]
    general = general_splits(args.tofu, args.general_items)
    log = _CostLog(out, machine_info(ROOT))
    evaluator = Evaluator(params, args.device, progress)
    baseline_sizes = set(sizes if args.baseline_sizes is None else args.baseline_sizes)

    try:
        if "unierase" in methods:
            token_path, preserved, heldout = _token_and_statistics(args, params, base, work, log, progress)
        full_bytes = None
        for n in sizes:
            forget = block[:n]
            splits = {"forget": forget, "retain": retain[: args.retain_eval_items], **general}
            splits["holdout"] = workload.splits["holdout"]
            for method in methods:
                if method != "unierase" and n not in baseline_sizes:
                    log.not_measured.append({"method": method, "forget_size": n, "why": "not in --baseline-sizes"})
                    continue
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
                log.storage.append(_storage(method, n, before, model, work, full_bytes))
                if method == "unierase":
                    with measure() as m:
                        evaluator.evaluate(model, tok, splits)
                    log.phase("evaluation", method, n, m)
                del model, before
        if not args.no_pipeline and "unierase" in methods:
            from bench.pipeline import measure_pipeline_overhead

            log.pipeline = measure_pipeline_overhead(
                base,
                block[: args.pipeline_size or sizes[0]],
                retain,
                params,
                token_path,
                work / "cache",
                work / "pipeline",
                start_harness=not args.no_harness,
            )
    finally:  # tables and the plot, also of a run cut short
        log.save(plot=True)
    return {"phases": log.phases, "storage": log.storage, "pipeline": log.pipeline, "not_measured": log.not_measured}


def _token_and_statistics(args, params, base: Path, work: Path, log: _CostLog, progress: bool):
    """Token learning, then the preserved-key statistics cold and cached: once, independent of the forget set.

    Returns:
        The token file and the statistics (preserved, held-out) the edits use.
    """
    token_path, token = ensure_token(base, work / "tokens", params, progress)
    log.phases.append({"phase": "token_learning", "method": "unierase", "forget_size": None, **token})
    model, tok = load_model(base, args.device)
    install_unlearning_token(model, tok, load_token(token_path))
    for phase in ("covariance_cold", "covariance_cached"):
        with measure() as m:
            preserved, heldout, info = cached_preserved_moments(model, tok, params, work / "cache", progress)
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
    data = run(parse_args(argv))
    print(cost_tables({**data, "ratios": ratios(data["phases"]), "growth": growth(data["phases"])}))
    return 0


if __name__ == "__main__":
    setup_logging()
    sys.exit(main())
