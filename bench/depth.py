"""UniErase's two depths side by side under every leak audit: `paper` (the questions lead to the
unlearning token) and `deep` (the true answer is also made unlikely where the token is absent).

    python -m bench.depth [--forget F.jsonl --retain R.jsonl] [--model DIR] [--out bench/results] [--work DIR]

Without ``--forget``/``--retain``, the built-in default request (twelve world facts the default model
knows, and the twenty-four it must keep). For each depth: `erase_stage` on the same cached token and
preserved-key statistics, then `evaluate_stage` on the forget and retain sets with every leak audit
(`unierase.evaluation.leak_audits`). Writes ``depth.json`` and ``depth.md`` (one row per depth and audit:
ROUGE-L recall, items answered, novel-word recall, items leaked) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.lib.measure import machine_info
from bench.lib.output import markdown_table, write_json, write_markdown

DEPTHS = ("paper", "deep")


def run_depth(depth: str, model: Path, data: Path, work: Path, cache: Path, max_new_tokens: int) -> dict:
    """One depth: the erasure and the evaluation of its model; the row fields of the report."""
    from unierase.config import Params
    from unierase.evaluation.leak_audits import AUDIT_PREFIX
    from unierase.stages.erase import erase_stage
    from unierase.stages.evaluate import evaluate_stage
    from unierase.stages.token import ensure_token_stage

    params = Params.model_validate(
        {
            "erase": {"depth": depth, "max_new_tokens": max_new_tokens},
            "evaluation": {"max_new_tokens": max_new_tokens, "similarity": False},
        }
    )
    token, _ = ensure_token_stage(model, params, cache, progress=False)
    start = time.perf_counter()
    out = work / depth
    report = erase_stage(data / "forget.jsonl", out, params, model, data / "retain.jsonl", token, cache, progress=False)
    edit_s = time.perf_counter() - start
    start = time.perf_counter()
    evaluation = json.loads(evaluate_stage(out / "model", data, out / "eval", params, progress=False).read_text())
    audits = evaluation["audits"]["forget"]
    return {
        "depth": depth,
        "edit_s": edit_s,
        "evaluate_s": time.perf_counter() - start,
        "after": report["after"],
        "value_steps_per_fact": sum(report["diagnostics"]["value_steps"]) / len(report["diagnostics"]["value_steps"]),
        "forget_rougeL_recall": evaluation["splits"]["forget"]["rougeL_recall"],
        "retain_rougeL_recall": evaluation["splits"]["retain"]["rougeL_recall"],
        "audits": {a: s for a, s in audits.items() if a in AUDIT_PREFIX},
        "verdict": audits["attacks"]["verdict"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forget", type=Path, help="Forget set (JSON Lines); default: the built-in request.")
    parser.add_argument("--retain", type=Path, help="Retain set (JSON Lines); default: the built-in request.")
    parser.add_argument("--model", type=Path, help="Base model directory; default: the embedded SmolLM2.")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="Generation length (report and audits).")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--work", type=Path, default=Path("outputs/bench/depth"))
    args = parser.parse_args(argv)
    if (args.forget is None) != (args.retain is None):
        parser.error("give both --forget and --retain, or neither (the built-in request)")

    from unierase.data.builtin_facts import default_forget, default_retain
    from unierase.data.facts import load_facts, write_facts
    from unierase.model.default import default_cache_dir, ensure_default_model

    model = args.model or ensure_default_model()
    data = args.work / "data"
    write_facts(load_facts(args.forget) if args.forget else default_forget(), data / "forget.jsonl")
    write_facts(load_facts(args.retain) if args.retain else default_retain(), data / "retain.jsonl")
    rows = []
    for depth in DEPTHS:
        rows.append(run_depth(depth, Path(model), data, args.work, default_cache_dir(), args.max_new_tokens))
        print(f"{depth}: edit {rows[-1]['edit_s']:.0f} s; {rows[-1]['verdict']}", flush=True)
    result = {"command": "python -m bench.depth", "machine": machine_info(), "rows": rows}
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
