"""Sequential: N erasure requests in a row on the same target, UniErase against each baseline; after
every step, the forget efficacy of each earlier request and the model ability.

    python -m bench.sequential                         # SmolLM2; 10 requests of one author each
    python -m bench.sequential --authors 130 --requests 100 --evaluate-every 10 --stop-ability 0   # a hundred
    python -m bench.sequential --model DIR --authors 4 --questions-per-author 2 --requests 2 --out /tmp/s

UniErase: each request is one `erase_stage` call on the previous step's model, whose edit state (the
keys of every earlier edit) and token it carries, so the new edit is solved against the earlier ones
(the README's sequential erasure across runs). A baseline is applied cumulatively to one model in
memory. With the same ``--authors``, ``--questions-per-author``, ``--holdout-authors`` and ``--seed``
as the quality part, the fine-tuned target under ``--work`` is reused. The leak audits are off here
(``--audits`` turns them on): this part measures how forgetting and ability hold up over requests.
Every step records its cost (for UniErase the value optimisation's and the solves' seconds and the edit
state's size, which grows with the requests, and the share of all retain questions whose answers its
erasure check found opening with the token; that check runs after the edit only, ``erase.measure_before``
off, as the step before measured the same model); the evaluation runs after the first step, every
``--evaluate-every`` steps and after the last, and a method stops after an evaluated step whose model
ability is at or below ``--stop-ability`` (a baseline that has destroyed the model).

Each method after each step is one cell, ``<method>@<step>`` (`bench.lib.cells`); a step builds on the one
before. UniErase keeps its latest step's model under ``--work`` (``--keep-models``: every step's), so a run
cut short goes on after its last measured step, and ``--redo unierase@K`` measures step K and every later
one again (from step 1 when step K-1's model is gone); a baseline missing any step is measured again from
its first.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from bench._cli import (
    ROOT,
    add_redo_flag,
    add_target_flags,
    base_model,
    common_parser,
    resolve_methods,
    resolve_params,
    setup_logging,
    workload,
)
from bench.lib.cells import open_cells, runs_markdown
from bench.lib.measure import machine_info, measure
from bench.lib.output import line_plots, markdown_table, write_json, write_markdown
from bench.lib.runs import (
    Evaluator,
    apply_baseline,
    ensure_finetuned,
    ensure_token,
    split_forget_efficacy,
    unierase_seconds,
)
from bench.lib.workload import build_author_workload, general_splits
from unierase.data.facts import write_facts
from unierase.evaluation.evaluate import MODEL_ABILITY_METRICS
from unierase.model.loading import load_model
from unierase.stages.artifacts import STATE_FILE, load_state
from unierase.stages.erase import erase_stage

log = logging.getLogger(__name__)

# Recorded per kept split at each evaluated step: what model ability averages, and where the token fired.
KEPT_FIELDS = (*MODEL_ABILITY_METRICS, "token_trigger_rate")

COLUMNS = [
    ("method", "method"),
    ("step", "step"),
    ("forgotten_items", "items forgotten"),
    ("mean_forget_efficacy", "forget efficacy (mean, requests so far)"),
    ("first_request_forget_efficacy", "forget efficacy (request 1)"),
    ("latest_request_forget_efficacy", "forget efficacy (latest)"),
    ("model_ability", "model ability"),
    ("model_utility", "model utility"),
    ("seconds", "seconds"),
    ("values_s", "value optimisation s"),
    ("solve_s", "solves s"),
    ("edit_state_mb", "edit state MiB"),
    ("retain_token_trigger_rate", "retain trigger"),
    ("peak_rss_mb", "peak RSS MiB"),
    ("run", "run"),
]


def parse_args(argv: list[str] | None = None):
    """The flags of this part (shared ones in `bench._cli.common_parser`)."""
    p = common_parser(__doc__)
    add_target_flags(p)
    p.add_argument("--requests", type=int, default=10, help="requests applied one after another")
    p.add_argument("--authors-per-request", type=int, default=1, help="authors forgotten by each request")
    p.add_argument("--audits", action="store_true", help="run the leak audits at every step too")
    p.add_argument(
        "--evaluate-every", type=int, default=1, help="evaluate after step 1, every this many steps and the last"
    )
    p.add_argument(
        "--stop-ability",
        type=float,
        default=None,
        help="a method stops once an evaluation shows model ability <= this (default: never)",
    )
    p.add_argument("--keep-models", action="store_true", help="keep each step's UniErase model under --work")
    add_redo_flag(p, "step; a method's later steps build on it, so all of them are measured again")
    return p.parse_args(argv)


def _name(i: int) -> str:
    return f"forget_r{i + 1:02d}"


def run(args) -> list[dict]:
    """Applies the requests with every method whose steps are not all measured yet; returns the rows of
    every cell (also written under ``args.out``)."""
    params, methods, progress = resolve_params(args), resolve_methods(args), not args.no_progress
    if not args.audits:
        params = params.model_copy(update={"evaluation": params.evaluation.model_copy(update={"audits": []})})
    base, work, out = base_model(args), Path(args.work), Path(args.out)
    flags = ("authors", "questions_per_author", "holdout_authors", "retain_eval_items", "general_items", "seed")
    measured_on = workload(args, params, base, *flags, "requests", "authors_per_request")
    cells = open_cells(out, "sequential", measured_on, machine_info(ROOT), args.redo)
    num_forget = args.requests * args.authors_per_request
    authors = build_author_workload(
        args.authors, args.questions_per_author, num_forget, args.holdout_authors, args.seed
    )
    files = authors.write(work / "sequential" / "authors")
    requests = authors.author_blocks(args.authors_per_request)[: args.requests]
    request_files = [
        write_facts(r, work / "sequential" / "requests" / f"{_name(i)}.jsonl") for i, r in enumerate(requests)
    ]
    target, _ = ensure_finetuned(base, files["full"], work / "target", params.finetune, args.device, progress)
    shared = {
        "retain": authors.splits["retain"][: args.retain_eval_items],
        **general_splits(args.tofu, args.general_items),
    }
    evaluator = Evaluator(params, args.device, progress)

    def evaluated(step: int) -> bool:
        return step in (0, 1, len(requests)) or step % args.evaluate_every == 0

    def record(method: str, step: int, loaded, fields: dict) -> bool:
        """Saves the step's cell (its evaluation when the step is evaluated, on the model and tokenizer
        ``loaded()`` gives); True when the method stops."""
        row = {"method": method, "step": step, "forgotten_items": sum(len(r) for r in requests[:step]), **fields}
        if not evaluated(step):
            cells.save(f"{method}@{step}", {**row, "evaluated": False})
            return False
        model, tok = loaded()
        # Step 0 (the target) is scored on every request; step s on the requests applied so far.
        shown = range(len(requests)) if step == 0 else range(step)
        report = evaluator.evaluate(model, tok, {**{_name(i): requests[i] for i in shown}, **shared})
        efficacy = [split_forget_efficacy(report, _name(i)) for i in shown]
        earlier = efficacy if step else []
        ability = report.aggregates["model_ability"]
        stops = args.stop_ability is not None and 0 < step < len(requests) and ability <= args.stop_ability
        row.update(
            evaluated=True,
            forget_efficacy_by_request=efficacy,
            mean_forget_efficacy=sum(earlier) / len(earlier) if earlier else None,
            first_request_forget_efficacy=efficacy[0],
            latest_request_forget_efficacy=efficacy[step - 1] if step else None,
            model_ability=ability,
            model_utility=report.aggregates["model_utility"],
            kept_splits={
                split: {m: summary.get(m) for m in KEPT_FIELDS}
                for split, summary in report.splits.items()
                if split in shared
            },
            stopped=stops,
        )
        cells.save(f"{method}@{step}", row)
        return stops

    try:
        if not cells.has("target@0"):
            record("target", 0, lambda: load_model(target, args.device), {"seconds": None, "peak_rss_mb": None})
        for method in methods:
            if _complete(cells, method, len(requests)):
                continue
            # A step builds on the one before: go on after the last measured one whose model is kept
            # (UniErase keeps its latest step's model under --work), else start again.
            done = _resumable_steps(cells, method, work, len(requests))
            for step in range(done + 1, len(requests) + 1):
                cells.path(f"{method}@{step}").unlink(missing_ok=True)
            if method == "unierase":
                token_path, _ = ensure_token(target, work / "cache", params, progress, files["retain"])
                for step, model_dir, fields in _unierase_steps(
                    args, params, target, request_files, files["retain"], token_path, done
                ):
                    if record(method, step, lambda d=model_dir: load_model(d, args.device), fields):
                        break
                continue
            model, tok = load_model(target, args.device)
            for i, request in enumerate(requests):
                with measure() as m:
                    apply_baseline(method, model, tok, request, authors.splits["retain"], params, progress)
                model.eval()
                fields = {"seconds": m.seconds, "wall_seconds": m.seconds, "peak_rss_mb": m.peak_rss_mb}
                if record(method, i + 1, lambda m=model, t=tok: (m, t), fields):
                    break
            del model
    finally:  # the summary from every cell, also after a run cut short
        runs, measured = cells.load()
        rows = [{**row, "run": run} for run, row in measured.values()]
        order = {m: i for i, m in enumerate(["target", *methods])}  # then methods of earlier runs only
        rows.sort(key=lambda r: (order.get(r["method"], len(order)), r["method"], r["step"]))
        if rows:
            write_json(rows, out / "sequential.json")
            _write_outputs(rows, runs, out, len(requests))
    return rows


def _complete(cells, method: str, num_requests: int) -> bool:
    """Whether every step of ``method`` is measured, up to the last or to the one where it stopped."""
    for step in range(1, num_requests + 1):
        name = f"{method}@{step}"
        if not cells.has(name):
            return False
        if cells.read(name).get("stopped"):
            return True
    return True


def _step_dir(work: Path, step: int) -> Path:
    """Where UniErase's step ``step`` is erased (its model under ``model/``)."""
    return Path(work) / "sequential" / "runs" / f"unierase-step{step:02d}"


