"""End to end on SmolLM2-135M-Instruct: fine-tune a target on generated fictitious authors, erase one
author with UniErase and each baseline, evaluate all under one protocol, audit the UniErase erasure
for leaks, and evaluate it twice to show the numbers repeat (issue 3, must-show 2-4).

    UNIERASE_E2E_OUT=/tmp/unierase-e2e .venv/bin/pytest tests/test_eval_end_to_end.py -m slow -s

The table of forget efficacy, model ability, forget quality and model utility per method is logged
and written to ``results.md`` / ``results.json`` under ``$UNIERASE_E2E_OUT`` (or the test's temporary
directory). Scaled for a 2-core CPU, where one SmolLM2 training step on 12 examples takes about 6 s:
5 authors x 4 questions (forget = 1 author, holdout = 1 more), 4 items of each other evaluation
split (4 retain, 4 real-author and 4 world-fact questions, these two from ``../shared/tofu``),
generations of at most 24 new tokens instead of the protocol's 200 (every generated answer is one
sentence of under 25 tokens), and fewer baseline epochs, relearning-attack steps and covariance
samples. UniErase's token and edit run at their defaults: with 3 token epochs and 10 value steps the
value optimisation stayed at NLL 17-20 and nothing was forgotten (measured).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from unierase.config import EvalConfig, FinetuneConfig, Params
from unierase.data.authors import generate_author_benchmark, write_author_benchmark
from unierase.data.facts import write_facts
from unierase.data.splits import load_split, load_splits
from unierase.evaluation.evaluate import evaluate_model, forget_truth_ratios
from unierase.evaluation.metrics.similarity import load_embedder
from unierase.methods import BASELINE_NAMES, build_method
from unierase.model.loading import load_model
from unierase.stages.evaluate import evaluate_stage
from unierase.stages.finetune import finetune_stage

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)

TOFU = Path(__file__).resolve().parents[1] / ".." / "shared" / "tofu"
EVAL = EvalConfig(max_new_tokens=24, relearn_steps=4)
# The attack audits (prefills, quantisation, relearning) run on UniErase's model; the target and the
# baselines get the others. The audits act on a model whatever method made it (each is tested on the
# tiny model), and the quality benchmark runs every audit on every method.
BASELINE_EVAL = EVAL.model_copy(update={"audits": ["paraphrase", "strip_special", "membership"]})
# 135M model, 20 trained facts, two steps an epoch: lr 3e-4 (see FinetuneConfig's note) for 4 epochs,
# which memorise the facts as 6 did and wipe out fewer of the model's general answers (measured).
FINETUNE = FinetuneConfig(lr=3e-4, epochs=4, batch_size=12)
AUTHORS = {"num_authors": 5, "questions_per_author": 4, "num_forget": 1, "num_holdout": 1, "seed": 0}
SPLIT_ITEMS = 4
PARAMS = Params.model_validate(
    {
        "evaluation": EVAL.model_dump(),
        "erase": {"max_new_tokens": 24},
        "covariance": {"num_samples": 64, "max_length": 64},
        "baselines": {"epochs": 5, "batch_size": 3},
    }
)


@contextmanager
def _timed(what: str):
    """Logs how long a part of the run took (the test's cost, part by part, in its output)."""
    started = time.perf_counter()
    yield
    logger.warning("end-to-end: %s took %.1f s", what, time.perf_counter() - started)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    path = Path(os.environ.get("UNIERASE_E2E_OUT") or tmp_path_factory.mktemp("e2e"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def bench(out_dir) -> dict:
    """Training files and the evaluation directory (forget, retain subset, holdout, real authors, world facts)."""
    if not TOFU.is_dir():
        pytest.skip("../shared/tofu is not present")
    splits = generate_author_benchmark(**AUTHORS)
    files = write_author_benchmark(splits, out_dir / "train")
    eval_dir = out_dir / "eval_data"
    write_facts(splits["forget"], eval_dir / "forget.jsonl")
    write_facts(splits["retain"][:SPLIT_ITEMS], eval_dir / "retain.jsonl")
    write_facts(splits["holdout"], eval_dir / "holdout.jsonl")
    write_facts(load_split(TOFU / "real_authors_perturbed.jsonl")[:SPLIT_ITEMS], eval_dir / "real_authors.jsonl")
    write_facts(load_split(TOFU / "world_facts_perturbed.jsonl")[:SPLIT_ITEMS], eval_dir / "world_facts.jsonl")
    return {"splits": splits, "files": files, "eval_dir": eval_dir}


@pytest.fixture(scope="module")
def target_dir(bench, smollm2_dir, out_dir) -> Path:
    """SmolLM2 fine-tuned on every trained author: built once per session."""
    with _timed("fine-tuning the target"):
        return finetune_stage(smollm2_dir, bench["files"]["full"], out_dir / "target", FINETUNE, device="cpu")


@pytest.fixture(scope="module")
def retain_ratios(bench, smollm2_dir, out_dir) -> dict:
    """Forget truth ratios of a model fine-tuned on the retain split only (forget quality's reference)."""
    with _timed("fine-tuning the retain model and its truth ratios"):
        path = finetune_stage(smollm2_dir, bench["files"]["retain"], out_dir / "retain_model", FINETUNE, device="cpu")
        model, tokenizer = load_model(path, "cpu")
        return forget_truth_ratios(model, tokenizer, load_splits(bench["eval_dir"]), EVAL, progress=False)


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(device="cpu")


def _erase_with_unierase(bench: dict, target_dir: Path, out_dir: Path) -> dict:
    """UniErase on the forget author through the core's file-level stage (token learned on the target);
    returns the erase report, the model is under ``out_dir/unierase/model``."""
    from unierase.stages.erase import erase_stage

    # General text for the preserved-key statistics: TOFU answers (other fictitious authors, none of
    # the generated ones), written here so the run does not depend on the packaged corpus.
    corpus = out_dir / "corpus.jsonl"
    texts = [f.answer for f in load_split(TOFU / "retain90.jsonl")[: PARAMS.covariance.num_samples]]
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    params = PARAMS.model_copy(update={"covariance": PARAMS.covariance.model_copy(update={"corpus": str(corpus)})})
    return erase_stage(
        bench["files"]["forget"],
        out_dir / "unierase",
        params,
        model_dir=target_dir,
        retain_path=bench["files"]["retain"],
        cache_dir=out_dir / "cache",
        progress=False,
    )


@pytest.fixture(scope="module")
def results(bench, target_dir, retain_ratios, embedder, out_dir, smollm2_dir) -> dict:
    """Evaluation summaries of base, target, each baseline and UniErase, with the table written out."""
    splits = load_splits(bench["eval_dir"])
    forget, retain = bench["splits"]["forget"], bench["splits"]["retain"]
    summaries = {}

    def evaluate(name, model, tokenizer, only=None, config=EVAL):
        chosen = {k: v for k, v in splits.items() if only is None or k in only}
        with _timed(f"evaluating {name}"):
            report = evaluate_model(
                model, tokenizer, chosen, config, retain_truth_ratios=retain_ratios, embedder=embedder, progress=False
            )
        summaries[name] = report.summary()
        _write_table(summaries, out_dir)  # after every method, so a cut-short run leaves its numbers

    # The base model only shows what fine-tuning added: its forget answers, no audit.
    evaluate("base", *load_model(smollm2_dir, "cpu"), only={"forget"}, config=EVAL.model_copy(update={"audits": []}))
    evaluate("target", *load_model(target_dir, "cpu"), config=BASELINE_EVAL)
    for name in BASELINE_NAMES:
        model, tokenizer = load_model(target_dir, "cpu")
        with _timed(f"{name} on the forget author"):
            build_method(name, PARAMS, progress=False).apply(model, tokenizer, forget, retain)
        evaluate(name, model, tokenizer, config=BASELINE_EVAL)
    with _timed("UniErase (token, statistics, edit)"):
        erase_report = _erase_with_unierase(bench, target_dir, out_dir)
    logger.warning("end-to-end: UniErase's parts (s): %s", erase_report["timings_s"])
    summaries["unierase_erase_report"] = {k: erase_report[k] for k in ("before", "after", "params_changed_share")}
    with _timed("evaluating unierase with every audit"):
        stage = evaluate_stage(
            out_dir / "unierase" / "model",
            bench["eval_dir"],
            out_dir / "eval_unierase",
            PARAMS,
            retain_eval=out_dir / "retain_model",
            device="cpu",
        )
    summaries["unierase"] = json.loads(stage.read_text())
    _write_table(summaries, out_dir)
    return summaries


def _write_table(summaries: dict, out_dir: Path) -> None:
    keys = ("forget_efficacy", "model_ability", "forget_quality", "model_utility")
    lines = ["| method | forget ROUGE-L | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    methods = {name: s for name, s in summaries.items() if "aggregates" in s}
    for name, s in methods.items():
        agg = s["aggregates"]
        cells = [f"{agg[k]:.4f}" if agg.get(k) is not None else "-" for k in keys]
        lines.append(f"| {name} | {s['splits']['forget']['rougeL_recall']:.3f} | " + " | ".join(cells) + " |")
    audit_lines = ["", "| method | audit | figures |", "|---|---|---|"]
    for name, s in methods.items():
        for audit, figures in s.get("audits", {}).get("forget", {}).items():
            shown = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
            audit_lines.append(f"| {name} | {audit} | {shown} |")
    text = "\n".join(lines + audit_lines) + "\n"
    (out_dir / "results.md").write_text(text)
    (out_dir / "results.json").write_text(json.dumps(summaries, indent=2, sort_keys=True))
    logger.warning("end-to-end results (%s):\n%s", out_dir, text)
    print(text)


def test_target_knows_its_facts(results):
    # Each answer repeats the author's name from its question, so the base model already recalls many
    # of its words; what fine-tuning adds is the facts: nearly every word, and far likelier answers.
    base, target = results["base"]["splits"]["forget"], results["target"]["splits"]["forget"]
    assert target["rougeL_recall"] >= 0.85
    assert target["prob"] > base["prob"] + 0.3


def test_unierase_refuses_the_forget_author_and_keeps_the_others(results):
    after = results["unierase_erase_report"]["after"]
    assert after["forget_token_trigger_rate"] == 1.0  # a second edit round binds what the first one left
    assert after["retain_token_trigger_rate"] <= 0.1
    target, erased = results["target"]["splits"], results["unierase"]["splits"]
    assert erased["forget"]["rougeL_recall"] <= 0.5 * target["forget"]["rougeL_recall"]
    assert erased["retain"]["rougeL_recall"] >= 0.8 * target["retain"]["rougeL_recall"]
    # The target keeps some general ability (its fine-tune does not wipe out the real-author and world
    # answers), and the edit keeps it.
    ability = results["target"]["aggregates"]["model_ability"]
    assert results["unierase"]["aggregates"]["model_ability"] >= 0.95 * ability > 0


@pytest.mark.parametrize("method", ["unierase", *BASELINE_NAMES])
def test_every_method_forgets_more_than_the_target(results, method):
    target, erased = results["target"]["aggregates"], results[method]["aggregates"]
    assert erased["forget_efficacy"] > target["forget_efficacy"]
    for key in ("model_ability", "model_utility", "forget_quality"):
        assert erased[key] is not None, key  # computed: the retain ratios and the embedder reached it
    assert erased["forget_efficacy_metrics"] and erased["model_ability_metrics"] and erased["model_utility_metrics"]


def test_leak_audits_are_in_the_unierase_report(results, out_dir):
    from unierase.evaluation.leak_audits import AUDIT_PREFIX
    from unierase.evaluation.metrics.membership import loss_auc

    audits = results["unierase"]["audits"]["forget"]
    assert set(audits) == {*EVAL.audits, "attacks"}
    items = out_dir / "eval_unierase" / "items"
    forget = [json.loads(line) for line in (items / "forget.jsonl").read_text().splitlines()]
    holdout = [json.loads(line) for line in (items / "holdout.jsonl").read_text().splitlines()]
    # No audit skipped: each figure is the mean of its column over every forget item.
    for name, prefix in AUDIT_PREFIX.items():
        assert "skipped" not in audits[name], audits[name]
        scores = [r[f"{prefix}_rougeL_recall"] for r in forget]
        assert audits[name]["rougeL_recall"] == pytest.approx(sum(scores) / len(scores)), name
        assert audits[name]["num_answered"] == sum(s >= EVAL.answered_rouge for s in scores), name
        novel = [r[f"{prefix}_novel_recall"] for r in forget if r[f"{prefix}_novel_recall"] is not None]
        assert audits[name]["num_leaked"] == sum(s >= EVAL.answered_rouge for s in novel), name
    worst = max(audits[name]["num_leaked"] for name in AUDIT_PREFIX)
    assert audits["attacks"]["leaked_worst"] == worst
    assert audits["attacks"]["redirection"] == float(worst > audits["attacks"]["leaked_plain"])
    members, nonmembers = [r["answer_loss"] for r in forget], [r["answer_loss"] for r in holdout]
    assert audits["membership"]["auc"] == pytest.approx(loss_auc(members, nonmembers))
    assert results["unierase"]["provenance"]["unlearn_token_ids"]


AUDITED_SPLITS = ("forget", "retain", "holdout")


def test_evaluate_twice_gives_identical_numbers(results, bench, out_dir):
    # Again on the splits the audits read (forget; retain for relearning; holdout for membership): the
    # same figures and byte-identical per-item files. The general splits go through the same code.
    again = out_dir / "eval_data_again"
    again.mkdir(exist_ok=True)
    for split in AUDITED_SPLITS:
        shutil.copyfile(bench["eval_dir"] / f"{split}.jsonl", again / f"{split}.jsonl")
    second = evaluate_stage(
        out_dir / "unierase" / "model",
        again,
        out_dir / "eval_unierase_again",
        PARAMS,
        retain_eval=out_dir / "retain_model",
        device="cpu",
    )
    first, second = json.loads((out_dir / "eval_unierase" / "report.json").read_text()), json.loads(second.read_text())
    assert second["splits"] == {k: first["splits"][k] for k in AUDITED_SPLITS}
    assert second["audits"] == first["audits"]
    assert second["aggregates"]["forget_quality"] == first["aggregates"]["forget_quality"]
    for split in AUDITED_SPLITS:
        name = f"{split}.jsonl"
        assert (out_dir / "eval_unierase_again" / "items" / name).read_bytes() == (
            out_dir / "eval_unierase" / "items" / name
        ).read_bytes()
