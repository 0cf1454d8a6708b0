"""The fine-tuning baselines on a tiny Llama: each moves the forget answers the way its loss says,
the registry holds all four, and retain-term methods refuse to run without retain items.

    .venv/bin/pytest tests/test_baselines.py -q
"""

from __future__ import annotations

import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unierase.baselines.grad_ascent import grad_ascent
from unierase.baselines.grad_diff import grad_diff
from unierase.baselines.idk_sft import idk_sft
from unierase.baselines.npo import npo
from unierase.config import BaselineConfig, FinetuneConfig
from unierase.data.authors import generate_author_benchmark
from unierase.evaluation.metrics.probability import answer_token_nlls
from unierase.methods import BASELINE_NAMES
from unierase.model.delta import diff_models, snapshot
from unierase.model.finetune import finetune_model
from unierase.token.refusals import pick_refusal

CONFIG = BaselineConfig(lr=1e-3, epochs=3, batch_size=2)
BAR = re.compile(r"\d+%\|")  # what tqdm draws, e.g. ' 0%|'
BASELINES = {"grad_ascent": grad_ascent, "grad_diff": grad_diff, "npo": npo, "idk_sft": idk_sft}


@pytest.fixture(scope="module")
def data():
    bench = generate_author_benchmark(num_authors=3, questions_per_author=2, num_forget=1, num_holdout=1, seed=0)
    return bench["forget"], bench["retain"]


@pytest.fixture(scope="module")
def target_state(tiny_llama_dir, data):
    """The tiny model fine-tuned on forget + retain, so there is something to forget."""
    forget, retain = data
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    finetune_model(model, tokenizer, retain + forget, FinetuneConfig(lr=3e-3, epochs=8, batch_size=4), progress=False)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _load(tiny_llama_dir, state):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    model.load_state_dict(state)
    return model.eval(), tokenizer


def _mean_nll(model, tokenizer, facts, answers=None):
    answers = answers or [f.answer for f in facts]
    nlls = answer_token_nlls(model, tokenizer, [f.question for f in facts], answers, progress=False)
    return sum(sum(n) / len(n) for n in nlls) / len(nlls)


def test_registry_holds_the_four_baselines():
    assert set(BASELINE_NAMES) == {"grad_ascent", "grad_diff", "npo", "idk_sft"}


@pytest.mark.parametrize("name", ["grad_ascent", "grad_diff", "npo"])
def test_forgetting_baselines_raise_the_forget_loss(name, tiny_llama_dir, target_state, data):
    forget, retain = data
    model, tokenizer = _load(tiny_llama_dir, target_state)
    before_forget = _mean_nll(model, tokenizer, forget)
    before = snapshot(model)
    BASELINES[name](model, tokenizer, forget, retain, CONFIG)
    assert not model.training
    assert diff_models(before, model).names, "the baseline changed no parameter"
    after_forget = _mean_nll(model, tokenizer, forget)
    assert after_forget > before_forget + 0.5


def test_grad_diff_keeps_retain_better_than_grad_ascent(tiny_llama_dir, target_state, data):
    forget, retain = data
    losses = {}
    for name in ("grad_ascent", "grad_diff"):
        model, tokenizer = _load(tiny_llama_dir, target_state)
        BASELINES[name](model, tokenizer, forget, retain, CONFIG)
        losses[name] = _mean_nll(model, tokenizer, retain)
    assert losses["grad_diff"] < losses["grad_ascent"]


def test_idk_sft_teaches_refusals(tiny_llama_dir, target_state, data):
    forget, retain = data
    model, tokenizer = _load(tiny_llama_dir, target_state)
    refusals = [pick_refusal(f.question) for f in forget]
    before = _mean_nll(model, tokenizer, forget, refusals)
    BASELINES["idk_sft"](model, tokenizer, forget, retain, CONFIG.model_copy(update={"epochs": 8}))
    assert _mean_nll(model, tokenizer, forget, refusals) < before - 0.5


@pytest.mark.parametrize("name", ["grad_diff", "npo", "idk_sft"])
def test_retain_term_needs_retain_items(name, tiny_llama_dir, target_state, data):
    model, tokenizer = _load(tiny_llama_dir, target_state)
    with pytest.raises(ValueError, match="no retain items"):
        BASELINES[name](model, tokenizer, data[0], [], CONFIG)
    # With the retain term switched off it runs.
    BASELINES[name](model, tokenizer, data[0], [], CONFIG.model_copy(update={"retain_weight": 0.0, "epochs": 1}))


def test_same_seed_same_weights(tiny_llama_dir, target_state, data):
    forget, retain = data
    results = []
    for _ in range(2):
        model, tokenizer = _load(tiny_llama_dir, target_state)
        BASELINES["npo"](model, tokenizer, forget, retain, CONFIG.model_copy(update={"epochs": 1}))
        results.append(model.model.layers[0].mlp.down_proj.weight.detach().clone())
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_progress_false_draws_no_bar(name, tiny_llama_dir, target_state, data, capfd):
    """``--no-progress`` in the benchmarks reaches the baselines' step bar (it once did not)."""
    forget, retain = data
    one_epoch = CONFIG.model_copy(update={"epochs": 1})
    model, tokenizer = _load(tiny_llama_dir, target_state)
    BASELINES[name](model, tokenizer, forget, retain, one_epoch, progress=False)
    assert not BAR.search(capfd.readouterr().err)
    BASELINES[name](model, tokenizer, forget, retain, one_epoch, progress=True)
    assert BAR.search(capfd.readouterr().err)
