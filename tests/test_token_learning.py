"""Phase I mechanics on a tiny model: only the new token rows move, tied or untied; artifacts
round-trip; the perturbation pass leaves the MLP weights exactly as they were.

    pytest tests/test_token_learning.py
"""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unierase.config import TokenConfig
from unierase.model.delta import diff_models, snapshot
from unierase.stages.artifacts import load_token, save_token
from unierase.token.cached_loss import build_token_loss_cache
from unierase.token.learning import build_anchor_examples, build_refusal_examples, learn_unlearning_token
from unierase.token.vocabulary import add_unlearning_tokens, install_unlearning_token

QUESTIONS = ["What is gravity?", "How do I boil an egg?", "Why is the sky blue?", "What is jazz?"]
ANSWERS = ["A force.", "Put it in hot water.", "Light scatters.", "A kind of music."]
FAST = TokenConfig(stage1_epochs=2, stage2_epochs=1, robust_epochs=1, batch_size=4)


def _load(path, untie: bool = False):
    model = AutoModelForCausalLM.from_pretrained(path, tie_word_embeddings=not untie)
    return model, AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("untie", [False, True])
def test_only_new_rows_change(tiny_llama_dir, untie):
    model, tokenizer = _load(tiny_llama_dir, untie)
    base = snapshot(model)
    mlps = [model.model.layers[1].mlp]
    token = learn_unlearning_token(model, tokenizer, QUESTIONS, ANSWERS, FAST, mlps, progress=False)
    delta = diff_models(base, model)
    assert delta.after == {}  # no existing value moved, MLPs included (perturbation undone)
    expected = {"model.embed_tokens.weight"} | ({"lm_head.weight"} if untie else set())
    assert set(delta.appended) == expected
    assert (token.output_rows is not None) == untie
    assert token.names == ["<unlearn_0>"] and len(token.losses) == 4
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_training_lowers_the_refusal_loss(tiny_llama_dir):
    model, tokenizer = _load(tiny_llama_dir)
    config = TokenConfig(stage1_epochs=6, stage1_lr=5e-2, stage2_epochs=0, robust_epochs=0, batch_size=4)
    token = learn_unlearning_token(model, tokenizer, QUESTIONS, ANSWERS, config, progress=False)
    assert token.losses[-1] < token.losses[0]


def test_artifact_round_trip_installs_the_same_rows(tiny_llama_dir, tmp_path):
    model, tokenizer = _load(tiny_llama_dir)
    token = learn_unlearning_token(model, tokenizer, QUESTIONS, ANSWERS, FAST, progress=False)
    save_token(token, tmp_path / "token.safetensors")
    fresh, fresh_tok = _load(tiny_llama_dir)
    ids = install_unlearning_token(fresh, fresh_tok, load_token(tmp_path / "token.safetensors"))
    assert ids == tokenizer.convert_tokens_to_ids(token.names)
    assert torch.equal(fresh.get_input_embeddings().weight, model.get_input_embeddings().weight)


def test_targets_put_loss_after_the_first_token_only(tiny_llama_dir):
    _, tokenizer = _load(tiny_llama_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<unlearn_0>"]})
    tid = tokenizer.convert_tokens_to_ids("<unlearn_0>")
    (example,) = build_refusal_examples(tokenizer, ["What is gravity?"], tid, chat=True)
    first = example.ids.index(tid)
    assert all(label == -100 for label in example.labels[: first + 1])
    assert example.labels[first + 1 :] == example.ids[first + 1 :]
    assert example.ids[-2:] == [tid, tokenizer.eos_token_id]


def test_no_questions_is_an_error(tiny_llama_dir):
    model, tokenizer = _load(tiny_llama_dir)
    with pytest.raises(ValueError, match="at least one question"):
        learn_unlearning_token(model, tokenizer, [], [], FAST)


def test_learning_is_reproducible_whatever_the_global_random_state(tiny_llama_dir):
    # transformers draws a new embedding row at random; unseeded, each process learned another token.
    rows = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        model, tokenizer = _load(tiny_llama_dir)
        rows.append(learn_unlearning_token(model, tokenizer, QUESTIONS, ANSWERS, FAST, progress=False).input_rows)
    assert torch.equal(rows[0], rows[1])
    other = FAST.model_copy(update={"seed": 1})
    model, tokenizer = _load(tiny_llama_dir)
    assert not torch.equal(learn_unlearning_token(model, tokenizer, QUESTIONS, ANSWERS, other).input_rows, rows[0])


@pytest.mark.parametrize("untie", [False, True])
def test_cached_prompts_and_anchors_learn_the_same_rows_as_whole_sequences(tiny_llama_dir, untie):
    # Every stage, the robustness pass's perturbed MLPs included: the cached path must not drift from
    # recomputing whole sequences (the default path of the model's own loss).
    learned = {}
    for cached in (True, False):
        torch.manual_seed(0)  # an untied head is drawn at random on loading
        model, tokenizer = _load(tiny_llama_dir, untie)
        config = FAST.model_copy(update={"prefix_cache": cached})
        mlps = [model.model.layers[1].mlp]
        learned[cached] = learn_unlearning_token(model, tokenizer, QUESTIONS, ANSWERS, config, mlps, progress=False)
    fast, whole = learned[True], learned[False]
    assert len(fast.losses) == len(whole.losses) == 4
    assert fast.losses == pytest.approx(whole.losses, rel=1e-4)
    assert torch.allclose(fast.input_rows, whole.input_rows, atol=1e-5)
    if untie:
        assert torch.allclose(fast.output_rows, whole.output_rows, atol=1e-5)
    model, tokenizer = _load(tiny_llama_dir, untie)
    start = model.get_input_embeddings().weight[add_unlearning_tokens(model, tokenizer, fast.names)]
    assert (fast.input_rows - start).norm() > 1e-3  # the rows moved: the comparison is not vacuous


def test_a_soft_capped_head_falls_back_to_whole_sequences(tiny_llama_dir):
    # A head whose logits are not a plain product with its rows cannot use the cached anchors: the
    # check refuses the cache (training then recomputes whole sequences); a plain head passes it.
    for capped in (False, True):
        model, tokenizer = _load(tiny_llama_dir)
        if capped:
            model.get_output_embeddings().register_forward_hook(lambda _m, _a, out: 5.0 * torch.tanh(out / 5.0))
        ids = add_unlearning_tokens(model, tokenizer, ["<unlearn_0>"])
        examples = build_refusal_examples(tokenizer, QUESTIONS, ids[0], chat=True)
        examples += build_anchor_examples(tokenizer, QUESTIONS, ANSWERS)
        cache, why = build_token_loss_cache(model, examples, ids, tokenizer.pad_token_id)
        assert (cache is None) == capped, why
        assert ("not a plain product" in why) == capped
    token = learn_unlearning_token(model, tokenizer, QUESTIONS, ANSWERS, FAST, progress=False)
    assert len(token.losses) == 3  # trained through whole sequences (no robustness pass without modules)
