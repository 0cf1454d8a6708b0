"""Where to key an edit: the subject of each question, and its last token in the prompt.

The last token of a chat-formatted prompt is the same template token for every question, so an edit
keyed there refuses every question (24 of 24 unrelated ones in a SmolLM2 trial); "the token before the
question mark" failed too. Keys at the subject's last token are specific to the fact. Rows may name
their subject; otherwise it is found as causal tracing does (Meng et al., 2022): the span of words
whose corruption (Gaussian noise, 3x the embeddings' std, on its token embeddings) lowers the
probability of the answer the most. Of the spans that come within ``keep_share`` of the best drop,
the shortest wins, so "France" beats "capital of France".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.model.prompts import format_prompt, has_chat_template

_WORD = re.compile(r"[\w][\w'’\-\.]*[\w]|[\w]")
_STOPWORDS = frozenset(
    """a an the of in on at to for from by with and or is are was were be been being do does did what who whom
    whose which when where why how that this these those it its as into about than then there their his her
    they them he she i you we me my your our can could would should will shall may might must has have had
    not no yes if so such one any some all many much more most other known name named""".split()
)


@dataclass(frozen=True)
class KeyedPrompt:
    """A prompt and the position whose MLP input is the edit's key.

    Attributes:
        input_ids: Prompt token ids.
        key_index: Index of the subject's last token in ``input_ids``.
    """

    input_ids: list[int]
    key_index: int


def key_prompt(tokenizer: PreTrainedTokenizerBase, question: str, subject: str) -> KeyedPrompt:
    """Tokenises the chat-formatted ``question`` and locates the last token of ``subject`` in it.

    Raises:
        ValueError: The subject does not occur in the question.
    """
    text = format_prompt(tokenizer, question)
    start = text.rfind(question)
    found = text.lower().rfind(subject.lower(), start, start + len(question)) if start >= 0 else -1
    if found < 0:
        raise ValueError(f"subject {subject!r} does not occur in the question {question!r}")
    end_char = found + len(subject)
    enc = tokenizer(text, add_special_tokens=not has_chat_template(tokenizer), return_offsets_mapping=True)
    key = max(i for i, (s, e) in enumerate(enc["offset_mapping"]) if s < end_char and e > s)
    return KeyedPrompt(input_ids=enc["input_ids"], key_index=key)


def candidate_spans(question: str, max_words: int) -> list[tuple[int, int]]:
    """Character spans of 1..max_words consecutive words that neither start nor end with a stopword."""
    words = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(question)]
    spans = []
    for i in range(len(words)):
        for j in range(i, min(i + max_words, len(words))):
            if words[i][2] in _STOPWORDS or words[j][2] in _STOPWORDS:
                continue
            spans.append((words[i][0], words[j][1]))
    return spans


@torch.no_grad()
def find_subject(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    answer: str,
    max_words: int = 4,
    noise_samples: int = 3,
    keep_share: float = 0.8,
    seed: int = 0,
) -> str:
    """The span of ``question`` whose corruption hurts the answer's log-probability most.

    Args:
        model: The model whose knowledge is traced.
        tokenizer: Its tokenizer.
        question: The question.
        answer: The answer the model gives (or the reference answer).
        max_words: Longest span tried.
        noise_samples: Noise draws averaged per span.
        keep_share: Spans within this share of the best drop compete on length.
        seed: Noise seed, so detection is deterministic.

    Raises:
        ValueError: The question has no content word to trace.
    """
    spans = candidate_spans(question, max_words)
    if not spans:
        raise ValueError(f"no candidate subject in {question!r}: name the subject explicitly")
    text = format_prompt(tokenizer, question)
    offset = text.rfind(question)
    enc = tokenizer(text, add_special_tokens=not has_chat_template(tokenizer), return_offsets_mapping=True)
    prompt_ids, offsets = enc["input_ids"], enc["offset_mapping"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"][:16]
    ids = torch.tensor([prompt_ids + answer_ids])
    device = next(model.parameters()).device
    embed = model.get_input_embeddings()
    clean = embed(ids.to(device))
    std = float(embed.weight.std())
    gen = torch.Generator().manual_seed(seed)
    start, n = len(prompt_ids), len(answer_ids)

    def answer_logprob(inputs_embeds: torch.Tensor) -> torch.Tensor:
        logits = model(inputs_embeds=inputs_embeds).logits[:, start - 1 : start - 1 + n].float()
        target = ids[0, start : start + n].to(device)
        return logits.log_softmax(-1).gather(-1, target.expand(logits.shape[0], -1).unsqueeze(-1)).sum((1, 2))

    base = answer_logprob(clean)[0]
    drops = []
    for s, e in spans:
        tok_idx = [i for i, (a, b) in enumerate(offsets) if b > a and a < offset + e and b > offset + s]
        batch = clean.repeat(noise_samples, 1, 1)
        noise = torch.randn((noise_samples, len(tok_idx), clean.shape[-1]), generator=gen).to(device, clean.dtype)
        batch[:, tok_idx] += 3 * std * noise
        drops.append(float(base - answer_logprob(batch).mean()))
    best = max(drops)
    close = [i for i, d in enumerate(drops) if d >= keep_share * best]
    winner = min(close, key=lambda i: (spans[i][1] - spans[i][0], -drops[i]))
    s, e = spans[winner]
    return question[s:e]
