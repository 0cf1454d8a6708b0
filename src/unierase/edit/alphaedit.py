"""Phase II of UniErase: an AlphaEdit edit that makes each forget prompt emit the unlearning token.

MEMIT-style key/value editing (Meng et al., 2023) of the MLP output projections of a few layers,
with AlphaEdit's null-space projection (Fang et al., 2025):

1. Values: for each fact, a residual-stream vector ``z`` at the last edited layer, at the subject's
   last token, optimised so that the chat-formatted prompt's next token is the unlearning token
   (NLL + KL on the subject's meaning + weight decay, norm clamped).
2. For each edited layer in turn, keys ``K`` (the projection's inputs at the subject's last token,
   averaged over prompt variants) and the residual ``R`` still missing at the last layer, spread over
   the remaining layers, give ``Δ = R Kᵀ P (K Kᵀ P + C_prev P + λI)⁻¹`` (the transpose of
   AlphaEdit's ``solve(P (K Kᵀ + C_prev) + λI, P K Rᵀ)``), with ``P`` the null-space projector of the
   preserved keys and ``C_prev`` the keys of earlier edits, which thus stay edited.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from unierase.config import EditConfig, ModelConfig
from unierase.edit.nullspace import NullSpace
from unierase.edit.state import key_block
from unierase.edit.subject import KeyedPrompt
from unierase.model.batching import pad_sequences
from unierase.model.freezing import frozen_parameters
from unierase.model.hooks import _StopForward, capture_inputs, get_module, run_until_captured, weight_matrix
from unierase.model.upper_layers import last_logprobs_from_stream, only_layers_above

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EditRequest:
    """One fact to bind to the unlearning token.

    Attributes:
        variants: The chat-formatted prompt with and without context prefixes, each keyed at the
            subject's last token. The first variant is the prompt as users send it.
        kl_prompt: A short ``"{subject} is"`` prompt whose next-token distribution must not move.
        target_id: The token the prompt must produce next: the unlearning token.
    """

    variants: list[KeyedPrompt]
    kl_prompt: KeyedPrompt
    target_id: int


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
        preserved_drift_unprojected: The same for the edit solved without the projection.
        heldout_drift: ``‖Δ K0‖ / ‖W K0‖`` on held-out general-text keys, when given.
        heldout_drift_unprojected: The same without the projection.
    """

    layer: int
    update_norm: float
    weight_norm: float
    forget_key_retention: float
    preserved_drift: float
    preserved_drift_unprojected: float
    heldout_drift: float | None = None
    heldout_drift_unprojected: float | None = None


@dataclass
class EditOutcome:
    """Result of `apply_alphaedit`.

    Attributes:
        layers: Per-layer diagnostics.
        new_keys: Layer -> ``K Kᵀ`` of this edit's keys, to add to ``C_prev`` for later edits.
        key_factors: Layer -> this edit's keys ``K`` (float64, d_in x n, on the CPU), from which
            `unierase.edit.state.key_block` makes ``new_keys``.
        value_losses: Final NLL of the target per fact after value optimisation.
        value_rounds: Optimisation rounds per fact (1 + retries, see ``EditConfig.value_retries``).
    """

    layers: list[LayerReport] = field(default_factory=list)
    new_keys: dict[int, torch.Tensor] = field(default_factory=dict)
    key_factors: dict[int, torch.Tensor] = field(default_factory=dict)
    value_losses: list[float] = field(default_factory=list)
    value_rounds: list[int] = field(default_factory=list)


@torch.no_grad()
def compute_keys(
    model: PreTrainedModel, requests: list[EditRequest], modules: dict[int, nn.Module], pad_id: int, batch_size: int
) -> dict[int, torch.Tensor]:
    """Keys per layer (n, d_in): each module's input at each request's key position, averaged over
    the request's prompt variants. One forward pass (stopped at the last module) serves every layer."""
    device = next(model.parameters()).device
    flat = [(r, v) for r, req in enumerate(requests) for v in req.variants]
    sums: dict[int, torch.Tensor] = {}
    counts = torch.zeros(len(requests), dtype=torch.float64)
    with capture_inputs(modules) as seen:
        for start in range(0, len(flat), batch_size):
            chunk = flat[start : start + batch_size]
            batch = pad_sequences([v.input_ids for _, v in chunk], pad_id).to(device)
            run_until_captured(model, seen, **batch.model_inputs())
            rows = torch.arange(len(chunk))
            positions = torch.tensor([v.key_index for _, v in chunk])
            owners = torch.tensor([r for r, _ in chunk])
            for layer, inputs in seen.items():
                picked = inputs[rows.to(inputs.device), positions.to(inputs.device)].double().cpu()
                sums.setdefault(layer, torch.zeros(len(requests), inputs.shape[-1], dtype=torch.float64))
                sums[layer].index_add_(0, owners, picked)
            counts.index_add_(0, torch.tensor([r for r, _ in chunk]), torch.ones(len(chunk), dtype=torch.float64))
    return {layer: (total / counts[:, None]).float() for layer, total in sums.items()}


