"""Quality: UniErase and every baseline on one fine-tuned target and the same nested forget sets,
scored by one evaluation (forget efficacy, model ability, forget quality, model utility, leak audits).

    python -m bench.quality                                   # SmolLM2; 40 authors x 3 questions; 1%, 5%, 10%
    python -m bench.quality --set evaluation.max_new_tokens=48 --redo unierase   # measure UniErase again
    python -m bench.quality --model DIR --authors 3 --questions-per-author 2 --shares 0.3 --out /tmp/q

Each method (and reference model) on each forget size is one cell, ``<method>@<authors>``
(`bench.lib.cells`), measured one forget size after another, smallest first. With ``--set
ray.address=local`` (or ``auto``, an address) the method cells of a size run side
by side as tasks on that Ray cluster (`bench.lib.ray_cells`), each with its own model copies. Writes ``quality.json``, ``quality.md``, ``quality_scatter.png`` and the per-item
results ``quality_items/<method>-authors<k>/`` under ``--out``; models, caches and the generated data go
under ``--work``.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from bench._cli import (
    ROOT,
    UNIERASE_DEPTHS,
    add_redo_flag,
    add_target_flags,
    base_model,
    common_parser,
    floats,
    names,
    resolve_methods,
    resolve_params,
    setup_logging,
    workload,
)
from bench._quality_report import in_table_order, quality_table, write_quality_outputs
from bench.lib.cells import open_cells
from bench.lib.measure import machine_info, measure
from bench.lib.output import write_json
from bench.lib.runs import (
    Evaluator,
    apply_baseline,
    changed_parameters,
    ensure_finetuned,
    ensure_token,
    evaluation_fields,
    leaked_items,
    unierase_seconds,
)
from bench.lib.tofu import author_labels, build_tofu_workload
from bench.lib.workload import (
    GENERAL_SPLITS,
    AuthorWorkload,
    author_count,
    build_author_workload,
    forget_author_counts,
    general_splits,
    write_splits,
)
from unierase.data.facts import write_facts
from unierase.evaluation.evaluate import forget_truth_ratios
from unierase.model.loading import load_model
from unierase.parallel.runner import uses_ray


def parse_args(argv: list[str] | None = None):
    """The flags of this part (shared ones in `bench._cli.common_parser`)."""
    p = common_parser(__doc__)
    add_target_flags(p)
    p.add_argument("--shares", type=floats, default=[0.01, 0.05, 0.10], help="forget shares of the authors")
    p.add_argument("--leak-threshold", type=float, default=0.5, help="ROUGE-L recall counted as a leaked answer")
    p.add_argument("--keep-models", action="store_true", help="keep each erased model under --work")
    p.add_argument(
        "--collisions",
        action="store_true",
        help="the collision set: each forget author is named with the first name of one retain author and "
        "the last name of another (the target is fine-tuned on them, under --work/target-collisions)",
    )
    p.add_argument(
        "--tofu-authors",
        type=int,
        default=0,
        help="instead of generated authors, TOFU's own (from --tofu): this many, all 20 questions each, the "
        "authors of --tofu-forget among them (0: generated authors)",
    )
    p.add_argument(
        "--tofu-forget",
        type=names,
        default=["forget01", "forget05"],
        help="with --tofu-authors: TOFU's forget splits erased, one forget size each",
    )
    add_redo_flag(p, "forget authors")
    args = p.parse_args(argv)
    if args.tofu_authors and args.collisions:
        p.error("--collisions renames generated authors; it does not apply to --tofu-authors")
    return args


# Parameters only UniErase reads: a reference model's or a baseline's cell keeps its result when they change.
_ERASURE_SECTIONS = ("token", "covariance", "edit", "erase", "validation", "ray")
# Evaluation settings that act only on answers opening with an unlearning token, which those models lack.
_GATED_EVALUATION = ("after_token",)


def cell_scope(name: str, workload: dict) -> dict:
    """What a quality cell depends on (`bench.lib.cells.Scope`): a UniErase cell, the whole workload; a
    reference model's or a baseline's, all of it but UniErase's own parameters (the evaluation keeps
    reading the token's name, to tell whether it fired)."""
    if name.partition("@")[0] in UNIERASE_DEPTHS:
        return workload
    params = {k: v for k, v in workload["params"].items() if k not in _ERASURE_SECTIONS}
    params["token"] = {"token_template": workload["params"]["token"]["token_template"]}
    params["evaluation"] = {k: v for k, v in params["evaluation"].items() if k not in _GATED_EVALUATION}
    return {**workload, "params": params}


