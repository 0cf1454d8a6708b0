"""Running the layers above an edited one over each prompt's suffix, with its prefix's attention cached.

The value optimisation (`unierase.edit.alphaedit`) adds a vector to the residual stream at one position
of each prompt: the key position. Causal attention means no position before it ever sees that vector,
so in every layer above the edited one their attention keys and values are the same at every
optimisation step. `PrefixCachedStream` computes them once (`prefix`), and each step runs only the
suffix (from the key position to the prompt's end) against them: the prompts' heads (chat template,
context opening, the question up to the subject) are no longer recomputed forwards and backwards.

Layout: each row is ``[pad][prefix]`` then ``[pad][suffix]``; both halves are left-padded, so every
key position's vector goes to the suffix's first real column and every prompt ends at the last column.
The attention mask is built here (4-D, additive) and passed to the model as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel


@dataclass
class PrefixCachedStream:
    """Residual-stream rows split at their key positions, with the prefix's cached attention states.

    Attributes:
        suffix: (rows, S, d) stream from each key position to the prompt's end, left-padded.
        suffix_valid: (rows, S) True on real suffix tokens.
        suffix_positions: (rows, S) each suffix token's position in its prompt.
        key_column: (rows,) the suffix column of each row's key position.
        prefix_valid: (rows, P) True on real prefix tokens.
        cache: Per layer index, the (keys, values) of the prefix, (rows, heads, P, head_dim).
    """

    suffix: torch.Tensor
    suffix_valid: torch.Tensor
    suffix_positions: torch.Tensor
    key_column: torch.Tensor
    prefix_valid: torch.Tensor
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]]

    @classmethod
    @torch.no_grad()
    def prefix(cls, model: PreTrainedModel, streams: list[torch.Tensor], cuts: list[int]) -> PrefixCachedStream:
        """Splits each prompt's stream (``(length, d)``, after the edited layer) at its key position
        ``cuts[i]`` and runs the layers the model holds (see `unierase.model.upper_layers`) over the
        prefixes once, keeping their attention keys and values."""
        device, dtype = streams[0].device, streams[0].dtype
        rows, d = len(streams), streams[0].shape[-1]
        p_len = max(max(cuts), 1)
        s_len = max(len(s) - c for s, c in zip(streams, cuts, strict=True))
        prefix = torch.zeros(rows, p_len, d, device=device, dtype=dtype)
        suffix = torch.zeros(rows, s_len, d, device=device, dtype=dtype)
        prefix_valid = torch.zeros(rows, p_len, dtype=torch.bool, device=device)
        suffix_valid = torch.zeros(rows, s_len, dtype=torch.bool, device=device)
        prefix_positions = torch.zeros(rows, p_len, dtype=torch.long, device=device)
        suffix_positions = torch.zeros(rows, s_len, dtype=torch.long, device=device)
        for r, (stream, cut) in enumerate(zip(streams, cuts, strict=True)):
            n_suffix = len(stream) - cut
            if cut:
                prefix[r, p_len - cut :] = stream[:cut]
                prefix_valid[r, p_len - cut :] = True
                prefix_positions[r, p_len - cut :] = torch.arange(cut, device=device)
            suffix[r, s_len - n_suffix :] = stream[cut:]
            suffix_valid[r, s_len - n_suffix :] = True
            suffix_positions[r, s_len - n_suffix :] = torch.arange(cut, len(stream), device=device)
        key_column = s_len - torch.tensor([len(s) - c for s, c in zip(streams, cuts, strict=True)], device=device)
        mask = additive_mask(prefix_valid, prefix_valid, dtype, causal_offset=0)
        past = DynamicCache()
        model(
            inputs_embeds=prefix,
            attention_mask=mask,
            position_ids=prefix_positions,
            cache_position=torch.arange(p_len, device=device),
            past_key_values=past,
            use_cache=True,
            logits_to_keep=1,
        )
        cache = {}
        for index, layer in enumerate(past.layers):
            keys = getattr(layer, "keys", None)
            if keys is not None and keys.numel():
                cache[index] = (keys, layer.values)
        return cls(suffix, suffix_valid, suffix_positions, key_column, prefix_valid, cache)

    def logprobs(
        self,
        model: PreTrainedModel,
        delta: torch.Tensor,
        owner: torch.Tensor,
        rows: torch.Tensor | None = None,
        last: int = 1,
    ) -> torch.Tensor:
        """Next-token log-probabilities ``(rows, last, vocab)`` at each prompt's last ``last`` positions
        (``rows`` of them, all by default), with ``delta[owner[r]]`` added to the stream at row ``r``'s key
        position. The positions read must lie after the key position (in the suffix)."""
        if rows is None:
            rows = torch.arange(len(self.suffix), device=self.suffix.device)
        suffix = add_at_columns(self.suffix[rows], self.key_column[rows], delta[owner[rows]])
        return self.suffix_logits(model, suffix, rows, logits_to_keep=last).float().log_softmax(-1)

    def suffix_logits(
        self, model: PreTrainedModel, suffix: torch.Tensor, rows: torch.Tensor, logits_to_keep: int = 0
    ) -> torch.Tensor:
        """The model's logits at the last ``logits_to_keep`` suffix columns (0: every column) of ``rows``,
        with ``suffix`` ``(len(rows), S, d)`` as their suffixes' input stream and the prefixes cached."""
        past = DynamicCache()
        for index, (keys, values) in self.cache.items():
            past.update(keys[rows], values[rows], index)
        p_len, s_len = self.prefix_valid.shape[1], suffix.shape[1]
        valid = torch.cat([self.prefix_valid[rows], self.suffix_valid[rows]], dim=1)
        mask = additive_mask(self.suffix_valid[rows], valid, suffix.dtype, causal_offset=p_len)
        out = model(
            inputs_embeds=suffix,
            attention_mask=mask,
            position_ids=self.suffix_positions[rows],
            cache_position=torch.arange(p_len, p_len + s_len, device=suffix.device),
            past_key_values=past,
            use_cache=True,
            logits_to_keep=logits_to_keep,
        )
        return out.logits


