"""Phase II of UniErase: an AlphaEdit edit that makes each forget prompt emit the unlearning token.

MEMIT-style key/value editing (Meng et al., 2023) of the MLP output projections of a few layers,
with AlphaEdit's null-space projection (Fang et al., 2025):

1. Values: for each request (a subject and its facts), a residual-stream vector ``z`` at the last
   edited layer, at the subject's last token, optimised so that each of its chat-formatted prompts'
   next token is the unlearning token
   (NLL + KL on the subject's meaning + weight decay, norm clamped). Each step runs only the layers
   above that one, over each prompt's suffix from the key position, with the attention states of the
   positions before it computed once (`unierase.model.prefix_cache`), in bfloat16 where the hardware
   computes it natively (``edit.value_precision``); each request stops once bound.
2. For each edited layer in turn, keys ``K`` (the projection's inputs at the subject's last token,
   averaged over prompt variants) and the residual ``R`` still missing at the last layer, spread over
   the remaining layers, give ``Δ = R Kᵀ P (K Kᵀ P + C_prev P + λI)⁻¹`` (the transpose of
   AlphaEdit's ``solve(P (K Kᵀ + C_prev) + λI, P K Rᵀ)``), with ``P`` the null-space projector of the
   preserved keys and ``C_prev`` the keys of earlier edits, which thus stay edited.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedModel

from unierase.config import EditConfig, ModelConfig
from unierase.edit.nullspace import NullSpace
from unierase.edit.state import key_block
from unierase.edit.subject import KeyedPrompt
from unierase.model.batching import pad_sequences, shared_head
from unierase.model.freezing import frozen_parameters
from unierase.model.hooks import capture_inputs, get_module, run_until_captured, weight_matrix
from unierase.model.precision import autocast_dtype
from unierase.model.prefix_cache import PrefixCachedStream, add_at_columns, cache_rows
from unierase.model.upper_layers import last_logprobs_from_stream, only_layers_above

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EditRequest:
    """One subject's facts to bind to the unlearning token through one key and one value.

    Attributes:
        variants: The facts' chat-formatted prompts with and without context prefixes, each keyed at
            the subject's last token. The first variant is the first fact's prompt as users send it.
        kl_prompt: A short ``"{subject} is"`` prompt whose next-token distribution must not move.
        target_id: The token the prompt must produce next: the unlearning token (restoring a retain
            question: the first token of its answer).
        suppressed: Deep erasure only: prompts that continue into the true answer (right after the
            question, or after an opening such as "The answer is"), each with the answer tokens that
            must become unlikely, read at its last positions (the last position predicts the last
            token), so the answer is gone when the token is banned or the answer prefilled; empty in
            the paper's mode.
        refusal: Prompts followed by the unlearning token and the first tokens of a refusal, each with
            the refusal's tokens, read at its last positions, which the value must keep at least as
            likely as the unedited model has them: binding the token must not change what follows it.
    """

    variants: list[KeyedPrompt]
    kl_prompt: KeyedPrompt
    target_id: int
    suppressed: list[tuple[KeyedPrompt, list[int]]] = field(default_factory=list)
    refusal: list[tuple[KeyedPrompt, list[int]]] = field(default_factory=list)


@dataclass
class LayerReport:
    """What the edit did to one layer (all norms Frobenius).

    Attributes:
        layer: Layer index.
        update_norm: ``‖Δ‖``.
        weight_norm: ``‖W‖`` before the edit.
        forget_key_retention: Mean ``‖P k‖ / ‖k‖`` over the forget keys: how much of them the
            projection lets the update see.
        preserved_drift: ``‖Δ K0‖ / ‖W K0‖`` on the preserved keys (from their second moment).
        preserved_drift_unprojected: The same for the edit solved without the projection (only with
            ``EditConfig.diagnose_unprojected``).
        heldout_drift: ``‖Δ K0‖ / ‖W K0‖`` on held-out general-text keys, when given.
        heldout_drift_unprojected: The same without the projection (only with ``diagnose_unprojected``).
    """

    layer: int
    update_norm: float
    weight_norm: float
    forget_key_retention: float
    preserved_drift: float
    preserved_drift_unprojected: float | None = None
    heldout_drift: float | None = None
    heldout_drift_unprojected: float | None = None


@dataclass
class EditOutcome:
    """Result of `solve_alphaedit`, with the value fields filled in by whoever computed the values.

    Attributes:
        layers: Per-layer diagnostics.
        new_keys: Layer -> ``K Kᵀ`` of this edit's keys, to add to ``C_prev`` for later edits.
        key_factors: Layer -> this edit's keys ``K`` (float64, d_in x n, on the CPU), from which
            `unierase.edit.state.key_block` makes ``new_keys``.
        value_losses: Final NLL of the target per fact after value optimisation.
        value_rounds: Optimisation rounds per fact (1 + retries, see ``EditConfig.value_retries``).
        value_steps: Optimiser steps per fact, over all its rounds.
        value_seconds: Wall time of the value optimisation.
        solve_seconds: Wall time of the closed-form solves (every layer), which grows with ``C_prev``'s use.
        unbound: After each edit round of one request, how many forget questions did not yet open with
            the target (``EditConfig.bind_rounds``); empty when nobody checked.
        retain_fired: After binding and after each restore round (``EditConfig.restore_rounds``), how many
            retain questions opened with the unlearning token; empty when nobody checked.
        unbound_after_restore: How many forget questions do not open with the target after the restore
            rounds, as the model stands (a round that leaves one the bind rounds had bound unbound, after
            its rebind, is undone); None when no restore round ran.
        held_keys: How many keys the solve held (retain facts, their answers, neighbours), before
            ``EditConfig.held_key_budget`` weighed the answers'.
        held_scale: The weight the held answer keys had in each bind round's kept solve
            (``EditConfig.held_relax``); empty when nobody searched.
    """

    layers: list[LayerReport] = field(default_factory=list)
    new_keys: dict[int, torch.Tensor] = field(default_factory=dict)
    key_factors: dict[int, torch.Tensor] = field(default_factory=dict)
    value_losses: list[float] = field(default_factory=list)
    value_rounds: list[int] = field(default_factory=list)
    value_steps: list[int] = field(default_factory=list)
    value_seconds: float = 0.0
    solve_seconds: float = 0.0
    unbound: list[int] = field(default_factory=list)
    retain_fired: list[int] = field(default_factory=list)
    unbound_after_restore: int | None = None
    held_keys: int = 0
    held_scale: list[float] = field(default_factory=list)

    def extend(self, later: EditOutcome) -> None:
        """Adds a later round of the same request: its keys join this request's keys (one block in the
        edit state), its diagnostics follow these."""
        self.layers += later.layers
        for layer, keys in later.key_factors.items():
            self.key_factors[layer] = torch.cat([self.key_factors[layer], keys], dim=1)
            self.new_keys[layer] = key_block(self.key_factors[layer])
        self.value_losses += later.value_losses
        self.value_rounds += later.value_rounds
        self.value_steps += later.value_steps
        self.value_seconds += later.value_seconds
        self.solve_seconds += later.solve_seconds
        self.held_scale += later.held_scale


@torch.no_grad()
def read_at_keys(
    model: PreTrainedModel,
    prompts: list[KeyedPrompt],
    modules: dict[int, nn.Module],
    output_of: nn.Module | None,
    pad_id: int,
    batch_size: int,
) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
    """At each prompt's key position: the input of each module (keys, ``(v, d_in)`` float64 on the
    CPU) and the output of ``output_of`` (the residual stream there, ``(v, d_model)`` float32 on the
    CPU; None without one), from one forward pass per batch that stops once both are read.

    Attention is causal, so nothing after the key position changes them: each prompt is cut there, and
    prompts are batched by length (less padding), the results returned in the prompts' order. The
    tokens every prompt starts with (the chat template's system turn) run once, their attention
    cached for every batch.
    """
    device = next(model.parameters()).device
    cut = [p.input_ids[: p.key_index + 1] for p in prompts]
    shared = shared_head(cut)
    head = DynamicCache()
    if shared:
        model.base_model(input_ids=torch.tensor([cut[0][:shared]], device=device), past_key_values=head, use_cache=True)
    order = sorted(range(len(cut)), key=lambda i: len(cut[i]))
    keys: dict[int, list[torch.Tensor]] = {layer: [] for layer in modules}
    residual: list[torch.Tensor] = []
    with capture_inputs(modules, {"out": output_of} if output_of is not None else None) as seen:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = pad_sequences([cut[i][shared:] for i in chunk], pad_id).to(device)
            width = batch.input_ids.shape[1]
            run_until_captured(
                model,
                seen,
                input_ids=batch.input_ids,
                attention_mask=torch.cat([batch.attention_mask.new_ones(len(chunk), shared), batch.attention_mask], 1),
                position_ids=torch.arange(shared, shared + width, device=device).expand(len(chunk), width),
                cache_position=torch.arange(shared, shared + width, device=device),
                past_key_values=cache_rows(head, torch.zeros(len(chunk), dtype=torch.long, device=device)),
                use_cache=True,
            )
            # Right padding: the key is each row's last real token.
            rows, last = torch.arange(len(chunk)), torch.tensor([len(cut[i]) - shared - 1 for i in chunk])
            for layer in modules:  # each on its layer's device (a model spread over several)
                held = seen[layer]
                keys[layer].append(held[rows.to(held.device), last.to(held.device)].double().cpu())
            if output_of is not None:
                held = seen["out"]
                residual.append(held[rows.to(held.device), last.to(held.device)].float().cpu())
    back = torch.empty(len(order), dtype=torch.long)
    back[torch.tensor(order)] = torch.arange(len(order))
    return (
        {layer: torch.cat(parts)[back] for layer, parts in keys.items()},
        torch.cat(residual)[back] if output_of is not None else None,
    )


def mean_over_variants(values: torch.Tensor, requests: list[EditRequest]) -> torch.Tensor:
    """Per request, the mean ``(n, d)`` float32 of its prompt variants' rows of ``values`` (``(v, d)``, in
    the order of ``[v for r in requests for v in r.variants]``), summed in float64."""
    owner = torch.tensor([r for r, req in enumerate(requests) for _ in req.variants])
    counts = torch.bincount(owner, minlength=len(requests)).double()[:, None]
    sums = torch.zeros(len(requests), values.shape[1], dtype=torch.float64).index_add_(0, owner, values.double())
    return (sums / counts).float()


def compute_keys(
    model: PreTrainedModel, requests: list[EditRequest], modules: dict[int, nn.Module], pad_id: int, batch_size: int
) -> dict[int, torch.Tensor]:
    """Keys per layer (n, d_in): each module's input at each request's key position, averaged over
    the request's prompt variants (MEMIT's context templates)."""
    keys, _ = read_at_keys(model, [v for r in requests for v in r.variants], modules, None, pad_id, batch_size)
    return {layer: mean_over_variants(k, requests) for layer, k in keys.items()}


def residual_at_keys(
    model: PreTrainedModel, requests: list[EditRequest], layer_module: nn.Module, pad_id: int
) -> torch.Tensor:
    """The residual stream (n, d_model) after ``layer_module`` at each request's key position, for
    the prompt as users send it (the first variant): where the value optimisation starts."""
    prompts = [r.variants[0] for r in requests]
    return read_at_keys(model, prompts, {}, layer_module, pad_id, max(1, len(prompts)))[1]


def compute_values(
    model: PreTrainedModel,
    requests: list[EditRequest],
    layer: int,
    config: EditConfig,
    model_config: ModelConfig,
    pad_id: int,
    progress: bool = True,
) -> tuple[torch.Tensor, list[float], list[int], list[int]]:
    """Target residual vectors (n, d_model) after ``layer``, the last edited one (MEMIT's ``compute_z``),
    with each request's final (worst-prompt) NLL, rounds and optimiser steps.

    Requests are optimised ``value_batch_size`` at a time: each has its own delta, and the summed loss
    keeps them independent. Loss per request: mean NLL of the unlearning token after each prompt
    variant, plus ``kl_factor`` x KL(original || edited) of the next token after the subject prompt,
    plus ``v_weight_decay`` x ``(‖δ‖ / ‖z₀‖)²``; ``‖δ‖`` is clamped to ``clamp_norm_factor · ‖z₀‖``.
    Requests still unbound after the reference schedule (NLL above ``value_retry_nll``) get up to
    ``value_retries`` more rounds, each continuing from its last delta with the clamp and the number of
    steps doubled.
    """
    layer_module = get_module(model, model_config.layer_template.format(layer))
    z0_all = residual_at_keys(model, requests, layer_module, pad_id)
    zs, losses, rounds, steps = [], [], [], []
    chunks = range(0, len(requests), config.value_batch_size)
    for start in tqdm(chunks, desc="edit:values", disable=not progress or len(chunks) < 2, leave=False):
        chunk = requests[start : start + config.value_batch_size]
        z0 = z0_all[start : start + len(chunk)]
        z, nll, taken = _optimise_values(model, chunk, z0, layer, config, model_config, pad_id)
        used = [1] * len(chunk)
        for retry in range(1, config.value_retries + 1):
            stuck = [i for i, x in enumerate(nll) if x > config.value_retry_nll]
            if not stuck:
                break
            wider = config.model_copy(
                update={"clamp_norm_factor": config.clamp_norm_factor * 2**retry, "v_steps": config.v_steps * 2**retry}
            )
            logger.info(
                "value round %d for %d unbound requests (NLL %s)",
                retry + 1,
                len(stuck),
                [round(nll[i], 2) for i in stuck],
            )
            picked = torch.tensor(stuck)
            retried = [chunk[i] for i in stuck]
            z_new, nll_new, taken_new = _optimise_values(
                model, retried, z0[picked], layer, wider, model_config, pad_id, z[picked] - z0[picked]
            )
            z[picked] = z_new
            for j, i in enumerate(stuck):
                nll[i], used[i], taken[i] = nll_new[j], retry + 1, taken[i] + taken_new[j]
        if unbound := [round(x, 2) for x in nll if x > config.value_retry_nll]:
            logger.warning(
                "%d requests still unbound after %d rounds (target NLL %s)", len(unbound), max(used), unbound
            )
        zs.append(z)
        losses += nll
        rounds += used
        steps += taken
    return torch.cat(zs), losses, rounds, steps


@torch.no_grad()
def _streams(
    model: PreTrainedModel, prompts: list[KeyedPrompt], layer_module: nn.Module, pad_id: int
) -> list[torch.Tensor]:
    """Each prompt's residual stream after ``layer_module``, ``(length, d_model)`` without padding: what
    the layers above see before any delta (computed once; the layers up to it never see the delta)."""
    device = next(model.parameters()).device
    batch = pad_sequences([p.input_ids for p in prompts], pad_id, side="left").to(device)
    with capture_inputs({}, {"out": layer_module}) as seen:
        run_until_captured(model, seen, **batch.model_inputs(), position_ids=batch.position_ids())
    return [seen["out"][r, shift:] for r, shift in enumerate(batch.shifts)]


@dataclass
class _WholeStream:
    """Every prompt's whole stream, left-padded: each step runs the layers above over all of it (the
    reference the prefix cache is checked against, and the fallback where that cache does not apply)."""

    stream: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    key_column: torch.Tensor

    @classmethod
    def of(cls, _model: PreTrainedModel, streams: list[torch.Tensor], key_index: list[int]) -> _WholeStream:
        """Left-pads the streams (the model is not needed: nothing is computed ahead)."""
        width, (device, dtype) = max(len(s) for s in streams), (streams[0].device, streams[0].dtype)
        stream = torch.zeros(len(streams), width, streams[0].shape[-1], device=device, dtype=dtype)
        mask = torch.zeros(len(streams), width, dtype=torch.long, device=device)
        for r, s in enumerate(streams):
            stream[r, width - len(s) :], mask[r, width - len(s) :] = s, 1
        shifts = torch.tensor([width - len(s) for s in streams], device=device)
        return cls(stream, mask, (mask.cumsum(1) - 1).clamp_min(0), shifts + torch.tensor(key_index, device=device))

    def logprobs(
        self,
        model: PreTrainedModel,
        delta: torch.Tensor,
        owner: torch.Tensor,
        rows: torch.Tensor | None = None,
        last: int = 1,
    ) -> torch.Tensor:
        if rows is None:
            rows = torch.arange(len(self.stream), device=self.stream.device)
        h = add_at_columns(self.stream[rows], self.key_column[rows], delta[owner[rows]])
        return last_logprobs_from_stream(model, h, self.mask[rows], self.positions[rows], last)


@dataclass
class _Parts:
    """Consecutive ranges of rows, each run by its own runner and read at its last ``last`` positions:
    the rewrite prompts and the short KL prompts are padded apart (together, every KL row would be
    padded to the longest rewrite suffix)."""

    parts: list[tuple[int, int, int, PrefixCachedStream | _WholeStream]]

    def logprobs(
        self, model: PreTrainedModel, delta: torch.Tensor, owner: torch.Tensor, rows: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """For each range, its rows among the ascending global ``rows`` and their log-probabilities at
        the range's last positions, ``(rows, last, vocab)`` (as the runners' `logprobs`)."""
        out = []
        for start, stop, last, runner in self.parts:
            mine = rows[(rows >= start) & (rows < stop)]
            if len(mine):
                out.append((mine, runner.logprobs(model, delta, owner[start:stop], mine - start, last)))
        return out


@dataclass
class _Reads:
    """Every token the value loss reads: its row, its distance from the row's end (0: the last position
    predicts it), the token, the request owning the row and the row's kind (0 rewrite, 1 suppressed
    answer, 2 refusal). A row can be read at several positions: an answer's tokens, teacher-forced,
    come from one pass over the whole answer rather than one row per prefix of it."""

    row: torch.Tensor
    back: torch.Tensor
    token: torch.Tensor
    owner: torch.Tensor
    kind: torch.Tensor
    count: dict[int, torch.Tensor]
    num_rows: int

    @classmethod
    def of(cls, row_tokens: list[list[int]], row_kind: list[int], owner: torch.Tensor, n: int) -> _Reads:
        """From each row's tokens (the last one predicted at the row's last position) and kind, for ``n``
        requests; ``count[kind]`` is each request's number of reads of that kind (at least 1)."""
        flat = [
            (r, len(tokens) - 1 - j, t, k)
            for r, (tokens, k) in enumerate(zip(row_tokens, row_kind, strict=True))
            for j, t in enumerate(tokens)
        ]
        row, back, token, kind = (
            torch.tensor(c, dtype=torch.long, device=owner.device) for c in zip(*flat, strict=True)
        )
        read_owner = owner[row]
        count = {k: torch.bincount(read_owner[kind == k], minlength=n).clamp_min(1) for k in range(3)}
        return cls(row, back, token, read_owner, kind, count, len(owner))

    def pick(
        self, parts: list[tuple[torch.Tensor, torch.Tensor]], active: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The log-probability of each read of the active requests, with its owner and kind, from
        `_Parts.logprobs`' ranges (global rows, ``(rows, last, vocab)``)."""
        picked, index = [], []
        for rows, logp in parts:
            slot = torch.full((self.num_rows,), -1, dtype=torch.long, device=rows.device)
            slot[rows] = torch.arange(len(rows), device=rows.device)
            mine = ((slot[self.row] >= 0) & active[self.owner]).nonzero().squeeze(1)
            picked.append(logp[slot[self.row[mine]], logp.shape[1] - 1 - self.back[mine], self.token[mine]])
            index.append(mine)
        index = torch.cat(index)
        return torch.cat(picked), self.owner[index], self.kind[index]


def _stream_runner(
    model: PreTrainedModel,
    streams: list[torch.Tensor],
    key_index: list[int],
    owner: torch.Tensor,
    bounds: list[tuple[int, int, int]],
    kl_ref: torch.Tensor,
    use_prefix_cache: bool,
) -> _Parts:
    """How each step runs the layers above the edited one: over the suffixes with the prefixes cached,
    or over whole prompts; each range of ``bounds`` (start, stop, positions read; rewrite rows,
    suppressed-answer rows, refusal rows, KL rows last) padded apart. Either way is checked, at a zero
    delta, against the full model's next-token distribution on the KL prompts."""
    bounds = [(a, b, last) for a, b, last in bounds if b > a]
    kl_start = bounds[-1][0]
    zero = torch.zeros(int(owner.max()) + 1, streams[0].shape[-1], device=streams[0].device)
    kl_rows = torch.arange(len(streams) - kl_start, device=owner.device)

    def build(kind: type[PrefixCachedStream] | type[_WholeStream]) -> tuple[_Parts, bool, float]:
        make = kind.prefix if kind is PrefixCachedStream else kind.of
        parts = _Parts([(a, b, last, make(model, streams[a:b], key_index[a:b])) for a, b, last in bounds])
        with torch.no_grad():
            got = parts.parts[-1][3].logprobs(model, zero, owner[kl_start:], kl_rows)[:, -1]
        return parts, torch.allclose(got, kl_ref, atol=1e-2, rtol=1e-2), float((got - kl_ref).abs().max())

    if use_prefix_cache:
        cached, ok, diff = build(PrefixCachedStream)
        if ok:
            return cached
        logger.warning(
            "the prefix-cached layers above the edited one do not reproduce the full model (max |diff| %.2g): "
            "recomputing whole prompts at every value step",
            diff,
        )
    whole, ok, diff = build(_WholeStream)
    if not ok:
        raise RuntimeError(
            "running the layers above the edited one from the residual stream does not reproduce the full model "
            f"(max |diff| {diff:.2g}): this architecture transforms inputs_embeds; it is not supported by the "
            "value optimisation"
        )
    return whole


def _optimise_values(
    model: PreTrainedModel,
    requests: list[EditRequest],
    z0: torch.Tensor,
    layer: int,
    config: EditConfig,
    model_config: ModelConfig,
    pad_id: int,
    init_delta: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[float], list[int]]:
    """Optimises one delta per request; returns ``z0 + delta``, each request's final target NLL (its worst
    prompt's) and the steps it took.

    Each request stops as soon as the NLL of every one of its prompts is below ``value_stop_nll`` (its
    delta then stays as it is); the others go on to ``v_steps``. Requests never interact (the loss is a
    sum of per-request terms, Adam's state is per element), so a result does not depend on the others in
    its batch.
    """
    device = next(model.parameters()).device
    n = len(requests)
    layer_module = get_module(model, model_config.layer_template.format(layer))
    rewrite = [v for req in requests for v in req.variants]
    deep = [p for req in requests for p, _ in req.suppressed]
    refusal = [p for req in requests for p, _ in req.refusal]
    kl_prompts = [req.kl_prompt for req in requests]
    # Rewrite prompts, suppressed-answer prompts, refusal prompts and the short KL prompts run through
    # the lower layers apart (together, the KL prompts would be padded to the chat prompts' length),
    # then side by side at every step.
    streams = _streams(model, rewrite, layer_module, pad_id)
    streams += _streams(model, deep, layer_module, pad_id) if deep else []
    streams += _streams(model, refusal, layer_module, pad_id) if refusal else []
    streams += _streams(model, kl_prompts, layer_module, pad_id)
    key_index = [p.key_index for p in rewrite + deep + refusal + kl_prompts]
    owner = torch.tensor(
        [r for r, req in enumerate(requests) for _ in req.variants]
        + [r for r, req in enumerate(requests) for _ in req.suppressed]
        + [r for r, req in enumerate(requests) for _ in req.refusal]
        + list(range(n)),
        device=device,
    )
    # Every token read, one per rewrite row (the unlearning token must come next), one per answer
    # token of a suppressed row (it must not) and of a refusal row (it must stay likely), each at its
    # distance from its row's end (0: the last position). The KL rows are read whole at their end.
    row_tokens = (
        [[req.target_id] for req in requests for _ in req.variants]
        + [tokens for req in requests for _, tokens in req.suppressed]
        + [tokens for req in requests for _, tokens in req.refusal]
    )
    reads = _Reads.of(row_tokens, [0] * len(rewrite) + [1] * len(deep) + [2] * len(refusal), owner, n)
    edges = list(itertools.accumulate([0, len(rewrite), len(deep), len(refusal), n]))
    # How many last positions each range is read at: one for the prompts (and the KL rows), an
    # answer's worth for the suppressed-answer and refusal rows.
    last = [max(map(len, row_tokens[a:b]), default=1) for a, b in itertools.pairwise(edges[:4])] + [1]
    bounds = [(a, b, k) for (a, b), k in zip(itertools.pairwise(edges), last, strict=True)]

    z0 = z0.to(device)
    # Adam moves each coordinate by about its lr whatever the gradient's scale, so the delta is
    # optimised in units of each residual's RMS: the same v_lr means the same relative step on any model.
    unit = (z0.norm(dim=1, keepdim=True) / z0.shape[1] ** 0.5).clamp_min(1e-12)
    start = torch.zeros_like(z0) if init_delta is None else init_delta.to(device) / unit
    scaled = start.clone().requires_grad_(True)
    delta = scaled * unit
    optimizer = torch.optim.Adam([scaled], lr=config.v_lr)
    # The clamp on ‖δ‖ (clamp_norm_factor · ‖z0‖) in those units: ‖z0‖ / unit = sqrt(d).
    max_norm = config.clamp_norm_factor * z0.shape[1] ** 0.5
    active = torch.ones(n, dtype=torch.bool, device=device)
    final = delta.detach().clone()
    nll_out = torch.zeros(n)
    steps = torch.zeros(n, dtype=torch.long)
    # Only the delta is optimised: with the weights frozen, backward computes no weight gradients.
    with frozen_parameters(model):
        with torch.no_grad():
            batch = pad_sequences([p.input_ids for p in kl_prompts], pad_id, side="left").to(device)
            out = model(**batch.model_inputs(), position_ids=batch.position_ids(), logits_to_keep=1)
            kl_ref = out.logits[:, -1].float().log_softmax(-1)
        with only_layers_above(model, model_config.layer_template, layer):
            runner = _stream_runner(model, streams, key_index, owner, bounds, kl_ref, config.value_prefix_cache)
            # The runner is checked in full precision above; the steps may run in bfloat16 (value_precision).
            step_dtype = autocast_dtype(config.value_precision, device, next(model.parameters()).dtype)
            for step in range(config.v_steps + 1):
                rows = active[owner].nonzero().squeeze(1)
                with torch.autocast(device.type, dtype=step_dtype, enabled=step_dtype is not None):
                    parts = runner.logprobs(model, delta, owner, rows)
                kl_at, kl_logp = parts[-1][0], parts[-1][1][:, -1]
                picked, read_owner, read_kind = reads.pick(parts[:-1], active)
                rw, dp, rf = read_kind == 0, read_kind == 1, read_kind == 2
                nll = torch.zeros(n, device=device).index_add(0, read_owner[rw], -picked[rw]) / reads.count[0]
                # A request stops when its worst prompt is bound: every question of the subject must fire.
                worst = torch.zeros(n, device=device).scatter_reduce(
                    0, read_owner[rw], -picked[rw].detach(), "amax", include_self=False
                )
                # Unlikelihood of each suppressed answer token, -log(1 - p): large while p is near 1,
                # near 0 once the answer is unlikely (deep erasure only; no rows in the paper's mode).
                unlikely = -torch.log1p(-picked[dp].exp().clamp(max=1 - 1e-6))
                suppress = torch.zeros(n, device=device).index_add(0, read_owner[dp], unlikely) / reads.count[1]
                refuse = torch.zeros(n, device=device).index_add(0, read_owner[rf], -picked[rf]) / reads.count[2]
                if step == 0:
                    # The level to keep: the unedited model's (Phase I's refusal), or a resumed attempt's start.
                    refuse_before = refuse.detach().clone()
                kl_owner = owner[kl_at]
                kl_each = torch.nn.functional.kl_div(kl_logp, kl_ref[kl_owner], log_target=True, reduction="none")
                kl = torch.zeros(n, device=device).index_add(0, kl_owner, kl_each.sum(-1))
                decay = (delta.norm(dim=1) / z0.norm(dim=1)) ** 2
                per_fact = (
                    nll + refuse + config.deep_weight * suppress + config.kl_factor * kl + config.v_weight_decay * decay
                )
                with torch.no_grad():
                    nll_out[active.cpu()] = worst[active].cpu()
                    reached = (
                        active
                        & (worst < config.value_stop_nll)
                        & (suppress.detach() < config.value_stop_nll)
                        & (refuse.detach() <= refuse_before)
                    )
                    final[reached] = delta.detach()[reached]
                    active &= ~reached
                if step == config.v_steps or not active.any():
                    break
                optimizer.zero_grad()
                per_fact[active].sum().backward()
                optimizer.step()
                with torch.no_grad():
                    # Adam's momentum would still move the facts that stopped: they keep their delta.
                    scaled[~active] = final[~active] / unit[~active]
                    norms = scaled.norm(dim=1, keepdim=True).clamp_min(1e-12)
                    scaled.mul_((max_norm / norms).clamp(max=1.0))
                delta = scaled * unit
                steps[active.cpu()] += 1
            with torch.no_grad():
                final[active] = delta.detach()[active]
    return (z0 + final).cpu(), [float(x) for x in nll_out], [int(x) for x in steps]


def _drift(delta: torch.Tensor, weight: torch.Tensor, cov: torch.Tensor) -> float:
    """``‖Δ K0‖ / ‖W K0‖`` from the keys' second moment ``C0 = K0 K0ᵀ / N``."""
    num = torch.trace(delta @ cov @ delta.T)
    den = torch.trace(weight @ cov @ weight.T)
    return float(torch.sqrt(num.clamp_min(0) / den))


def solve_alphaedit(
    model: PreTrainedModel,
    requests: list[EditRequest],
    zs: torch.Tensor,
    config: EditConfig,
    model_config: ModelConfig,
    null_spaces: dict[int, NullSpace],
    preserved: dict[int, torch.Tensor],
    previous_keys: dict[int, torch.Tensor] | None = None,
    protected_keys: dict[int, torch.Tensor] | None = None,
    heldout: dict[int, torch.Tensor] | None = None,
    pad_id: int = 0,
    progress: bool = True,
) -> EditOutcome:
    """The closed-form part of an AlphaEdit edit: edits ``model`` in place, layer after layer, so each
    request's residual at the last edited layer reaches its target ``zs`` (one row per request, from
    `compute_values`). The value fields of the outcome stay empty."""
    layers = sorted(config.layers)
    last_layer = get_module(model, model_config.layer_template.format(layers[-1]))
    outcome = EditOutcome()
    variants = [v for r in requests for v in r.variants]
    # Where each request's first variant (the prompt as users send it) sits among all variants.
    first = torch.tensor([0, *itertools.accumulate(len(r.variants) for r in requests)][:-1])
    for i, layer in enumerate(tqdm(layers, desc="edit:layers", disable=not progress, leave=False)):
        module = get_module(model, model_config.mlp_out_template.format(layer))
        # The solve runs in float64 where the projector lives (the model's device, see erase_facts):
        # at d_in = 14336 (Llama-3-8B) these d_in x d_in products and solves are the edit's largest.
        P = null_spaces[layer].projector.double()
        dev = P.device
        # Keys are recomputed after each layer's update: earlier edits move later layers' inputs. One
        # pass reads them and the residual still missing at the last layer, which MEMIT measures on the
        # first variant.
        keys, residual = read_at_keys(model, variants, {layer: module}, last_layer, pad_id, config.batch_size)
        K = mean_over_variants(keys[layer], requests).to(dev, torch.float64).T  # (d_in, n)
        R = ((zs - residual[first]).to(dev, torch.float64) / (len(layers) - i)).T  # (d_model, n)
        d_in = K.shape[0]
        constraint = torch.zeros(d_in, d_in, dtype=torch.float64, device=dev)
        if previous_keys and layer in previous_keys:
            constraint = constraint + previous_keys[layer].to(dev, torch.float64)
        if protected_keys and layer in protected_keys:
            constraint = constraint + protected_keys[layer].to(dev, torch.float64)
        lam = config.l2 * float(torch.trace(preserved[layer])) / d_in
        eye = torch.eye(d_in, dtype=torch.float64, device=dev)
        started = time.perf_counter()
        delta = torch.linalg.solve(P @ (K @ K.T + constraint) + lam * eye, P @ K @ R.T).T
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)  # the time of the solve, not of its launch
        outcome.solve_seconds += time.perf_counter() - started
        with torch.no_grad():
            W = weight_matrix(module)
            w_before = W.detach().to(dev, torch.float64)
            W.add_(delta.to(W.device, W.dtype))
        cov = preserved[layer].to(dev, torch.float64)
        retention = (P @ K).norm(dim=0) / K.norm(dim=0).clamp_min(1e-12)
        report = LayerReport(
            layer=layer,
            update_norm=float(delta.norm()),
            weight_norm=float(w_before.norm()),
            forget_key_retention=float(retention.mean()),
            preserved_drift=_drift(delta, w_before, cov),
        )
        held = heldout[layer].to(dev, torch.float64) if heldout and layer in heldout else None
        if held is not None:
            report.heldout_drift = _drift(delta, w_before, held)
        if config.diagnose_unprojected:
            # What the projection buys: the same solve without it (a second d_in x d_in solve, so only on request).
            free = torch.linalg.solve(K @ K.T + constraint + lam * eye, K @ R.T).T
            report.preserved_drift_unprojected = _drift(free, w_before, cov)
            if held is not None:
                report.heldout_drift_unprojected = _drift(free, w_before, held)
        outcome.layers.append(report)
        outcome.key_factors[layer] = K.cpu()
        outcome.new_keys[layer] = key_block(K)  # on the CPU: a replay of the stored K gives the same bits
    return outcome
