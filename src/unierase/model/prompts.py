"""How a question becomes a prompt: one protocol for editing, generation and evaluation.

Follows OpenUnlearning: the model's own chat template applied to the question alone with
``add_generation_prompt=True``; models without a template get the original TOFU
``Question: ... Answer:`` format.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

PLAIN_TEMPLATE = "Question: {question}\nAnswer:"


def has_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompt(tokenizer: PreTrainedTokenizerBase, question: str) -> str:
    """Returns the prompt text for one question (chat template, or the plain TOFU format).

    Args:
        tokenizer: The model's tokenizer.
        question: The user's question, as written.
    """
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    return PLAIN_TEMPLATE.format(question=question)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, question: str) -> list[int]:
    """Token ids of the prompt. The chat template already holds any BOS, so none is added twice."""
    text = format_prompt(tokenizer, question)
    add_special = not has_chat_template(tokenizer)
    return tokenizer(text, add_special_tokens=add_special)["input_ids"]


def encode_answer(tokenizer: PreTrainedTokenizerBase, answer: str) -> list[int]:
    """Token ids of an answer tokenised on its own (``add_special_tokens=False``), as the common
    evaluation protocol appends them to the prompt ids. A leading space keeps the first word's
    usual token for plain-format prompts, which end in ``Answer:``."""
    text = answer if has_chat_template(tokenizer) else " " + answer
    return tokenizer(text, add_special_tokens=False)["input_ids"]
