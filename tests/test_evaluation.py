"""Evaluation on a tiny random Llama: the protocol's probabilities against a naive reference, the
report's layout, leak audits with an added unlearning token, the stage's files and determinism.

    .venv/bin/pytest tests/test_evaluation.py -q
"""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from unierase.cli import evaluate as cli
from unierase.config import EvalConfig, Params
from unierase.data.authors import generate_author_benchmark, write_author_benchmark
from unierase.evaluation.evaluate import evaluate_model, forget_truth_ratios
from unierase.evaluation.metrics.probability import answer_token_nlls
from unierase.model.prompts import encode_answer, encode_prompt
from unierase.stages.evaluate import evaluate_stage
from unierase.token.vocabulary import unlearning_token_ids

FAST = EvalConfig(max_new_tokens=8, similarity=False)


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    return model, tokenizer


@pytest.fixture(scope="module")
def splits():
    bench = generate_author_benchmark(num_authors=3, questions_per_author=2, num_forget=1, num_holdout=1, seed=0)
    return {"forget": bench["forget"], "retain": bench["retain"], "holdout": bench["holdout"]}


def _alone(model, tokenizer, question: str, answer_text: str) -> list[float]:
    """The answer's per-token NLLs from one unbatched pass over its whole sequence, in float64."""
    prompt, answer = encode_prompt(tokenizer, question), encode_answer(tokenizer, answer_text)
    with torch.no_grad():
        logits = model(torch.tensor([prompt + answer])).logits[0]
    logp = torch.log_softmax(logits.double(), -1)
    return [-float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(answer)]


def test_batched_nll_matches_one_pair_at_a_time(tiny):
    model, tokenizer = tiny
    questions, answers = (
        ["Who wrote it?", "Where was the author Anselm Varnholt born?"],
        ["Nobody.", "In Porto, Portugal."],
    )
    batched = answer_token_nlls(model, tokenizer, questions, answers, batch_size=2, progress=False)
    for q, a, got in zip(questions, answers, batched):
        assert got == pytest.approx(_alone(model, tokenizer, q, a), abs=1e-4)


def test_answers_sharing_a_question_run_its_prompt_once_with_the_same_nlls(tiny, caplog):
    """A question scored with several answers (true, paraphrased, perturbed) runs its prompt once and
    each answer after its cached attention: the NLLs are those of each whole sequence alone."""
    model, tokenizer = tiny
    questions = ["Who wrote it?"] * 3 + ["Where was the author Anselm Varnholt born?"] * 2 + ["Why?"]
    answers = ["Nobody.", "Somebody else wrote it long ago.", "A", "In Porto, Portugal.", "Lima.", "Because."]
    with caplog.at_level("WARNING"):
        shared = answer_token_nlls(model, tokenizer, questions, answers, batch_size=4, progress=False)
    assert "scoring whole sequences" not in caplog.text  # the cached path was used
    for q, a, got in zip(questions, answers, shared):
        assert got == pytest.approx(_alone(model, tokenizer, q, a), abs=1e-4), (q, a)


def test_report_layout_and_hand_checks(tiny, splits):
    from unierase.evaluation.metrics.forget_quality import forget_quality
    from unierase.evaluation.metrics.membership import loss_auc

    model, tokenizer = tiny
    retain_ratios = {"forget": [1.0, 1.1]}
    report = evaluate_model(model, tokenizer, splits, FAST, retain_truth_ratios=retain_ratios, progress=False)
    for name in splits:
        s = report.splits[name]
        assert {"prob", "rougeL_recall", "truth_ratio", "truth_ratio_closer_to_1", "truth_ratio_true_better"} <= set(s)
        rows = report.items[name]
        assert len(rows) == len(splits[name])
        for row in rows:
            assert {"question", "generation", "prob", "rougeL_recall", "truth_ratio"} <= set(row)
        assert s["prob"] == pytest.approx(sum(r["prob"] for r in rows) / len(rows))
        assert s["token_trigger_rate"] == 0.0  # no unlearning token to open an answer
        ratios = [r["truth_ratio"] for r in rows]
        expected = (
            sum(min(r, 1 / r) for r in ratios) / len(ratios)
            if name == "forget"
            else sum(max(0, 1 - r) for r in ratios) / len(ratios)
        )
        assert s["truth_ratio"] == pytest.approx(expected)
    agg = report.aggregates
    assert agg["forget_efficacy"] == pytest.approx(
        1
        - (
            report.splits["forget"]["prob"]
            + report.splits["forget"]["rougeL_recall"]
            + report.splits["forget"]["truth_ratio_true_better"]
        )
        / 3
    )
    assert agg["forget_efficacy_metrics"] == ["forget/prob", "forget/rougeL_recall", "forget/truth_ratio_true_better"]
    assert all(m.startswith("retain/") for m in agg["model_ability_metrics"])  # holdout is not ability
    # Forget quality is the KS test of this model's forget truth ratios against the retain model's.
    ours = [r["truth_ratio"] for r in report.items["forget"]]
    assert agg["forget_quality"] == pytest.approx(forget_quality(ours, retain_ratios["forget"]))
    # No unlearning token: token audits say why they did not run; membership runs against holdout.
    audits = report.audits["forget"]
    assert "skipped" in audits["ban_token"] and "skipped" in audits["suppress_token"]
    members = [r["answer_loss"] for r in report.items["forget"]]
    nonmembers = [r["answer_loss"] for r in report.items["holdout"]]
    assert audits["membership"]["auc"] == pytest.approx(loss_auc(members, nonmembers))
    assert audits["paraphrase"]["num_items"] == len(splits["forget"])


