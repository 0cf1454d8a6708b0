"""What a user reads after the unlearning token, and what the edit does to the answers it must keep,
under variants of the edit.

    python -m bench.after_token [--forget F.jsonl --retain R.jsonl | --collisions N] [--variant NAME:KEY=VALUE,...] [--quotes 20]

Without ``--forget``/``--retain``, the built-in default request; ``--collisions N``: the generated
collision set (N forget authors whose names are made of the first and last names of retain authors,
`unierase.data.authors.name_collisions`), asked of the base model. Subjects are dropped, so they are
found as they are for a user's unlabelled questions. Each variant (``--set`` overrides applied to
``--params``; the default variant is the parameters as they are) erases the forget set from the base
model with the same token and preserved-key statistics (cached under ``--work``), then answers every
question greedily as served (the token gates the answer: it opens a refusal and closes it).

Per variant: the edit's seconds and value steps per key; on the forget set the trigger (first token
is the unlearning token), a refusal after it (`unierase.token.refusals.is_refusal`), empty answers,
answers that never close (no end of answer within the length limit), answers with ROUGE-L recall
>= 0.5 against the true one; on the retain set the trigger, ROUGE-L recall before and after, and
how many answers would carry a stray unlearning token mid-answer without the gate. Writes
``after_token.json`` and ``after_token.md`` (with ``--quotes`` answers per variant drawn by
``--seed``) under ``--out``.
"""

from __future__ import annotations

import random
import re
import sys
import time
from pathlib import Path
from typing import Any

from bench._cli import base_model, common_parser, resolve_params, with_sets
from bench.lib.measure import machine_info
from bench.lib.output import markdown_table, write_json, write_markdown
from unierase.config import Params
from unierase.data.facts import Fact, write_facts


def variant(text: str) -> tuple[str, list[str]]:
    """``NAME:KEY=VALUE,KEY=VALUE`` (``NAME`` alone: the parameters as they are). A comma starts the next
    setting only before ``KEY=``, so a value may be a list: ``layers:edit.layers=[8,9,10,11,12]``."""
    name, _, sets = text.partition(":")
    if not name.strip():
        raise SystemExit(f"--variant takes NAME[:KEY=VALUE,...], got {text!r}")
    return name.strip(), [s.strip() for s in re.split(r",(?=\s*[\w.]+=)", sets) if s.strip()]


def answer_rows(
    model, tokenizer, facts: list[Fact], token: int, max_new_tokens: int, after_token: str
) -> list[dict[str, Any]]:
    """Each question answered as served (``evaluation.after_token``), with what the benchmark counts, and
    whether the free continuation after the token (ungated) reads as a refusal too."""
    from unierase.evaluation.metrics.rouge import rouge_l_recall
    from unierase.model.generation import generate_answers
    from unierase.token.refusals import is_refusal, served_refusals

    served = generate_answers(
        model,
        tokenizer,
        [f.question for f in facts],
        max_new_tokens,
        stop_token_ids=[token],
        refusals=served_refusals(tokenizer, after_token),
        progress=False,
    )
    free = generate_answers(model, tokenizer, [f.question for f in facts], max_new_tokens, progress=False)
    eos = tokenizer.eos_token_id
    rows = []
    for fact, g, ungated in zip(facts, served, free, strict=True):
        fired = g.opens_with((token,))
        closed = len(g.token_ids) < max_new_tokens or g.token_ids[-1] in (eos, token)
        rows.append(
            {
                "question": fact.question,
                "answer": g.text,
                "fired": fired,
                "refusal": fired and is_refusal(g.text),
                "free_refusal": fired and is_refusal(ungated.text),
                "empty": not g.text.strip(),
                "unclosed": not closed,
                "rougeL_recall": rouge_l_recall(g.text, fact.answer),
                "stray_token": not fired and token in ungated.token_ids,
            }
        )
    return rows