def _resumable_steps(cells, method: str, work: Path, num_requests: int) -> int:
    """How many of ``method``'s first steps a run goes on from: UniErase's consecutive measured steps
    when the last one's model (with its edit state) is still under ``work``; 0 otherwise (a baseline
    lives in memory only)."""
    if method != "unierase":
        return 0
    done = 0
    while done < num_requests and cells.has(f"{method}@{done + 1}"):
        done += 1
    if not done:
        return 0
    kept = _step_dir(work, done) / "model" / STATE_FILE
    if not kept.is_file() or load_state(kept).num_requests != done:  # gone, or another run's
        return 0
    log.info("unierase: going on after step %d (its model is kept at %s)", done, kept.parent)
    return done


def _unierase_steps(args, params, target: Path, request_files: list[Path], retain: Path, token: Path, done: int = 0):
    """Yields (step, erased model directory, measured fields) after each request from step ``done + 1``;
    each step edits the previous step's model (the target, or step ``done``'s kept model), whose edit
    state carries the earlier requests."""
    # The erase stage's own answers before the edit are not generated: step 0 measures the target, and each
    # step's model is the one the step before measured after its edit.
    erase = params.erase.model_copy(update={"method": "unierase", "mode": "batch", "measure_before": False})
    p = params.model_copy(update={"erase": erase})
    work = Path(args.work)
    previous = _step_dir(work, done) / "model" if done else target
    for i, request_file in enumerate(request_files[done:], start=done):
        run_dir = _step_dir(work, i + 1)
        shutil.rmtree(run_dir, ignore_errors=True)
        with measure() as m:
            report = erase_stage(
                request_file, run_dir, p, previous, retain, token, work / "cache", progress=not args.no_progress
            )
        timings, state = report["timings_s"], run_dir / "model" / STATE_FILE
        steps = [n for request in report["diagnostics"]["value_steps"] for n in request]
        fields = {
            "seconds": unierase_seconds(report),
            "wall_seconds": m.seconds,
            "peak_rss_mb": m.peak_rss_mb,
            "covariance_cache_hit": report["diagnostics"]["covariance"]["cache_hit"],
            "edit_state_requests": report["edit_state_requests"],
            "edit_state_mb": state.stat().st_size / 2**20 if state.is_file() else None,
            "values_s": timings.get("values_s"),
            "solve_s": timings.get("solve_s"),
            "value_steps_per_fact": sum(steps) / len(steps) if steps else None,
            # The erasure's own check on every retain question: the token must not open their answers.
            "retain_token_trigger_rate": report["after"].get("retain_token_trigger_rate"),
        }
        yield i + 1, run_dir / "model", fields
        if previous != target and not args.keep_models:
            shutil.rmtree(previous, ignore_errors=True)  # the report and delta stay
        previous = run_dir / "model"