@torch.no_grad()
def residual_at_keys(
    model: PreTrainedModel, requests: list[EditRequest], layer_module: nn.Module, pad_id: int
) -> torch.Tensor:
    """The residual stream (n, d_model) after ``layer_module`` at each request's key position, for
    the prompt as users send it (the first variant), as MEMIT measures what is still missing."""
    device = next(model.parameters()).device
    prompts = [r.variants[0] for r in requests]
    batch = pad_sequences([p.input_ids for p in prompts], pad_id).to(device)
    with _capture_output(layer_module) as seen:
        run_until_captured(model, seen, **batch.model_inputs())
    h = seen["out"]
    return torch.stack([h[i, p.key_index] for i, p in enumerate(prompts)]).float().cpu()


def _hidden(output: torch.Tensor | tuple) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def _capture_output(module: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Records a module's output, then stops the forward pass (see `run_until_captured`)."""
    seen: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _args: tuple, out: torch.Tensor | tuple) -> None:
        seen["out"] = _hidden(out).detach()
        raise _StopForward

    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def compute_values(
    model: PreTrainedModel,
    requests: list[EditRequest],
    layer: int,
    config: EditConfig,
    model_config: ModelConfig,
    pad_id: int,
    progress: bool = True,
) -> tuple[torch.Tensor, list[float], list[int]]:
    """Target residual vectors (n, d_model) after ``layer``, the last edited one (MEMIT's ``compute_z``).

    Facts are optimised ``value_batch_size`` at a time: each has its own delta, and the summed loss
    keeps them independent. Loss per fact: mean NLL of the unlearning token after each prompt
    variant, plus ``kl_factor`` x KL(original || edited) of the next token after the subject prompt,
    plus ``v_weight_decay`` x ``(‖δ‖ / ‖z₀‖)²``; ``‖δ‖`` is clamped to ``clamp_norm_factor · ‖z₀‖``.
    Facts still unbound after the reference schedule (NLL above ``value_retry_nll``) get up to
    ``value_retries`` more rounds, each continuing from its last delta with the clamp and the number of
    steps doubled.
    """
    layer_module = get_module(model, model_config.layer_template.format(layer))
    z0_all = residual_at_keys(model, requests, layer_module, pad_id)
    zs, losses, rounds = [], [], []
    chunks = range(0, len(requests), config.value_batch_size)
    for start in tqdm(chunks, desc="edit:values", disable=not progress or len(chunks) < 2, leave=False):
        chunk = requests[start : start + config.value_batch_size]
        z0 = z0_all[start : start + len(chunk)]
        z, nll = _optimise_values(model, chunk, z0, layer, config, model_config, pad_id)
        used = [1] * len(chunk)
        for retry in range(1, config.value_retries + 1):
            stuck = [i for i, x in enumerate(nll) if x > config.value_retry_nll]
            if not stuck:
                break
            wider = config.model_copy(
                update={"clamp_norm_factor": config.clamp_norm_factor * 2**retry, "v_steps": config.v_steps * 2**retry}
            )
            logger.info(
                "value round %d for %d unbound facts (NLL %s)", retry + 1, len(stuck), [round(nll[i], 2) for i in stuck]
            )
            picked = torch.tensor(stuck)
            retried = [chunk[i] for i in stuck]
            z_new, nll_new = _optimise_values(
                model, retried, z0[picked], layer, wider, model_config, pad_id, z[picked] - z0[picked]
            )
            z[picked] = z_new
            for j, i in enumerate(stuck):
                nll[i], used[i] = nll_new[j], retry + 1
        if unbound := [round(x, 2) for x in nll if x > config.value_retry_nll]:
            logger.warning("%d facts still unbound after %d rounds (target NLL %s)", len(unbound), max(used), unbound)
        zs.append(z)
        losses += nll
        rounds += used
    return torch.cat(zs), losses, rounds


