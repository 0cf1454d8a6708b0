"""UniErase's two depths side by side under every leak audit: `paper` (the questions lead to the
unlearning token) and `deep` (the true answer is also made unlikely where the token is absent).

    python -m bench.depth [--forget F.jsonl --retain R.jsonl] [--model DIR] [--set KEY=VALUE ...] [--out DIR]

Without ``--forget``/``--retain``, the built-in default request (twelve world facts the default model
knows, and the twenty-four it must keep). For each depth: `erase_stage` on the same token and
preserved-key statistics (cached under ``--work``), then `evaluate_stage` on the forget and retain sets with every leak audit
(`unierase.evaluation.leak_audits`). Writes ``depth.json`` and ``depth.md`` (one row per depth and audit:
ROUGE-L recall, items answered, novel-word recall, items leaked) under ``--out``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench._cli import common_parser, resolve_params
from bench.lib.measure import machine_info
from bench.lib.output import markdown_table, write_json, write_markdown
from unierase.config import Params

DEPTHS = ("paper", "deep")


def run_depth(depth: str, model: Path, data: Path, work: Path, cache: Path, params: Params) -> dict:
    """One depth: the erasure and the evaluation of its model; the row fields of the report."""
    from unierase.evaluation.leak_audits import AUDIT_PREFIX
    from unierase.stages.erase import erase_stage
    from unierase.stages.evaluate import evaluate_stage
    from unierase.stages.token import ensure_token_stage

    params = params.model_copy(update={"erase": params.erase.model_copy(update={"depth": depth})})
    token, _ = ensure_token_stage(model, params, cache, progress=False)
    start = time.perf_counter()
    out = work / depth
    report = erase_stage(data / "forget.jsonl", out, params, model, data / "retain.jsonl", token, cache, progress=False)
    edit_s = time.perf_counter() - start
    start = time.perf_counter()
    evaluation = json.loads(evaluate_stage(out / "model", data, out / "eval", params, progress=False).read_text())
    audits = evaluation["audits"]["forget"]
    steps = [n for request in report["diagnostics"]["value_steps"] for n in request]  # per request, per fact
    return {
        "depth": depth,
        "edit_s": edit_s,
        "evaluate_s": time.perf_counter() - start,
        "after": report["after"],
        "value_steps_per_fact": sum(steps) / len(steps),
        "forget_rougeL_recall": evaluation["splits"]["forget"]["rougeL_recall"],
        "retain_rougeL_recall": evaluation["splits"]["retain"]["rougeL_recall"],
        "audits": {a: s for a, s in audits.items() if a in AUDIT_PREFIX},
        "verdict": audits["attacks"]["verdict"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__)
    parser.add_argument("--forget", type=Path, help="forget set (JSON Lines); default: the built-in request")
    parser.add_argument("--retain", type=Path, help="retain set (JSON Lines); default: the built-in request")
    parser.add_argument(
        "--max-new-tokens", type=int, default=32, help="generation length of the erase report and the evaluation"
    )
    args = parser.parse_args(argv)
    if (args.forget is None) != (args.retain is None):
        parser.error("give both --forget and --retain, or neither (the built-in request)")
    params = resolve_params(args)
    params = params.model_copy(
        update={
            "erase": params.erase.model_copy(update={"max_new_tokens": args.max_new_tokens}),
            "evaluation": params.evaluation.model_copy(update={"max_new_tokens": args.max_new_tokens}),
        }
    )

    from unierase.data.builtin_facts import default_forget, default_retain
    from unierase.data.facts import load_facts, write_facts
    from unierase.model.default import ensure_default_model

    model = args.model or ensure_default_model()
    work = args.work / "depth"
    data = work / "data"
    write_facts(load_facts(args.forget) if args.forget else default_forget(), data / "forget.jsonl")
    write_facts(load_facts(args.retain) if args.retain else default_retain(), data / "retain.jsonl")
    rows = []
    for depth in DEPTHS:
        rows.append(run_depth(depth, Path(model), data, work, args.work / "cache", params))
        print(f"{depth}: edit {rows[-1]['edit_s']:.0f} s; {rows[-1]['verdict']}", flush=True)
    command = "python -m bench.depth " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {
        "command": command.strip(),
        "params": params.model_dump(mode="json"),
        "machine": machine_info(),
        "rows": rows,
    }
    write_json(result, args.out / "depth.json")
    summary = [
        {
            "depth": r["depth"],
            "edit_s": r["edit_s"],
            "value_steps": r["value_steps_per_fact"],
            "trigger": r["after"]["forget_token_trigger_rate"],
            "refusal_text": r["after"]["forget_refusal_text_rate"],
            "forget": r["forget_rougeL_recall"],
            "retain": r["retain_rougeL_recall"],
            "verdict": r["verdict"],
        }
        for r in rows
    ]
    audits = [
        {"depth": r["depth"], "audit": audit, **figures}
        for r in rows
        for audit, figures in r["audits"].items()
        if "skipped" not in figures
    ]
    columns = [("depth", "depth"), ("edit_s", "edit s"), ("value_steps", "value steps / fact")]
    columns += [("trigger", "token trigger"), ("refusal_text", "refusal text"), ("forget", "forget ROUGE-L")]
    columns += [("retain", "retain ROUGE-L"), ("verdict", "leak verdict")]
    audit_columns = [("depth", "depth"), ("audit", "audit"), ("rougeL_recall", "ROUGE-L"), ("num_answered", "answered")]
    audit_columns += [("novel_recall", "novel-word recall"), ("num_leaked", "leaked")]
    write_markdown(
        args.out / "depth.md",
        "UniErase's depths under the leak audits",
        [("Erasure", markdown_table(summary, columns)), ("Audits (forget set)", markdown_table(audits, audit_columns))],
        result["machine"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