def run_variant(name: str, params: Params, base: Path, forget: list[Fact], retain: list[Fact], args) -> dict:
    """One variant: a fresh base model with the token, the edit, every answer."""
    from bench.lib.runs import ensure_token
    from unierase.edit.erasure import erase_facts
    from unierase.model.loading import load_model
    from unierase.stages.artifacts import load_token
    from unierase.stages.statistics import cached_preserved_moments
    from unierase.token.vocabulary import install_unlearning_token, unlearning_token_id

    cache = args.work / "cache"
    # The retain questions are what token.domain_questions draws from (none drawn at its default, 0).
    retain_file = write_facts(retain, args.work / "after_token" / "retain.jsonl")
    token_path, _ = ensure_token(base, cache, params, not args.no_progress, retain_file)
    model, tokenizer = load_model(base, args.device)
    install_unlearning_token(model, tokenizer, load_token(token_path))
    token = unlearning_token_id(tokenizer, params.token)
    preserved, heldout, _ = cached_preserved_moments(model, tokenizer, params, cache, not args.no_progress)
    after_token = params.evaluation.after_token
    before = answer_rows(model, tokenizer, retain, token, args.max_new_tokens, after_token)
    start = time.perf_counter()
    result = erase_facts(model, tokenizer, forget, params, preserved, retain, heldout=heldout, progress=False)
    edit_s = time.perf_counter() - start
    rows = {"forget": answer_rows(model, tokenizer, forget, token, args.max_new_tokens, after_token)}
    rows["retain"] = answer_rows(model, tokenizer, retain, token, args.max_new_tokens, after_token)
    steps = result.outcome.value_steps
    fired = [r for r in rows["forget"] if r["fired"]]
    quotes = random.Random(args.seed).sample(rows["forget"], min(args.quotes, len(rows["forget"])))
    return {
        "variant": name,
        "params": params.model_dump(mode="json"),
        "edit_s": edit_s,
        "keys": len(steps),
        "value_steps_per_key": sum(steps) / len(steps),
        "forget_n": len(forget),
        "forget_fired": len(fired),
        "refusal_after_token": sum(r["refusal"] for r in fired),
        "free_refusal_after_token": sum(r["free_refusal"] for r in fired),
        "empty": sum(r["empty"] for r in rows["forget"]),
        "unclosed": sum(r["unclosed"] for r in rows["forget"]),
        "answered": sum(r["rougeL_recall"] >= 0.5 for r in rows["forget"]),
        "retain_n": len(retain),
        "retain_fired": sum(r["fired"] for r in rows["retain"]),
        "retain_rougeL_before": sum(r["rougeL_recall"] for r in before) / len(before),
        "retain_rougeL_after": sum(r["rougeL_recall"] for r in rows["retain"]) / len(retain),
        "retain_stray_token": sum(r["stray_token"] for r in rows["retain"]),
        # How the edit went: unbound forget questions and fired retain ones after each round, and the
        # weight the held keys kept in each bind round (`unierase.edit.erasure.relaxed_solve`).
        "unbound_after_round": result.outcome.unbound,
        "retain_fired_after_round": result.outcome.retain_fired,
        "held_scale": result.outcome.held_scale,
        "quotes": [{"question": r["question"], "answer": r["answer"]} for r in quotes],
        "items": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__)
    parser.add_argument("--forget", type=Path, help="forget set (JSON Lines); default: the built-in request")
    parser.add_argument("--retain", type=Path, help="retain set (JSON Lines); default: the built-in request")
    parser.add_argument(
        "--collisions",
        type=int,
        metavar="AUTHORS",
        help="instead: the generated collision set, AUTHORS forget authors each named after two of the "
        "3 x AUTHORS retain authors (first name of one, last name of another), 4 questions each",
    )
    parser.add_argument("--variant", type=variant, action="append", default=[], help="NAME[:KEY=VALUE,...]; repeatable")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit")
    parser.add_argument("--quotes", type=int, default=20, help="forget answers quoted per variant")
    parser.add_argument("--tag", default="", help="suffix of the result files (after_token{TAG}.json)")
    args = parser.parse_args(argv)
    if (args.forget is None) != (args.retain is None):
        parser.error("give both --forget and --retain, or neither (the built-in request)")
    if args.collisions is not None and (args.forget or args.collisions < 1):
        parser.error("--collisions takes a positive number of authors, and no --forget/--retain")
    params = resolve_params(args)
    variants = [(name, with_sets(params, sets)) for name, sets in args.variant or [("default", [])]]

    from unierase.data.builtin_facts import default_forget, default_retain
    from unierase.data.facts import load_facts

    def unlabelled(facts: list[Fact]) -> list[Fact]:
        return [Fact(question=f.question, answer=f.answer) for f in facts]

    if args.collisions:
        from unierase.data.authors import generate_author_benchmark

        authors = generate_author_benchmark(
            num_authors=4 * args.collisions,
            questions_per_author=4,
            num_forget=args.collisions,
            num_holdout=1,
            seed=args.seed,
            collisions=True,
        )
        forget, retain = unlabelled(authors["forget"]), unlabelled(authors["retain"])
    else:
        forget = unlabelled(load_facts(args.forget) if args.forget else default_forget())
        retain = unlabelled(load_facts(args.retain) if args.retain else default_retain())
    base = base_model(args)
    rows = []
    for name, variant_params in variants:
        rows.append(run_variant(name, variant_params, base, forget, retain, args))
        r = rows[-1]
        print(
            f"{name}: edit {r['edit_s']:.0f} s, fired {r['forget_fired']}/{r['forget_n']}, refusal "
            f"{r['refusal_after_token']} (free {r['free_refusal_after_token']}), empty {r['empty']}, retain ROUGE-L {r['retain_rougeL_after']:.3f}",
            flush=True,
        )
    command = "python -m bench.after_token " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"command": command.strip(), "machine": machine_info(), "rows": rows}
    write_json(result, args.out / f"after_token{args.tag}.json")
    columns = [("variant", "variant"), ("edit_s", "edit s"), ("value_steps_per_key", "value steps / key")]
    columns += [("forget_fired", "fired"), ("refusal_after_token", "refusal after token (served)")]
    columns += [("free_refusal_after_token", "refusal after token (free)"), ("empty", "empty")]
    columns += [("unclosed", "unclosed"), ("answered", "ROUGE-L >= 0.5"), ("retain_fired", "retain fired")]
    columns += [("retain_rougeL_before", "retain ROUGE-L before"), ("retain_rougeL_after", "retain ROUGE-L after")]
    columns += [("retain_stray_token", "retain answers with a stray token (ungated)")]
    quotes = "\n".join(f"- **{r['variant']}** {q['question']} → {q['answer']!r}" for r in rows for q in r["quotes"])
    data = f"{len(forget)} forget and {len(retain)} retain questions, subjects dropped"
    write_markdown(
        args.out / f"after_token{args.tag}.md",
        "What follows the unlearning token",
        [
            ("Command", f"`{result['command']}` ({data})"),
            ("Variants", markdown_table(rows, columns)),
            ("Quotes", quotes),
        ],
        result["machine"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