def author_workload(args) -> tuple[AuthorWorkload, str, dict[int, dict]]:
    """The authors of this run: generated ones (``--authors``, ``--shares``, optionally the collision
    set) or TOFU's own (``--tofu-authors``). Returns the workload, the suffix of its folders under
    ``--work``, and per forget size (authors, ascending) what its rows record: the forget authors' names,
    the shares that asked for it or the TOFU split it is."""
    if args.tofu_authors:
        authors, splits = build_tofu_workload(args.tofu, args.tofu_authors, args.tofu_forget, args.holdout_authors)
        names = author_labels(args.tofu, authors.splits["forget"])
        sizes = {k: {"forget_author_names": names[:k], "tofu_split": split} for k, split in splits.items()}
        return authors, f"-tofu{args.tofu_authors}", sizes
    counts = forget_author_counts(args.authors, args.shares)
    authors = build_author_workload(
        args.authors, args.questions_per_author, max(counts), args.holdout_authors, args.seed, args.collisions
    )
    names = list(dict.fromkeys(f.subject for f in authors.splits["forget"]))
    sizes = {
        k: {
            "forget_author_names": names[:k],
            "forget_shares_requested": [s for s in args.shares if author_count(args.authors, s) == k],
        }
        for k in counts
    }
    return authors, "-collisions" if args.collisions else "", sizes


