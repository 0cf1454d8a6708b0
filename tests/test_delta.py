"""Weight deltas: exact apply and revert, appended token rows, digest checks.

pytest tests/test_delta.py
"""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unierase.digests import file_sha256
from unierase.model.delta import apply_delta, diff_models, load_delta, revert_delta, save_delta, snapshot
from unierase.token.vocabulary import add_unlearning_tokens


@pytest.fixture
def tiny(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir), AutoTokenizer.from_pretrained(tiny_llama_dir)


def test_round_trip_restores_exact_bytes(tiny, tmp_path):
    model, tokenizer = tiny
    base = snapshot(model)
    add_unlearning_tokens(model, tokenizer, ["<unlearn_0>"])
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.add_(0.01)
        model.get_input_embeddings().weight[-1] = 0.5
    delta = diff_models(base, model, metadata={"method": "test"})
    assert set(delta.after) == {"model.layers.1.mlp.down_proj.weight"}
    assert set(delta.appended) == {"model.embed_tokens.weight"}
    assert delta.appended["model.embed_tokens.weight"].shape == (1, 64)

    digest = save_delta(delta, tmp_path / "delta.safetensors")
    assert digest == file_sha256(tmp_path / "delta.safetensors")
    loaded = load_delta(tmp_path / "delta.safetensors", expected_sha256=digest)
    assert loaded.metadata == {"method": "test"}

    edited = snapshot(model)
    revert_delta(model, loaded)
    for name, p in model.named_parameters():
        assert torch.equal(p, base[name]), name  # bit-identical to the base, rows dropped
    assert model.get_input_embeddings().weight.shape == base["model.embed_tokens.weight"].shape

    add_unlearning_tokens(model, tokenizer, ["<unlearn_0>"])
    apply_delta(model, loaded)
    for name, p in model.named_parameters():
        assert torch.equal(p, edited[name]), name


def test_tampered_delta_is_rejected(tiny, tmp_path):
    model, _ = tiny
    base = snapshot(model)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(1.1)
    digest = save_delta(diff_models(base, model), tmp_path / "d.safetensors")
    with pytest.raises(ValueError, match="does not match"):
        load_delta(tmp_path / "d.safetensors", expected_sha256="0" * 64)
    assert load_delta(tmp_path / "d.safetensors", expected_sha256=digest).names


def test_applying_to_a_model_without_the_token_rows_names_the_problem(tiny, tiny_llama_dir):
    model, tokenizer = tiny
    base = snapshot(model)
    add_unlearning_tokens(model, tokenizer, ["<unlearn_0>"])
    with torch.no_grad():
        model.get_input_embeddings().weight[-1] = 1.0
        model.model.layers[0].mlp.down_proj.weight.add_(1.0)
    delta = diff_models(base, model)
    fresh = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    untouched = snapshot(fresh)
    with pytest.raises(ValueError, match="embed_tokens"):
        apply_delta(fresh, delta)
    for name, p in fresh.named_parameters():  # nothing half-applied
        assert torch.equal(p, untouched[name]), name
