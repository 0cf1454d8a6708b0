"""Ray scaling: the quality benchmark's evaluation (its splits at the largest forget size, its protocol and
leak audits) run as shards on a local Ray instance of one worker, then of two, on the same machine; wall
time side by side, and a check that both give the in-process rows (every generation identical; the
figures too, but for the MiniLM cosine similarity, whose batches differ with the shards: about 1e-7).

    python -m bench.ray_scaling                                  # SmolLM2, 32 items, 16 new tokens (2 cores)
    python -m bench.ray_scaling --workers 1,2,4 --set evaluation.max_new_tokens=200   # on a larger machine
    python -m bench.ray_scaling --model DIR --authors 3 --questions-per-author 2 --out /tmp/r

Each worker is one Ray task slot of one CPU (Ray gives a task OMP_NUM_THREADS=1); every shard task loads its
own copy of the model. The model evaluated is ``--target`` when given (the quality benchmark's fine-tuned
target under ``--work``), else the base model: scaling is a matter of the workload, not of the weights.
Writes ``ray_scaling.json`` and ``ray_scaling.md`` under ``--out``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from bench._cli import ROOT, add_target_flags, base_model, common_parser, ints, resolve_params, setup_logging
from bench.lib.measure import machine_info
from bench.lib.output import markdown_table, write_json, write_markdown
from bench.lib.workload import author_count, build_author_workload, general_splits, write_splits
from unierase.config import Params

NOTE = """On a 2-core CPU the ratio shows Ray's overhead, not its gain: two workers share the cores a single
in-process run already uses (torch's two threads), and each shard task loads its own model copy and pays
its own start. On a machine with N GPUs and `ray.gpus_per_task: 1`, each worker generates on its own GPU,
and the evaluation is all generation and scoring of independent items: the wall time falls towards
1/N of one worker's once the shards outnumber the GPUs (the split with the audits, the forget split, is
the heaviest shard: chunks of `ray.eval_chunk_size` items keep it from bounding the run), plus one model
load per shard (seconds from a local disk, overlapped across workers)."""


def parse_args(argv: list[str] | None = None):
    """The flags of this part (shared ones in `bench._cli.common_parser`)."""
    p = common_parser(__doc__)
    add_target_flags(p)
    p.add_argument("--forget-share", type=float, default=0.10, help="forget share of the authors (quality's largest)")
    p.add_argument("--workers", type=ints, default=[1, 2], help="Ray worker counts to compare")
    p.add_argument("--target", type=Path, default=None, help="model to evaluate (default: the base model)")
    # Sized for a 2-core CPU (a few minutes a run): 12 forget, 6 retain, 6 holdout, 4 + 4 general items.
    p.set_defaults(general_items=4, retain_eval_items=6)
    defaults = ["evaluation.max_new_tokens=16", "evaluation.generation_batch_size=8", "evaluation.batch_size=8"]
    p.set_defaults(set=defaults + ["ray.eval_chunk_size=8"])  # --set given on the command line applies after
    return p.parse_args(argv)


def run(args) -> list[dict]:
    """Evaluates in-process once, then on Ray with each worker count; returns one row each."""
    import ray

    from flows.parallel import run_sharded_evaluation
    from unierase.stages.evaluate import evaluate_stage

    params = resolve_params(args)
    model = Path(args.target).resolve() if args.target else base_model(args)
    work, out = Path(args.work) / "ray_scaling", Path(args.out)
    k = author_count(args.authors, args.forget_share)
    authors = build_author_workload(args.authors, args.questions_per_author, k, args.holdout_authors, args.seed)
    splits = {
        "forget": authors.first_authors(k),
        "retain": authors.splits["retain"][: args.retain_eval_items],
        "holdout": authors.splits["holdout"],
        **general_splits(args.tofu, args.general_items),
    }
    data = write_splits(splits, work / "data")
    rows = []
    load = os.getloadavg()[0]
    started = time.perf_counter()
    evaluate_stage(model, data, work / "in-process", params, args.device, progress=not args.no_progress)
    rows.append(_row("in-process", None, 0.0, time.perf_counter() - started, work / "in-process", work, load))
    for workers in args.workers:
        load = os.getloadavg()[0]
        started = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - started
        try:
            local = params.model_copy(update={"ray": params.ray.model_copy(update={"address": "local"})})
            started = time.perf_counter()
            run_sharded_evaluation(model, data, work / f"ray-{workers}", local)
            seconds = time.perf_counter() - started
        finally:
            ray.shutdown()
        rows.append(_row("ray", workers, ray_start, seconds, work / f"ray-{workers}", work, load))
    one = next((r for r in rows if r["workers"] == 1), None)
    for row in rows:
        row["speedup_vs_1_worker"] = one["evaluation_s"] / row["evaluation_s"] if one else None
    info = {"items": {n: len(f) for n, f in splits.items()}, "model": str(model), "params": _eval_params(params)}
    write_json({"rows": rows, "workload": info, "note": NOTE, "machine": machine_info(ROOT)}, out / "ray_scaling.json")
    _write_markdown(rows, info, out / "ray_scaling.md")
    return rows


def _row(
    runner: str, workers: int | None, ray_start: float, seconds: float, result: Path, work: Path, load: float
) -> dict:
    texts_same, float_diff = _compare_items(result / "items", work / "in-process" / "items")
    return {
        "runner": runner,
        "workers": workers,
        "ray_start_s": ray_start,
        "evaluation_s": seconds,
        "texts_identical_to_in_process": texts_same,
        "max_abs_diff_to_in_process": float_diff,
        # The machine's 1-minute load average when the run started, and at its end: other work on the cores.
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def _compare_items(ours: Path, theirs: Path) -> tuple[bool, float]:
    """Whether every per-item text (generations, audit generations) equals the in-process run's, and the
    largest absolute difference of any per-item figure."""
    same, diff = True, 0.0
    files = sorted(theirs.glob("*.jsonl"))
    for file in files:
        a = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
        b = [json.loads(line) for line in (ours / file.name).read_text(encoding="utf-8").splitlines()]
        same &= len(a) == len(b)
        for x, y in zip(a, b):
            same &= x.keys() == y.keys()
            for key, value in x.items():
                if isinstance(value, float) and isinstance(y.get(key), float):
                    diff = max(diff, abs(value - y[key]))
                else:
                    same &= value == y.get(key)
    return same and bool(files), diff


def _eval_params(params: Params) -> dict:
    e = params.evaluation
    return {
        "max_new_tokens": e.max_new_tokens,
        "generation_batch_size": e.generation_batch_size,
        "audits": list(e.audits),
        "similarity": e.similarity,
        "eval_chunk_size": params.ray.eval_chunk_size,
    }


def _write_markdown(rows: list[dict], info: dict, path: Path) -> None:
    columns = [
        ("runner", "runner"),
        ("workers", "Ray workers"),
        ("evaluation_s", "evaluation wall s"),
        ("ray_start_s", "Ray start s"),
        ("speedup_vs_1_worker", "speed-up vs 1 worker"),
        ("texts_identical_to_in_process", "per-item texts = in-process"),
        ("max_abs_diff_to_in_process", "max per-item figure diff"),
        ("load_before", "load avg before"),
        ("load_after", "load avg after"),
    ]
    workload = "\n".join(f"- {key}: {value}" for key, value in info.items())
    write_markdown(
        path,
        "Ray scaling of the evaluation",
        [("Wall time", markdown_table(rows, columns)), ("Workload", workload), ("What it would be on N GPUs", NOTE)],
        machine_info(ROOT),
    )


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    for row in run(parse_args(argv)):
        print(row)
    return 0


if __name__ == "__main__":
    setup_logging()
    sys.exit(main())