@dataclass
class _Group:
    """Left-padded prompts with their residual stream after the edited layer, computed once (it does not
    depend on delta), and which fact's delta goes where."""

    ids: torch.Tensor
    stream: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    key_pos: torch.Tensor
    owner: torch.Tensor

    def with_delta(self, delta: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(self.owner), device=self.stream.device)
        h = self.stream.clone()
        h[rows, self.key_pos] = h[rows, self.key_pos] + delta[self.owner].to(h.dtype)
        return h


@torch.no_grad()
def _group(model: PreTrainedModel, prompts: list[KeyedPrompt], owner: list[int], layer_module: nn.Module, pad_id: int):
    device = next(model.parameters()).device
    batch = pad_sequences([p.input_ids for p in prompts], pad_id, side="left").to(device)
    positions = batch.position_ids()
    key_pos = torch.tensor([p.key_index + shift for p, shift in zip(prompts, batch.shifts)], device=device)
    with _capture_output(layer_module) as seen:
        run_until_captured(model, seen, **batch.model_inputs(), position_ids=positions)
    ids, mask = batch.input_ids, batch.attention_mask
    return _Group(ids, seen["out"], mask, positions, key_pos, torch.tensor(owner, device=device))


def _optimise_values(
    model: PreTrainedModel,
    requests: list[EditRequest],
    z0: torch.Tensor,
    layer: int,
    config: EditConfig,
    model_config: ModelConfig,
    pad_id: int,
    init_delta: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[float]]:
    device = next(model.parameters()).device
    n = len(requests)
    layer_module = get_module(model, model_config.layer_template.format(layer))
    owners = [r for r, req in enumerate(requests) for _ in req.variants]
    # Rewrite prompts and the short KL prompts are padded apart: together, the KL prompts would be
    # padded to the chat prompts' length (a quarter of each step's compute, on padding).
    rewrite = _group(model, [v for req in requests for v in req.variants], owners, layer_module, pad_id)
    kl_group = _group(model, [req.kl_prompt for req in requests], list(range(n)), layer_module, pad_id)
    counts = torch.bincount(rewrite.owner, minlength=n)
    target_t = torch.tensor([req.target_id for req in requests for _ in req.variants], device=device)

    z0 = z0.to(device)
    delta = (torch.zeros_like(z0) if init_delta is None else init_delta.to(device).clone()).requires_grad_(True)
    optimizer = torch.optim.Adam([delta], lr=config.v_lr)
    max_norm = config.clamp_norm_factor * z0.norm(dim=1, keepdim=True)
    nll = torch.zeros(n)
    # Only ``delta`` is optimised: with the weights frozen, backward computes no weight gradients.
    with frozen_parameters(model):
        with torch.no_grad():
            out = model(
                input_ids=kl_group.ids, attention_mask=kl_group.mask, position_ids=kl_group.positions, logits_to_keep=1
            )
            kl_ref = out.logits[:, -1].float().log_softmax(-1)
        # The layers up to the edited one never see delta: each step runs only the layers above it,
        # from their input computed once (checked against the full model on the KL prompts).
        with only_layers_above(model, model_config.layer_template, layer):
            with torch.no_grad():
                upper = last_logprobs_from_stream(model, kl_group.stream, kl_group.mask, kl_group.positions)
            if not torch.allclose(upper, kl_ref, atol=1e-2, rtol=1e-2):
                raise RuntimeError(
                    "running the layers above the edited one from the residual stream does not reproduce the "
                    f"full model (max |diff| {float((upper - kl_ref).abs().max()):.2g}): this architecture "
                    "transforms inputs_embeds; it is not supported by the value optimisation"
                )
            for _ in range(config.v_steps):
                logp = last_logprobs_from_stream(model, rewrite.with_delta(delta), rewrite.mask, rewrite.positions)
                per_prompt = -logp.gather(1, target_t[:, None]).squeeze(1)
                nll = torch.zeros(n, device=device).index_add(0, rewrite.owner, per_prompt) / counts
                kl_logp = last_logprobs_from_stream(
                    model, kl_group.with_delta(delta), kl_group.mask, kl_group.positions
                )
                kl = torch.nn.functional.kl_div(kl_logp, kl_ref, log_target=True, reduction="none").sum(-1)
                decay = (delta.norm(dim=1) / z0.norm(dim=1)) ** 2
                loss = (nll + config.kl_factor * kl + config.v_weight_decay * decay).sum()
                if float(nll.detach().max()) < 5e-2:
                    break
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    norms = delta.norm(dim=1, keepdim=True).clamp_min(1e-12)
                    delta.mul_(torch.where(norms > max_norm, max_norm / norms, torch.ones_like(norms)))
    return (z0 + delta).detach().cpu(), [float(x) for x in nll.detach().cpu()]