def test_retain_model_ratios_feed_forget_quality(tiny, splits):
    model, tokenizer = tiny
    ratios = forget_truth_ratios(model, tokenizer, splits, FAST, progress=False)
    assert set(ratios) == {"forget"} and len(ratios["forget"]) == len(splits["forget"])
    report = evaluate_model(model, tokenizer, splits, FAST, retain_truth_ratios=ratios, progress=False)
    # The same model as its own retain model: identical samples, KS p-value 1.
    assert report.aggregates["forget_quality"] == pytest.approx(1.0)


def test_token_audits_with_an_unlearning_token(tiny_llama_dir, splits):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<unlearn_0>"]})
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    model.resize_token_embeddings(len(tokenizer))
    token = unlearning_token_ids(tokenizer)
    assert token == [tokenizer.convert_tokens_to_ids("<unlearn_0>")]
    assert unlearning_token_ids(tokenizer, "<forget_{}>") == []
    # Make the token the model's favourite, so every greedy answer starts with it.
    with torch.no_grad():
        model.lm_head.weight[token[0]] = model.lm_head.weight[:-1].mean(0) * 0 + 3.0
    report = evaluate_model(
        model, tokenizer, {"forget": splits["forget"]}, FAST, unlearn_token_ids=token, progress=False
    )
    audits = report.audits["forget"]
    assert audits["strip_special"]["unlearn_token_rate"] == 1.0
    rows = report.items["forget"]
    assert all("<unlearn_0>" in r["raw_generation"] for r in rows)
    # The served answers opened with the token: recorded per item and as the split's trigger rate.
    assert all(r["token_fired"] is True for r in rows)
    assert report.splits["forget"]["token_trigger_rate"] == 1.0
    assert report.splits["forget"]["refusal_text_rate"] == sum(r["refusal_text"] for r in rows) / len(rows)
    assert all("<unlearn_0>" not in r["banned_generation"] for r in rows)
    assert {"rougeL_recall", "refusal_rate"} <= set(audits["ban_token"])
    assert {"rougeL_recall", "refusal_rate"} <= set(audits["suppress_token"])
    # The logit bias is restored after the audit.
    assert model.generation_config.sequence_bias is None


def test_evaluate_stage_writes_report_and_items_and_is_deterministic(tiny_llama_dir, splits, tmp_path):
    data = tmp_path / "data"
    write_author_benchmark(splits, data)
    # Audits are covered above; here only the cheap one, to keep three evaluations quick.
    params = Params(evaluation=FAST.model_copy(update={"audits": ["membership"]}))
    first = evaluate_stage(tiny_llama_dir, data, tmp_path / "a", params, progress=False)
    # The second run goes through the CLI, with the same settings from a params file.
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"evaluation": params.evaluation.model_dump()}))
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["evaluate", "--model", str(tiny_llama_dir), "--data", str(data), "--output", str(tmp_path / "b"),
         "--params", str(tmp_path / "params.yaml"), "--device", "cpu"]
    )  # fmt: skip
    assert args.func(args) == 0
    second = tmp_path / "b" / "report.json"
    report = json.loads(first.read_text())
    assert set(report["splits"]) == {"forget", "retain", "holdout"}
    for key in ("forget_quality", "model_utility", "forget_efficacy", "model_ability"):
        assert key in report["aggregates"]
    assert report["provenance"]["data_sha256"].keys() == {"forget", "retain", "holdout"}
    rows = [json.loads(line) for line in (tmp_path / "a" / "items" / "forget.jsonl").read_text().splitlines()]
    assert len(rows) == len(splits["forget"]) and all(math.isfinite(r["truth_ratio"]) for r in rows)
    # Twice on the same model and data: byte-identical outputs (provenance names no output path).
    assert first.read_bytes() == second.read_bytes()
    for name in ("forget", "retain", "holdout"):
        assert (tmp_path / "a" / "items" / f"{name}.jsonl").read_bytes() == (
            tmp_path / "b" / "items" / f"{name}.jsonl"
        ).read_bytes()
    # A saved evaluation serves as the retain evaluation for forget quality.
    third = evaluate_stage(tiny_llama_dir, data, tmp_path / "c", params, retain_eval=tmp_path / "a", progress=False)
    assert json.loads(third.read_text())["aggregates"]["forget_quality"] == pytest.approx(1.0)


def test_similarity_with_the_offline_embedder(tiny, splits):
    from unierase.evaluation.metrics.similarity import cosine_similarities, load_embedder

    embedder = load_embedder()
    sims = cosine_similarities(
        embedder,
        ["Paris is the capital of France.", "bananas"],
        ["The capital of France is Paris.", "The capital of France is Paris."],
    )
    assert sims[0] > 0.8 and sims[1] < sims[0]
    model, tokenizer = tiny
    report = evaluate_model(
        model, tokenizer, {"retain": splits["retain"]}, EvalConfig(max_new_tokens=4), embedder=embedder, progress=False
    )
    # The split's figure is the mean over its items of the clipped cosine of generation and answer.
    rows = report.items["retain"]
    gen = embedder.encode([r["generation"] for r in rows], convert_to_tensor=True, show_progress_bar=False)
    ans = embedder.encode([r["answer"] for r in rows], convert_to_tensor=True, show_progress_bar=False)
    expected = torch.nn.functional.cosine_similarity(gen.double(), ans.double()).clamp_min(0).mean()
    assert report.splits["retain"]["cosine_similarity"] == pytest.approx(float(expected), abs=1e-5)
