"""Question/answer training examples and their losses, shared by fine-tuning and the baselines.

An example is the evaluation prompt (`unierase.model.prompts.encode_prompt`) followed by the answer ids
(`unierase.model.prompts.encode_answer`) and the end-of-turn token, with the loss on the answer and that
token only (TOFU's and OpenUnlearning's answer-only loss); the end token teaches the model to stop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.model.batching import pad_sequences
from unierase.model.prompts import encode_answer, encode_prompt


def encode_example(
    tokenizer: PreTrainedTokenizerBase, question: str, answer: str, append_eos: bool = True
) -> tuple[list[int], list[int]]:
    """Input ids and labels (-100 on the prompt) of one question/answer pair."""
    prompt = encode_prompt(tokenizer, question)
    target = encode_answer(tokenizer, answer)
    if append_eos and tokenizer.eos_token_id is not None:
        target = target + [tokenizer.eos_token_id]
    return prompt + target, [-100] * len(prompt) + target


def collate(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` tensors (padding labelled -100)."""
    return pad_sequences([ids for ids, _ in examples], pad_id, labels=[lab for _, lab in examples]).model_inputs()


def batch_nll(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed answer NLL per example and the number of answer tokens per example (gradients kept).

    OpenUnlearning's ``compute_batch_nll`` sums over tokens; NPO uses that sum, the other losses the
    token mean over the batch.
    """
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, ignore_index=-100, reduction="none")
    return nll.sum(dim=1), (targets != -100).sum(dim=1)


def mean_token_nll(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The usual causal-LM loss: answer NLL averaged over all answer tokens of the batch."""
    total, count = batch_nll(model, batch)
    return total.sum() / count.sum().clamp(min=1)


def make_optimizer(
    model: PreTrainedModel, lr: float, weight_decay: float, total_steps: int, warmup_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters with a linear warm-up then linear decay to 0 (the
    transformers Trainer's default schedule)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_step(
    model: PreTrainedModel,
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    max_grad_norm: float,
) -> float:
    """One training step shared by fine-tuning and the baselines: backward, clip, step, schedule."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())
