"""The unlearning token in the vocabulary: its names, adding it to a model and tokenizer, installing a
learned one, and finding it again in an erased model's tokenizer."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import TokenConfig


@dataclass
class UnlearningToken:
    """A learned unlearning token (or several).

    Attributes:
        names: Token strings, e.g. ``["<unlearn_0>"]``.
        input_rows: Their input embedding rows, shape (n, hidden).
        output_rows: Their output (LM head) rows when the model does not tie them, else None.
        losses: Mean loss of each epoch, all stages in order.
        seconds: Wall time of the training.
    """

    names: list[str]
    input_rows: torch.Tensor
    output_rows: torch.Tensor | None
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def token_names(config: TokenConfig) -> list[str]:
    """The unlearning tokens' strings."""
    return [config.token_template.format(i) for i in range(config.num_tokens)]


def add_unlearning_tokens(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, names: list[str], seed: int = 0
) -> list[int]:
    """Adds the tokens as special tokens (kept out of decoded text) and grows the embeddings.

    Idempotent: tokens the tokenizer already has are not added again. New rows start near the mean of
    the existing embeddings (transformers' mean resizing draws them from a normal distribution around
    it), a neutral point for training; the draw is seeded with ``seed``, so the same model gives the
    same starting rows, and so the same learned token, in every process.

    Returns:
        The tokens' ids.
    """
    missing = [n for n in names if n not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_additional_special_tokens=False)
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return tokenizer.convert_tokens_to_ids(names)


def install_unlearning_token(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, token: UnlearningToken
) -> list[int]:
    """Adds a learned token to a model and tokenizer and writes its rows in."""
    ids = add_unlearning_tokens(model, tokenizer, token.names)
    with torch.no_grad():
        model.get_input_embeddings().weight[ids] = token.input_rows.to(model.dtype)
        out = model.get_output_embeddings()
        if token.output_rows is not None and out is not None and not is_tied(model):
            out.weight[ids] = token.output_rows.to(model.dtype)
    return ids


def is_tied(model: PreTrainedModel) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def has_unlearning_token(tokenizer: PreTrainedTokenizerBase, config: TokenConfig) -> bool:
    """True when the tokenizer already carries every unlearning token (an erased model)."""
    vocab = tokenizer.get_vocab()
    return all(name in vocab for name in token_names(config))


def unlearning_token_ids(tokenizer: PreTrainedTokenizerBase, token_template: str = "<unlearn_{}>") -> list[int]:
    """Ids of the added tokens whose names match ``token_template`` (``{}`` = a number), sorted; empty
    for a model that was never erased."""
    pattern = re.compile("^" + re.escape(token_template).replace(r"\{\}", r"\d+") + "$")
    return sorted(tid for name, tid in tokenizer.get_added_vocab().items() if pattern.match(name))


def unlearning_token_id(tokenizer: PreTrainedTokenizerBase, config: TokenConfig) -> int:
    """Id of the trigger token; an error when the tokenizer lacks it (learn or install it first)."""
    name = token_names(config)[0]
    if name not in tokenizer.get_vocab():
        raise ValueError(f"the tokenizer has no {name!r}: learn the unlearning token (Phase I) before editing")
    return tokenizer.convert_tokens_to_ids(name)
