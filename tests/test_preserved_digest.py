"""The covariance cache key hashes only what the edited layers' keys depend on."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from unierase.digests import weights_sha256

TEMPLATE = "model.layers.{}"


def test_digest_ignores_layers_above_the_edited_ones_and_nothing_below(tiny_llama_dir) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)  # 4 layers, tied embeddings
    partial, full = weights_sha256(model, TEMPLATE, 2), weights_sha256(model)

    with torch.no_grad():
        model.model.layers[3].mlp.down_proj.weight.add_(1.0)  # above layer 2: the keys cannot see it
    assert weights_sha256(model, TEMPLATE, 2) == partial
    assert weights_sha256(model) != full
    assert weights_sha256(model, TEMPLATE, 3) != partial

    for param in (model.model.layers[2].mlp.up_proj.weight, model.model.embed_tokens.weight):
        with torch.no_grad():
            param.add_(1.0)  # feeds the keys of layer 2 (the tied head is the embedding: still hashed)
        changed = weights_sha256(model, TEMPLATE, 2)
        assert changed != partial
        partial = changed


def test_digest_leaves_out_an_untied_output_head() -> None:
    from bench.gpu_scale import build_model

    model = build_model("tiny", vocab_size=100, device=torch.device("cpu"), seed=0)  # untied head
    partial, full = weights_sha256(model, TEMPLATE, 2), weights_sha256(model)
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)  # only reads the last layer's output
    assert weights_sha256(model, TEMPLATE, 2) == partial and weights_sha256(model) != full
