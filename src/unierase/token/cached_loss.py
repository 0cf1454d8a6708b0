"""Phase I's loss with everything the token's rows cannot change computed once per stage.

Only the unlearning token's embedding rows train. Two parts of every example cannot depend on them:

- the positions before the token's first occurrence (a refusal example's prompt): causal attention
  keeps the token out of them, so their attention keys and values are cached (`PrefixCachedStream`) and
  each step runs the model over the rest only (the token, the refusal and the closing token);
- an example without the token (an anchor: an ordinary question with the model's own answer): its
  hidden states are fixed, and the new rows act only through their own logits. Its loss at a position
  is ``logsumexp(fixed, h @ W_new) - logit(label)``, where ``h`` (the LM head's input), the
  log-sum-exp over every fixed row and the label's logit are computed once; a step costs a small
  matrix product instead of a forward and backward pass.

The loss is the same token-mean cross-entropy as the model's own over the same batches, so the rows
learned match the whole-sequence computation up to float rounding; `TokenLossCache.matches` checks it
against the model before training relies on it (an LM head with a soft cap or a logit scale, for
instance, is not a plain product, and then the whole sequences are recomputed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from unierase.model.batching import IGNORE_INDEX, pad_sequences
from unierase.model.prefix_cache import PrefixCachedStream


@dataclass
class _FixedTerms:
    """Label-bearing positions whose hidden state does not depend on the trainable rows."""

    example: torch.Tensor  # (n,) index of the example each position belongs to
    hidden: torch.Tensor  # (n, d) the LM head's input at the position
    fixed_lse: torch.Tensor  # (n,) log-sum-exp of the logits of every row that does not train
    label_logit: torch.Tensor  # (n,) the label's logit (0 where the label is a trainable row)
    label_new: torch.Tensor  # (n,) the label's index among the trainable rows, -1 when it is a fixed row


class TokenLossCache:
    """The examples of one training stage, split and cached once; `loss` gives a batch's loss."""

    def __init__(
        self, model: PreTrainedModel, examples: list, token_ids: list[int], pad_id: int, known: dict | None = None
    ):
        """``examples``: objects with ``ids`` and ``labels`` (unshifted, as for the model's own loss);
        ``token_ids``: the trainable rows; ``known``: the fixed terms of examples already seen by another
        stage with the same weights, by content (filled with this stage's)."""
        self.model, self.token_ids, self.pad_id = model, list(token_ids), pad_id
        device = next(model.parameters()).device
        self.device = device
        trainable = set(self.token_ids)
        self.cuts = [next((i for i, t in enumerate(e.ids) if t in trainable), len(e.ids)) for e in examples]
        # Label count of each example: the denominator of the model's token-mean loss.
        self.label_counts = torch.tensor([sum(x != IGNORE_INDEX for x in e.labels[1:]) for e in examples])
        self.fixed = self._fixed_terms(examples, {} if known is None else known)
        self.suffix_rows = [i for i, e in enumerate(examples) if self.cuts[i] < len(e.ids)]
        self.row_of = {example: row for row, example in enumerate(self.suffix_rows)}
        self.stream, self.suffix_ids, self.suffix_labels = self._suffix_parts(examples)

    @torch.no_grad()
    def _fixed_terms(self, examples: list, known: dict) -> _FixedTerms:
        head = self.model.get_output_embeddings()
        captured: list[torch.Tensor] = []
        hook = head.register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach()))
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("example", "hidden", "lse", "logit", "new")}
        new_index = torch.full((head.weight.shape[0],), -1, dtype=torch.long, device=self.device)
        new_index[self.token_ids] = torch.arange(len(self.token_ids), device=self.device)
        try:
            for i, (e, cut) in enumerate(zip(examples, self.cuts, strict=True)):
                # Logits at positions before the cut predict labels[1 : cut + 1].
                wanted = [t for t in range(cut) if t + 1 < len(e.labels) and e.labels[t + 1] != IGNORE_INDEX]
                if not wanted:
                    continue
                key = (tuple(e.ids[:cut]), tuple(e.labels[: cut + 1]))
                if key not in known:
                    known[key] = self._fixed_of(e, cut, wanted, captured, new_index)
                hidden, lse, new, logit = known[key]
                parts["example"].append(torch.full((len(wanted),), i, device=self.device))
                parts["hidden"].append(hidden)
                parts["lse"].append(lse)
                parts["new"].append(new)
                parts["logit"].append(logit)
        finally:
            hook.remove()
        if not parts["example"]:
            empty = torch.zeros(0, device=self.device)
            return _FixedTerms(empty.long(), empty[:, None], empty, empty, empty.long())
        cat = {k: torch.cat(v) for k, v in parts.items()}
        return _FixedTerms(cat["example"], cat["hidden"], cat["lse"], cat["logit"], cat["new"])

    def _fixed_of(
        self, e, cut: int, wanted: list[int], captured: list[torch.Tensor], new_index: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """One example's fixed terms at positions ``wanted``: LM-head inputs, log-sum-exp over the fixed
        rows, each label's index among the new rows and its logit (see `_FixedTerms`)."""
        model, head = self.model, self.model.get_output_embeddings()
        captured.clear()
        ids = torch.tensor([e.ids[:cut]], device=self.device)
        logits = model(input_ids=ids).logits[0, wanted].float()
        hidden = captured[-1][0, wanted]
        # The whole head, not only the new rows: a soft cap barely bends the small logits of a new row.
        plain = F.linear(hidden.to(head.weight.dtype), head.weight, head.bias).float()
        if not torch.allclose(plain, logits, atol=1e-3, rtol=1e-3):
            raise _NotAPlainHead(float((plain - logits).abs().max()))
        labels = torch.tensor([e.labels[t + 1] for t in wanted], device=self.device)
        fixed = logits.clone()
        fixed[:, self.token_ids] = float("-inf")
        new = new_index[labels]
        return hidden, fixed.logsumexp(-1), new, torch.where(new < 0, logits.gather(1, labels[:, None])[:, 0], 0.0)

    def _new_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The trainable rows' logits at LM-head inputs ``hidden`` (differentiable in the rows)."""
        head = self.model.get_output_embeddings()
        bias = None if head.bias is None else head.bias[self.token_ids]
        return F.linear(hidden.to(head.weight.dtype), head.weight[self.token_ids], bias).float()

    def _suffix_parts(self, examples: list) -> tuple[PrefixCachedStream | None, torch.Tensor, torch.Tensor]:
        if not self.suffix_rows:
            return None, torch.zeros(0), torch.zeros(0)
        embed = self.model.get_input_embeddings()
        with torch.no_grad():
            streams = [embed(torch.tensor(examples[i].ids, device=self.device)) for i in self.suffix_rows]
        cuts = [self.cuts[i] for i in self.suffix_rows]
        stream = PrefixCachedStream.prefix(self.model, streams, cuts)
        # The suffixes' ids and next-token labels in the stream's layout (left-padded to one width).
        width = stream.suffix.shape[1]
        ids = torch.full((len(cuts), width), self.pad_id, dtype=torch.long, device=self.device)
        labels = torch.full((len(cuts), width), IGNORE_INDEX, dtype=torch.long, device=self.device)
        for row, (i, cut) in enumerate(zip(self.suffix_rows, cuts, strict=True)):
            e = examples[i]
            n = len(e.ids) - cut
            ids[row, width - n :] = torch.tensor(e.ids[cut:], device=self.device)
            labels[row, width - n : width - 1] = torch.tensor(e.labels[cut + 1 :], device=self.device)
        return stream, ids, labels

    def loss(self, batch: list[int]) -> torch.Tensor:
        """The model's mean next-token cross-entropy over the labels of the examples ``batch``."""
        total = torch.zeros((), device=self.device)
        chosen = torch.tensor(batch, device=self.device)
        picked = torch.isin(self.fixed.example, chosen)
        if picked.any():
            new = self._new_logits(self.fixed.hidden[picked])
            label_new = self.fixed.label_new[picked]
            label_logit = torch.where(
                label_new < 0,
                self.fixed.label_logit[picked],
                new.gather(1, label_new.clamp(min=0)[:, None])[:, 0],
            )
            lse = torch.logaddexp(self.fixed.fixed_lse[picked], new.logsumexp(-1))
            total = total + (lse - label_logit).sum()
        rows = [self.row_of[i] for i in batch if i in self.row_of]
        if rows:
            rows_t = torch.tensor(rows, device=self.device)
            suffix = self.model.get_input_embeddings()(self.suffix_ids[rows_t])
            logits = self.stream.suffix_logits(self.model, suffix, rows_t).float()
            total = total + F.cross_entropy(
                logits.flatten(0, 1), self.suffix_labels[rows_t].flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            )
        return total / self.label_counts[batch].sum().clamp(min=1).to(total.device)

    @torch.no_grad()
    def matches(self, examples: list, batch: list[int], atol: float = 1e-3) -> tuple[bool, float]:
        """Whether `loss` reproduces the model's own loss on ``batch`` (right-padded whole sequences)."""
        padded = pad_sequences(
            [examples[i].ids for i in batch], self.pad_id, labels=[examples[i].labels for i in batch]
        )
        reference = float(self.model(**padded.to(self.device).model_inputs()).loss)
        got = float(self.loss(batch))
        return abs(got - reference) <= atol * max(1.0, abs(reference)), abs(got - reference)


class _NotAPlainHead(RuntimeError):
    """The LM head's logits are not a plain product with its rows (a soft cap, a scale, ...)."""

    def __init__(self, diff: float):
        super().__init__(f"the LM head's logits are not a plain product with its rows (max |diff| {diff:.2g})")


def build_token_loss_cache(
    model: PreTrainedModel, examples: list, token_ids: list[int], pad_id: int, known: dict | None = None
) -> tuple[TokenLossCache | None, str]:
    """The stage's cache when it reproduces the model's own loss, else None and the reason. ``known``:
    fixed terms shared by the stages that run on the same weights (see `TokenLossCache`)."""
    try:
        cache = TokenLossCache(model, examples, token_ids, pad_id, known)
    except _NotAPlainHead as err:
        return None, str(err)
    # A batch of the first and the last examples: each stage lists its refusal examples before its anchors.
    ok, diff = cache.matches(
        examples, sorted({*range(min(4, len(examples))), *range(max(0, len(examples) - 4), len(examples))})
    )
    if not ok:
        return None, f"the cached loss differs from the model's own by {diff:.2g}"
    return cache, ""
