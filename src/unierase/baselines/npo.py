"""NPO (Zhang et al., 2024; OpenUnlearning ``NPO``) with a retain NLL term:
``loss = gamma * -2/beta * log sigmoid(beta * (NLL_theta(forget) - NLL_ref(forget))) + alpha * NLL(retain)``,
with NLLs summed over answer tokens as OpenUnlearning's ``compute_batch_nll`` does.

The reference model is the model before unlearning and stays frozen, so its forget NLLs are computed
once up front instead of keeping a second copy of the weights in memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.baselines._loop import encode_facts, require_retain, retain_term, run_unlearning
from unierase.config import BaselineConfig
from unierase.data.facts import Fact
from unierase.model.qa_loss import batch_nll, collate


@torch.no_grad()
def reference_nlls(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, forget: list[Fact], batch_size: int
) -> torch.Tensor:
    """Summed answer NLL of every forget item under the current (reference) weights."""
    model.eval()
    examples = encode_facts(tokenizer, forget)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    chunks = [
        batch_nll(model, collate(examples[i : i + batch_size], pad))[0] for i in range(0, len(examples), batch_size)
    ]
    return torch.cat(chunks).detach()


def npo(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    forget: list[Fact],
    retain: list[Fact],
    config: BaselineConfig,
    progress: bool = True,
) -> None:
    """Negative preference optimisation with a retain term; the model changes in place.

    Raises:
        ValueError: ``retain`` is empty while ``config.retain_weight`` is positive.
    """
    require_retain(retain, config, "NPO")
    reference = reference_nlls(model, tokenizer, forget, config.batch_size)
    beta = config.npo_beta

    def loss(model, forget_batch, retain_batch, idx):
        current, _ = batch_nll(model, forget_batch)
        log_ratio = current - reference[idx].to(current.device)
        value = config.forget_weight * (-2.0 / beta) * F.logsigmoid(beta * log_ratio).mean()
        return value + retain_term(model, retain_batch, config)

    run_unlearning(model, tokenizer, forget, retain, config, loss, name="NPO", progress=progress)