def run(args) -> list[dict]:
    """Runs every method on every forget size that has no cell yet; returns the rows of every cell (also
    written under ``args.out``)."""
    params, methods, progress = (
        resolve_params(args),
        resolve_methods(args, tuple(UNIERASE_DEPTHS)),
        not args.no_progress,
    )
    base, work, out = base_model(args), Path(args.work), Path(args.out)
    authors, suffix, sizes = author_workload(args)
    counts = list(sizes)
    flags = ("authors", "questions_per_author", "holdout_authors", "retain_eval_items", "general_items", "seed")
    # The other workloads' flags only where they are used, so the default's cells keep their fingerprint.
    other = {"collisions": True} if args.collisions else {}
    other |= {"tofu_authors": args.tofu_authors, "tofu_forget": args.tofu_forget} if args.tofu_authors else {}
    measured_on = workload(args, params, base, *flags, "leak_threshold", forget_authors=max(counts), **other)
    cells = open_cells(out, "quality", measured_on, machine_info(ROOT), args.redo, cell_scope)
    files = authors.write(work / f"authors{suffix}")
    # One target for every method and size, and one retain-reference model trained without the
    # largest forget set: forget sets are nested (the first k authors of one block), so that model has
    # seen none of the forget authors of any size and serves forget quality for all of them. The
    # collision set has its own target (other forget authors) and the same retain split.
    target_dir = work / f"target{suffix}"
    target, _ = ensure_finetuned(base, files["full"], target_dir, params.finetune, args.device, progress)
    retain_dir, _ = ensure_finetuned(
        base,
        files["retain"],
        work / f"retain_model{suffix if args.tofu_authors else ''}",  # the collision set keeps the retain split
        params.finetune,
        args.device,
        progress,
    )

    general = general_splits(args.tofu, args.general_items)
    eval_splits, forget_files = {}, {}
    for k in counts:
        forget = authors.first_authors(k)
        eval_splits[k] = {
            "forget": forget,
            "retain": authors.splits["retain"][: args.retain_eval_items],
            "holdout": authors.splits["holdout"],
            **general,
        }
        write_splits(eval_splits[k], work / f"eval{suffix}" / f"authors-{k}")  # what each evaluation read
        forget_files[k] = write_facts(forget, work / f"forget{suffix}" / f"authors-{k}.jsonl")

    retain_model, retain_tok = load_model(retain_dir, args.device)
    retain_ratios = {
        k: forget_truth_ratios(retain_model, retain_tok, s, params.evaluation, progress) for k, s in eval_splits.items()
    }
    del retain_model
    context = {"target": target, "retain_dir": retain_dir, "retain_file": files["retain"], "authors": authors}
    context["sizes"] = sizes  # per forget size: the fields its rows record (`author_workload`)
    evaluator = Evaluator(params, args.device, progress)  # one embedder load for every in-process cell

    def cell(method: str, k: int, token=None) -> tuple:
        """The arguments of `measure_cell` for ``method`` on the first ``k`` forget authors."""
        return (args, params, method, k, eval_splits[k], retain_ratios[k], forget_files[k], token, context)

    needs_token = any(m in UNIERASE_DEPTHS and not cells.has(f"{m}@{k}") for k in counts for m in methods)
    try:
        token = ensure_token(target, work / "cache", params, progress, files["retain"]) if needs_token else None
        # One forget size after another, smallest first, so a run cut short leaves whole tables for the
        # sizes it reached: the reference models (in this process), then every method cell, one after
        # another here or side by side as tasks on the Ray cluster that ray.address names.
        for k in counts:
            for ref in ("target", "retain_model"):
                if not cells.has(f"{ref}@{k}"):
                    cells.save(f"{ref}@{k}", measure_cell(*cell(ref, k), evaluator=evaluator))
            todo = [m for m in methods if not cells.has(f"{m}@{k}")]
            if uses_ray(params.ray) and todo:
                from bench.lib.ray_cells import run_cells

                for method, row in zip(todo, run_cells(measure_cell, [cell(m, k, token) for m in todo], params.ray), strict=True):  # fmt: skip
                    cells.save(f"{method}@{k}", row)
            else:
                for method in todo:
                    cells.save(f"{method}@{k}", measure_cell(*cell(method, k, token), evaluator=evaluator))
    finally:  # the summary from every cell, also after a run cut short
        runs, measured = cells.load()
        rows = sorted(({**row, "run": run} for run, row in measured.values()), key=in_table_order)
        if rows:
            write_json(rows, out / "quality.json")
            write_quality_outputs(rows, runs, out, args.leak_threshold, retained_authors(args, authors))
    return rows


def retained_authors(args, authors: AuthorWorkload) -> list[str]:
    """The names of the authors every model was trained on and no cell erases (the retain split)."""
    retain = authors.splits["retain"]
    return author_labels(args.tofu, retain) if args.tofu_authors else list(dict.fromkeys(f.subject for f in retain))