def add_at_columns(stream: torch.Tensor, columns: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """A copy of ``stream`` (rows, S, d) with ``vectors[r]`` added at column ``columns[r]`` of row ``r``: the
    value optimisation's delta at each prompt's key position (differentiable in ``vectors``)."""
    out = stream.clone()
    picked = torch.arange(len(out), device=out.device)
    out[picked, columns] = out[picked, columns] + vectors.to(out.dtype)
    return out


def cache_rows(past: DynamicCache, rows: torch.Tensor) -> DynamicCache:
    """A new cache holding ``rows`` of ``past``'s batch, a row as often as it is named: each answer (or
    corrupted copy) runs after its own prompt's cached attention. Layers without a cache stay empty."""
    out = DynamicCache()
    for index, layer in enumerate(past.layers):
        keys = getattr(layer, "keys", None)
        if keys is not None and keys.numel():
            out.update(keys[rows], layer.values[rows], index)
    return out


def additive_mask(
    query_valid: torch.Tensor, key_valid: torch.Tensor, dtype: torch.dtype, causal_offset: int
) -> torch.Tensor:
    """(rows, 1, queries, keys) additive mask: query column ``q`` (at column ``causal_offset + q`` of the
    keys) sees the real keys at or before its own column. A padding query sees what its column allows,
    never nothing: the most negative finite value, not -inf, keeps a fully masked row free of NaNs."""
    n_q, n_k = query_valid.shape[1], key_valid.shape[1]
    device = key_valid.device
    causal = torch.arange(n_k, device=device)[None, :] <= (torch.arange(n_q, device=device)[:, None] + causal_offset)
    allowed = causal[None] & key_valid[:, None, :]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]