def _write_outputs(rows: list[dict], runs: list[dict], out: Path, num_requests: int) -> None:
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "target"))
    target = [r for r in rows if r["method"] == "target"]
    sections = [("Results", markdown_table(rows, COLUMNS))]
    for method in methods:
        steps = [r for r in rows if r["method"] == method and r.get("evaluated", True)]
        matrix = [
            {"step": r["step"], **{f"r{i + 1}": v for i, v in enumerate(r["forget_efficacy_by_request"])}}
            for r in steps
        ]
        columns = [("step", "step")] + [(f"r{i + 1}", f"request {i + 1}") for i in range(num_requests)]
        sections.append(
            (f"{method}: forget efficacy of each earlier request after every step", markdown_table(matrix, columns))
        )
    for method in ["target", *methods]:
        if table := _kept_splits_table([r for r in rows if r["method"] == method]):
            sections.append((f"{method}: what model ability averages, split by split", table))
    sections.append(
        (
            "Notes",
            "Step 0 is the fine-tuned target before any request. UniErase: one `erase_stage` call per request on the "
            "previous step's model (its edit state carries the earlier edits); `seconds` is the token install, "
            "preserved-key statistics, subjects, projection and edit, of which `value optimisation s` and `solves s`; "
            "`edit state MiB` is the state file saved beside the model. Baselines: applied cumulatively; `seconds` "
            "is the request's optimisation. Steps without figures for efficacy and ability were not evaluated "
            "(`--evaluate-every`); a method whose model ability fell to `--stop-ability` stops there.",
        )
    )
    sections.append(("Runs (the `run` column of the results)", runs_markdown(runs)))
    write_markdown(out / "sequential.md", "Sequential requests", sections, runs[-1])
    panels: dict[str, dict] = {
        "forget efficacy, mean of requests so far": {},
        "forget efficacy of request 1": {},
        "model ability": {},
        "solves s (UniErase)": {},
        "edit state MiB (UniErase)": {},
    }
    for method in methods:
        steps = target + [r for r in rows if r["method"] == method and r.get("evaluated", True)]
        xs = [r["step"] for r in steps]
        panels["forget efficacy, mean of requests so far"][method] = (xs, [r["mean_forget_efficacy"] for r in steps])
        panels["forget efficacy of request 1"][method] = (xs, [r["first_request_forget_efficacy"] for r in steps])
        panels["model ability"][method] = (xs, [r["model_ability"] for r in steps])
    costs = [r for r in rows if r["method"] == "unierase" and r.get("solve_s") is not None]
    if costs:
        xs = [r["step"] for r in costs]
        panels["solves s (UniErase)"]["unierase"] = (xs, [r["solve_s"] for r in costs])
        panels["edit state MiB (UniErase)"]["unierase"] = (xs, [r["edit_state_mb"] for r in costs])
    panels = {title: lines for title, lines in panels.items() if lines}
    line_plots(out / "sequential.png", panels, "requests applied", "Sequential requests (step 0: the target)")


def _kept_splits_table(rows: list[dict]) -> str | None:
    """One line per evaluated step: each kept split's model-ability metrics and the share of its questions
    the token opened (rows measured before these were recorded are left out; None when none has them)."""
    measured = [r for r in rows if r.get("kept_splits")]
    if not measured:
        return None
    splits = list(measured[0]["kept_splits"])
    lines = [
        {"step": r["step"], **{f"{s}/{m}": r["kept_splits"].get(s, {}).get(m) for s in splits for m in KEPT_FIELDS}}
        for r in measured
    ]
    columns = [("step", "step")] + [(f"{s}/{m}", f"{s} {m}") for s in splits for m in KEPT_FIELDS]
    return markdown_table(lines, columns)


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    print(markdown_table(run(parse_args(argv)), COLUMNS))
    return 0


if __name__ == "__main__":
    setup_logging()
    sys.exit(main())