def measure_cell(
    args, params, method, k, splits, retain_ratios, forget_file, token, context, evaluator: Evaluator | None = None
) -> dict:
    """One cell's row: ``method`` (or a reference model: ``target``, ``retain_model``) on the first ``k``
    forget authors, run and evaluated, its per-item results written under ``--out``. A top-level
    function of plain arguments, so that a Ray worker can run it as well as this process (a worker
    makes its own ``evaluator``)."""
    progress = not args.no_progress
    if method in ("target", "retain_model"):
        model_dir = context["target"] if method == "target" else context["retain_dir"]
        (model, tok), fields = load_model(model_dir, args.device), {"reference": True, "seconds": None}
    elif method in UNIERASE_DEPTHS:
        model, tok, fields = _unierase(
            args, params, method, context["target"], context["retain_file"], forget_file, token, k, progress
        )
        fields = {"reference": False, **fields}
    else:
        model, tok, fields = _baseline(args, params, method, context["target"], context["authors"], splits["forget"])
        fields = {"reference": False, **fields}
    items_dir = Path(args.out) / "quality_items" / f"{method}-authors{k}"
    provenance = {"method": method, "target": str(context["target"]), "forget_authors": k, "seed": args.seed}
    evaluator = evaluator or Evaluator(params, args.device, progress)
    # TOFU's text stays in ../shared/tofu: its splits' items are written with their scores only.
    text_free = set(splits) if args.tofu_authors else set(GENERAL_SPLITS) & set(splits)
    report = evaluator.evaluate(model, tok, splits, retain_ratios, items_dir, provenance, text_free)
    del model
    if method in UNIERASE_DEPTHS and not args.keep_models:
        shutil.rmtree(Path(args.work) / "runs" / f"{method}-authors{k}" / "model", ignore_errors=True)
    return {
        "method": method,
        "forget_authors": k,
        **context["sizes"][k],
        "forget_size": len(splits["forget"]),
        "forget_share": k / context["authors"].num_authors,
        **fields,
        **evaluation_fields(report),
        "leaked_items": leaked_items(report.items["forget"], args.leak_threshold),
    }


def _unierase(args, params, method, target, retain_file, forget_file, token, k, progress):
    """UniErase at the depth ``method`` names (`UNIERASE_DEPTHS`) through erase_stage, with the token learned
    once on the target and a shared statistics cache."""
    from unierase.stages.erase import erase_stage

    token_path, token_cost = token
    run_dir = Path(args.work) / "runs" / f"{method}-authors{k}"
    shutil.rmtree(run_dir, ignore_errors=True)
    # The evaluation below measures the model; the erase stage's own before-answers would only repeat it.
    erase = {"method": "unierase", "mode": "batch", "depth": UNIERASE_DEPTHS[method], "measure_before": False}
    p = params.model_copy(update={"erase": params.erase.model_copy(update=erase)})
    with measure() as m:
        report = erase_stage(
            forget_file, run_dir, p, target, retain_file, token_path, Path(args.work) / "cache", progress=progress
        )
    fields = {
        "seconds": unierase_seconds(report),
        "wall_seconds": m.seconds,
        "peak_rss_mb": m.peak_rss_mb,
        "start_rss_mb": m.start_rss_mb,
        "token_learning_seconds": token_cost["seconds"],
        "token_learning_peak_rss_mb": token_cost["peak_rss_mb"],
        "covariance_cache_hit": report["diagnostics"]["covariance"]["cache_hit"],
        "retain_subjects_cached": report["subject_methods"].get("retain_cached", {}).get("cached", 0),
        "timings_s": report["timings_s"],
        "params_changed": report["params_changed"],
        "params_changed_share": report["params_changed_share"],
        "delta_bytes": report["delta_bytes"],
    }
    return *load_model(run_dir / "model", args.device), fields


def _baseline(args, params, method, target, workload, forget):
    """A baseline on a fresh copy of the target, in memory (the whole retain split as its retain set)."""
    with measure() as wall:  # one measurement: a nested one would reset this one's memory peak
        model, tok = load_model(target, args.device)
        started = time.perf_counter()
        apply_baseline(method, model, tok, forget, workload.splits["retain"], params, not args.no_progress)
        fit_seconds = time.perf_counter() - started
    model.eval()
    reference, _ = load_model(target, args.device)
    changed = changed_parameters(dict(reference.named_parameters()), model)
    del reference
    fields = {
        "seconds": fit_seconds,
        "wall_seconds": wall.seconds,
        "peak_rss_mb": wall.peak_rss_mb,
        "start_rss_mb": wall.start_rss_mb,
        **changed,
    }
    return model, tok, fields


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    print(quality_table(run(parse_args(argv))))
    return 0


if __name__ == "__main__":
    setup_logging()
    sys.exit(main())