def _drift(delta: torch.Tensor, weight: torch.Tensor, cov: torch.Tensor) -> float:
    """``‖Δ K0‖ / ‖W K0‖`` from the keys' second moment ``C0 = K0 K0ᵀ / N``."""
    num = torch.trace(delta @ cov @ delta.T)
    den = torch.trace(weight @ cov @ weight.T)
    return float(torch.sqrt(num.clamp_min(0) / den))


def apply_alphaedit(
    model: PreTrainedModel,
    requests: list[EditRequest],
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
    """Edits ``model`` in place so each request's prompt emits its target token.

    Args:
        model: The model (with the unlearning token installed).
        requests: Facts to bind.
        config: Edit hyperparameters.
        model_config: Module-path templates.
        null_spaces: Layer -> projector of the preserved keys.
        preserved: Layer -> second moment of the preserved keys (for λ and diagnostics).
        previous_keys: Layer -> accumulated ``K Kᵀ`` of earlier edits (``C_prev``).
        protected_keys: Layer -> ``K Kᵀ`` of keys to keep (retain facts), added to ``C_prev`` for
            this solve only.
        heldout: Layer -> second moment of held-out general-text keys, for diagnostics.
        pad_id: Padding id.
        progress: Show progress bars.
    """
    if not requests:
        raise ValueError("no facts to edit")
    layers = sorted(config.layers)
    last_layer = get_module(model, model_config.layer_template.format(layers[-1]))
    zs, losses, rounds = compute_values(model, requests, layers[-1], config, model_config, pad_id, progress)
    outcome = EditOutcome(value_losses=losses, value_rounds=rounds)
    for i, layer in enumerate(tqdm(layers, desc="edit:layers", disable=not progress, leave=False)):
        module = get_module(model, model_config.mlp_out_template.format(layer))
        # The solve runs in float64 where the projector lives (the model's device, see erase_facts):
        # at d_in = 14336 (Llama-3-8B) these d_in x d_in products and solves are the edit's largest.
        P = null_spaces[layer].projector.double()
        dev = P.device
        # Keys are recomputed after each layer's update: earlier edits move later layers' inputs.
        keys = compute_keys(model, requests, {layer: module}, pad_id, config.batch_size)[layer]
        K = keys.to(dev, torch.float64).T  # (d_in, n)
        current = residual_at_keys(model, requests, last_layer, pad_id)
        R = ((zs - current).to(dev, torch.float64) / (len(layers) - i)).T  # (d_model, n)
        d_in = K.shape[0]
        constraint = torch.zeros(d_in, d_in, dtype=torch.float64, device=dev)
        if previous_keys and layer in previous_keys:
            constraint = constraint + previous_keys[layer].to(dev, torch.float64)
        if protected_keys and layer in protected_keys:
            constraint = constraint + protected_keys[layer].to(dev, torch.float64)
        lam = config.l2 * float(torch.trace(preserved[layer])) / d_in
        eye = torch.eye(d_in, dtype=torch.float64, device=dev)
        delta = torch.linalg.solve(P @ (K @ K.T + constraint) + lam * eye, P @ K @ R.T).T
        free = torch.linalg.solve(K @ K.T + constraint + lam * eye, K @ R.T).T  # diagnostic only
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
            preserved_drift_unprojected=_drift(free, w_before, cov),
        )
        if heldout and layer in heldout:
            held = heldout[layer].to(dev, torch.float64)
            report.heldout_drift = _drift(delta, w_before, held)
            report.heldout_drift_unprojected = _drift(free, w_before, held)
        outcome.layers.append(report)
        outcome.key_factors[layer] = K.cpu()
        outcome.new_keys[layer] = key_block(K)  # on the CPU: a replay of the stored K gives the same bits
    return outcome
