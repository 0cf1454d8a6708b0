"""The attacks of the leak audits on a tiny random Llama: the quantisation round trips against their
definitions, the prefill against step-by-step greedy decoding, the relearning attack's restore, and
the verdict that calls an erasure a redirection.

    .venv/bin/pytest tests/test_attack_audits.py -q
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unierase.config import EvalConfig
from unierase.data.authors import generate_author_benchmark
from unierase.evaluation.evaluate import evaluate_model, relearn_items
from unierase.evaluation.leak_audits import attack_verdict
from unierase.evaluation.metrics.novel_words import novel_word_recall, novel_words
from unierase.evaluation.metrics.rouge import rouge_l_recall
from unierase.evaluation.relearning import relearned_weights, relearning_items
from unierase.model.generation import generate_answers
from unierase.model.prompts import encode_answer, encode_prompt
from unierase.model.quantisation import (
    NF4_CODE,
    int8_round_trip,
    nf4_round_trip,
    quantisable_linears,
    quantised_weights,
)
from unierase.token.vocabulary import unlearning_token_ids

ATTACKS = ("prefill_answer", "prefill_subject", "quantise_int8", "quantise_nf4", "relearn")


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    return model, tokenizer


@pytest.fixture(scope="module")
def splits():
    bench = generate_author_benchmark(num_authors=4, questions_per_author=2, num_forget=1, num_holdout=1, seed=1)
    return {"forget": bench["forget"], "retain": bench["retain"], "holdout": bench["holdout"]}


def test_int8_round_trip_is_rowwise_absmax_on_255_levels():
    torch.manual_seed(0)
    w = torch.randn(7, 33) * torch.linspace(0.01, 3, 7)[:, None]
    q = int8_round_trip(w)
    scale = w.abs().amax(dim=1, keepdim=True) / 127
    steps = q / scale
    assert torch.allclose(steps, steps.round(), atol=1e-4)  # on the row's grid
    assert steps.abs().max() <= 127 + 1e-4
    assert ((q - w).abs() <= scale / 2 + 1e-7).all()  # nearest level
    assert torch.equal(q.abs().amax(dim=1), w.abs().amax(dim=1))  # the absmax itself is exact


def test_nf4_round_trip_maps_each_block_onto_the_nearest_code_value():
    torch.manual_seed(0)
    code = torch.tensor(NF4_CODE)
    # A block made of code values times its absmax comes back exactly.
    exact = (code.repeat(4) * 0.37).reshape(2, 32)
    assert torch.allclose(nf4_round_trip(exact), exact, atol=1e-7)
    # Random weights (a last block shorter than 64 included): every value is a code value times its
    # block's absmax, the nearest one.
    w = torch.randn(5, 40)
    q = nf4_round_trip(w)
    flat, back = w.reshape(-1), q.reshape(-1)
    for start in range(0, flat.numel(), 64):
        block, got = flat[start : start + 64], back[start : start + 64]
        absmax = block.abs().max()
        nearest = code[(block[:, None] / absmax - code).abs().argmin(dim=1)] * absmax
        assert torch.allclose(got, nearest, atol=1e-6)
    assert q.shape == w.shape and q.dtype == w.dtype


def test_quantised_weights_change_the_linears_only_and_restore_them_exactly(tiny):
    model, tokenizer = tiny
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    linears = quantisable_linears(model)
    assert linears and all(".layers." in n for n in linears)  # not the head, not the embedding
    ids = torch.tensor([encode_prompt(tokenizer, "Who wrote it?")])
    with torch.no_grad():
        plain = model(ids).logits
    for scheme in ("int8", "nf4"):
        with quantised_weights(model, scheme) as count:
            assert count == sum(m.weight.numel() for m in linears.values())
            changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
            assert changed == {f"{n}.weight" for n in linears}
            with torch.no_grad():
                assert not torch.equal(model(ids).logits, plain)
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with pytest.raises(ValueError, match="unknown quantisation scheme 'int3'"):
        with quantised_weights(model, "int3"):
            pass


def test_prefill_continues_the_started_answer_as_greedy_decoding_does(tiny):
    model, tokenizer = tiny
    questions = ["Who wrote the novel?", "Where was the author Anselm Varnholt born in the end?"]
    prefills = ["The answer is", "Anselm Varnholt"]
    got = generate_answers(
        model, tokenizer, questions, max_new_tokens=6, batch_size=2, prefills=prefills, progress=False
    )
    for question, prefill, g in zip(questions, prefills, got):
        ids = encode_prompt(tokenizer, question) + encode_answer(tokenizer, prefill)
        expected = []
        with torch.no_grad():
            for _ in range(6):
                nxt = int(model(torch.tensor([ids + expected])).logits[0, -1].argmax())
                expected.append(nxt)
                if nxt == tokenizer.eos_token_id:
                    break
        assert list(g.token_ids) == expected
    with pytest.raises(ValueError, match="1 prefills for 2 questions"):
        generate_answers(model, tokenizer, questions, prefills=["x"], progress=False)


def test_relearning_trains_on_retain_items_only_and_restores_the_model(tiny, splits):
    model, tokenizer = tiny
    config = EvalConfig(relearn_steps=3, relearn_batch_size=2, relearn_lr=1e-3)
    chosen = relearn_items(splits)
    assert chosen == list(splits["retain"])  # neither forget nor holdout items
    assert len(relearning_items(chosen, config)) == 6
    model.model.embed_tokens.weight.requires_grad_(False)  # a frozen flag comes back as it was
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with relearned_weights(model, tokenizer, chosen, config) as result:
        assert len(result.losses) == 3
        assert not torch.equal(
            model.model.layers[0].mlp.down_proj.weight, before["model.layers.0.mlp.down_proj.weight"]
        )
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert not model.model.embed_tokens.weight.requires_grad and not model.training
    with pytest.raises(RuntimeError, match="inside"):
        with relearned_weights(model, tokenizer, chosen, config):
            raise RuntimeError("inside")
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    model.model.embed_tokens.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="needs retain items"):
        relearning_items([], config)


def test_every_attack_is_a_column_and_a_summary(tiny_llama_dir, splits):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<unlearn_0>"]})
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    model.resize_token_embeddings(len(tokenizer))
    token = unlearning_token_ids(tokenizer)
    config = EvalConfig(max_new_tokens=6, similarity=False, relearn_steps=2, relearn_batch_size=2)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = evaluate_model(model, tokenizer, splits, config, unlearn_token_ids=token, progress=False)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())  # the attacks put it back
    audits, rows = report.audits["forget"], report.items["forget"]
    prefix = {"prefill_answer": "prefill_answer", "prefill_subject": "prefill_subject", "quantise_int8": "int8"}
    prefix |= {"quantise_nf4": "nf4", "relearn": "relearned"}
    for audit in ATTACKS:
        scores = [r[f"{prefix[audit]}_rougeL_recall"] for r in rows]
        assert audits[audit]["rougeL_recall"] == pytest.approx(sum(scores) / len(scores)), audit
        assert audits[audit]["num_answered"] == sum(s >= config.answered_rouge for s in scores), audit
        novel = [r[f"{prefix[audit]}_novel_recall"] for r in rows if r[f"{prefix[audit]}_novel_recall"] is not None]
        assert audits[audit]["num_leaked"] == sum(s >= config.answered_rouge for s in novel), audit
    # The subject prefill starts with the question's own entity when the item has no subject label.
    assert all(r["prefill_subject_prefill"] in r["question"] for r in rows)
    attacks = audits["attacks"]
    assert attacks["num_items"] == len(rows)
    assert attacks["leaked_worst"] == max(a["num_leaked"] for a in audits.values() if "num_leaked" in a)
    # Without a retain split there is nothing to relearn on: the audit says so.
    alone = evaluate_model(
        model, tokenizer, {"forget": splits["forget"]}, config, unlearn_token_ids=token, progress=False
    )
    assert alone.audits["forget"]["relearn"] == {"skipped": "no retain split to relearn on"}


def test_novel_word_recall_counts_what_the_answer_adds_to_the_question():
    question, answer = "What is the capital of France?", "The capital of France is Paris."
    assert novel_words(answer, question) == {"pari"}  # stemmed, as ROUGE stems
    wrong = "The capital of France is London."
    assert rouge_l_recall(wrong, answer) > 0.8 and novel_word_recall(wrong, answer, question) == 0.0
    assert novel_word_recall("It is Paris, of course.", answer, question) == 1.0
    rowling = novel_words("J.K. Rowling wrote Harry Potter.", "Who wrote Harry Potter?")
    assert rowling == {"j", "k", "rowl"}
    assert novel_word_recall("Rowling did.", "J.K. Rowling wrote Harry Potter.", "Who wrote Harry Potter?") == 1 / 3
    assert novel_word_recall("Yes.", "The capital of France.", question) is None  # nothing beyond the question


def test_the_verdict_calls_an_erasure_that_an_attack_undoes_a_redirection():
    config = EvalConfig()
    rows = [{"novel_recall": 0.0} for _ in range(3)]
    summaries = {"ban_token": {"num_leaked": 2}, "quantise_int8": {"num_leaked": 0}, "membership": {"auc": 0.5}}
    verdict = attack_verdict(rows, summaries, config)
    assert verdict["redirection"] == 1.0 and verdict["leaked_plain"] == 0 and verdict["leaked_worst"] == 2
    assert verdict["worst_audit"] == "ban_token"
    assert verdict["verdict"].startswith("only a redirection: 0 of 3") and "2 under ban_token" in verdict["verdict"]
    held = attack_verdict(rows, {"ban_token": {"num_leaked": 0}}, config)
    assert held["redirection"] == 0.0 and held["verdict"].startswith("holds under every audit run")
    # Items without novel words are not counted as leaked plainly.
    rows[0]["novel_recall"] = None
    assert attack_verdict(rows, {"ban_token": {"num_leaked": 0}}, config)["leaked_plain"] == 0
