"""Where to key an edit: the subject of each question, and its last token in the prompt.

The last token of a chat-formatted prompt is the same template token for every question, so an edit
keyed there refuses every question (24 of 24 unrelated ones in a SmolLM2 trial); "the token before the
question mark" failed too. Keys at the subject's last token are specific to the fact. Rows may name
their subject; otherwise it is found as causal tracing does (Meng et al., 2022): the span of words
whose corruption (Gaussian noise, 3x the embeddings' std, on its token embeddings) lowers the
probability of the answer the most. Of the spans that come within ``keep_share`` of the best drop,
the shortest wins, so "France" beats "capital of France"; a winner that touches a name is widened or
cut to the whole name (`snap_to_name`), and one that touches none and ends before the question's last
name, so that its key has not read it, gives way to that name (`choose_span`).

Tracing finds nothing when no span lowers the answer's probability (every corruption raised it on
questions a model does not know, and the old rule then crashed), when the answer is empty or when the
question has no content word. Users bring questions without subjects, so a text-only fallback
(`fallback_subject`) then picks, in order:

1. ``fallback:entity``: the strongest name-like span, a run of capitalised words (with connectors such
   as "of the" or "da" inside, numbers after a name): runs not at a sentence start first, then the
   most words, then the most characters, then the last;
2. ``fallback:content-word``: the last word that is neither a stopword nor a common verb, else the
   last word that is not a stopword;
3. ``fallback:last-word``: the last word;
4. ``fallback:question``: the whole question (no word at all, e.g. only punctuation).

Every subject returned is a span of the question, so `key_prompt` can locate it; only a blank
question has none.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from unierase.data.facts import Fact
from unierase.model.prefix_cache import cache_rows
from unierase.model.prompts import format_prompt, has_chat_template

_WORD = re.compile(r"[\w][\w'’\-\.]*[\w]|[\w]")
_STOPWORDS = frozenset(
    """a an the of in on at to for from by with and or is are was were be been being do does did what who whom
    whose which when where why how that this these those it its as into about than then there their his her
    they them he she i you we me my your our can could would should will shall may might must has have had
    not no yes if so such one any some all many much more most other known name named""".split()
)
# Lowercase words that may sit inside a name ("Bank of England", "Leonardo da Vinci"), never at its ends.
_CONNECTORS = frozenset("of the de da del della di du des la le van von der den al bin ibn y".split())
# Capitalised only because they open a sentence: imperative openers and leading prepositions/adverbs.
_OPENERS = frozenset(
    """tell name list give describe explain please define identify mention provide share summarize summarise
    recall guess say imagine compare find show write suggest during after before since under through between
    among according besides apart approximately roughly typically generally historically exactly also over
    within without following considering given""".split()
)
# Verbs common in questions: as a fallback key, the noun before them says more ("the war" in "When did
# the war end?").
_COMMON_VERBS = frozenset(
    """write wrote written writes born die died dies live lived lives play played plays end ended ends start
    started starts begin began begun happen happened happens mean means meant call called invent invented
    discover discovered work worked works find found make made get got go went come came take took say said
    use used become became win won lead led located situated like think""".split()
)
_POSSESSIVE = re.compile(r"['’]s$", re.IGNORECASE)


@dataclass(frozen=True)
class KeyedPrompt:
    """A prompt and the position whose MLP input is the edit's key.

    Attributes:
        input_ids: Prompt token ids.
        key_index: Index of the subject's last token in ``input_ids``.
    """

    input_ids: list[int]
    key_index: int


@dataclass(frozen=True)
class SubjectChoice:
    """A question's subject and how it was chosen.

    Attributes:
        subject: The subject, as it appears in the question.
        method: ``given`` (the row's own), ``traced`` (causal tracing), ``traced:last-name`` (tracing's
            winner keyed the phrasing before a name, `choose_span`) or ``fallback:<step>`` (see the module docstring: ``entity``, ``content-word``, ``last-word``,
            ``question``).
    """

    subject: str
    method: str


class SubjectError(ValueError):
    """A row whose subject cannot key an edit; the message names the row, never its text."""


def _question_span(text: str, question: str) -> tuple[int, int]:
    """Character span of ``question`` inside the prompt ``text`` (-1, -1 when absent). Templates that
    trim the message (Llama 3's does) hold the stripped question."""
    start = text.rfind(question)
    if start >= 0:
        return start, start + len(question)
    stripped = question.strip()
    start = text.rfind(stripped) if stripped else -1
    return (start, start + len(stripped)) if start >= 0 else (-1, -1)


def _rfind_casefree(text: str, needle: str, start: int, end: int) -> int:
    """Last index in ``text[start:end]`` where ``needle`` occurs, case aside (-1 if nowhere).

    ``str.lower`` may change a string's length ("İ" becomes two characters), which would shift every
    index after it; a case-insensitive match keeps the original indices.
    """
    pattern = re.compile(re.escape(needle), re.IGNORECASE)
    for pos in range(end - len(needle), start - 1, -1):
        if pattern.match(text, pos, end):
            return pos
    return -1


def key_prompt(tokenizer: PreTrainedTokenizerBase, question: str, subject: str) -> KeyedPrompt:
    """Tokenises the chat-formatted ``question`` and locates the last token of ``subject`` in it.

    Raises:
        ValueError: The subject is blank or does not occur in the question.
    """
    if not subject.strip():
        raise ValueError("the subject is blank: it must be a span of the question")
    text = format_prompt(tokenizer, question)
    start, end = _question_span(text, question)
    found = _rfind_casefree(text, subject, start, end) if start >= 0 else -1
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


# Corrupted copies run in one pass of causal tracing.
_TRACE_ROWS = 24


@torch.no_grad()
def trace_subject(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    answer: str,
    max_words: int = 4,
    noise_samples: int = 3,
    keep_share: float = 0.8,
    seed: int = 0,
) -> SubjectChoice | None:
    """The span of ``question`` whose corruption hurts the answer's log-probability most (`choose_span`).

    Args:
        model: The model whose knowledge is traced.
        tokenizer: Its tokenizer.
        question: The question.
        answer: The answer the model gives (or the reference answer).
        max_words: Longest span tried.
        noise_samples: Noise draws averaged per span.
        keep_share: Spans within this share of the best drop compete on length.
        seed: Noise seed, so detection is deterministic.

    Returns:
        The subject and how it was chosen, or None when no span lowers the answer's probability (then
        no span is "within a share" of the best in any useful sense), the answer is empty, or no word
        can be traced.
    """
    spans = candidate_spans(question, max_words)
    text = format_prompt(tokenizer, question)
    offset, _ = _question_span(text, question)
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"][:16]
    if not spans or offset < 0 or not answer_ids:
        return None
    enc = tokenizer(text, add_special_tokens=not has_chat_template(tokenizer), return_offsets_mapping=True)
    prompt_ids, offsets = enc["input_ids"], enc["offset_mapping"]
    ids = torch.tensor([prompt_ids + answer_ids])
    device = next(model.parameters()).device
    embed = model.get_input_embeddings()
    clean = embed(ids.to(device))
    std = float(embed.weight.std())
    gen = torch.Generator().manual_seed(seed)
    start, n = len(prompt_ids), len(answer_ids)

    spans_tokens = [
        [i for i, (a, b) in enumerate(offsets) if b > a and a < offset + e and b > offset + s] for s, e in spans
    ]
    # Noise on a span changes nothing before its first token: the prompt up to the earliest span (the
    # chat template's head, the question's first words) runs once and its attention is cached; each
    # corrupted batch runs from there, and only the answer's columns are projected onto the vocabulary.
    cut = min((t[0] for t in spans_tokens if t), default=0)
    head = DynamicCache()
    if cut:
        model(inputs_embeds=clean[:, :cut], past_key_values=head, use_cache=True, logits_to_keep=1)
    target = ids[0, start : start + n].to(device)

    def answer_logprob(inputs_embeds: torch.Tensor) -> torch.Tensor:
        rows = inputs_embeds.shape[0]
        past = cache_rows(head, torch.zeros(rows, dtype=torch.long, device=device))
        out = model(inputs_embeds=inputs_embeds[:, cut:], past_key_values=past, use_cache=True, logits_to_keep=n + 1)
        logits = out.logits[:, :n].float()
        return logits.log_softmax(-1).gather(-1, target.expand(rows, -1).unsqueeze(-1)).sum((1, 2))

    base = answer_logprob(clean)[0]
    # Every span's corrupted copies, then run a few spans at a time: one larger batch costs less than
    # one pass per span (each pass reads every weight of the model once).
    copies = []
    for tok_idx in spans_tokens:
        batch = clean.repeat(noise_samples, 1, 1)
        noise = torch.randn((noise_samples, len(tok_idx), clean.shape[-1]), generator=gen).to(device, clean.dtype)
        batch[:, tok_idx] += 3 * std * noise
        copies.append(batch)
    per_pass = max(1, _TRACE_ROWS // noise_samples)
    drops = []
    for first in range(0, len(copies), per_pass):
        logprobs = answer_logprob(torch.cat(copies[first : first + per_pass])).view(-1, noise_samples)
        drops += [float(base - x) for x in logprobs.mean(1)]
    return choose_span(question, spans, drops, keep_share)


def choose_span(
    question: str, spans: list[tuple[int, int]], drops: list[float], keep_share: float = 0.8
) -> SubjectChoice | None:
    """The subject tracing picks from each candidate span's drop in the answer's log-probability.

    The shortest span within ``keep_share`` of the best drop wins (the larger drop on a tie), snapped to
    the name it touches (`snap_to_name`). A key sees only what comes before it, so a winner that touches
    no name and ends before the question's last name keys the phrasing, not the fact: on TOFU's "What is
    the full name of the author born in <city>, <country> on <date>?" tracing on SmolLM2 picked "author
    born", whose key every question of that phrasing shares, so retained ones opened with the token and
    no restore could close them. Such a winner gives way to the last name (``traced:last-name``), whose
    key has read every name of the question. (Not the best-tracing span after it: past the winner, the
    drops are often noise, and the shortest of them was a date's first digits.)

    Args:
        question: The question.
        spans: Candidate character spans of it (`candidate_spans`).
        drops: How much corrupting each span lowers the answer's log-probability.
        keep_share: Spans within this share of the best drop compete on length.

    Returns:
        The subject and how it was chosen, or None when no span lowers the answer's probability: the
        model does not rely on any of them for this answer, and "within keep_share of a negative best"
        would admit nothing.
    """
    best = max((d for d in drops if not math.isnan(d)), default=0.0)
    if not best > 0:
        return None
    close = [i for i, d in enumerate(drops) if d >= keep_share * best]
    winner = min(close, key=lambda i: (spans[i][1] - spans[i][0], -drops[i]))
    s, e = snap_to_name(question, *spans[winner])
    names = entity_spans(question)
    if names and e < names[-1][1] and not any(ns < e and ne > s for ns, ne, _ in names):
        last_start, last_end, _ = names[-1]
        return SubjectChoice(question[last_start:last_end], "traced:last-name")
    return SubjectChoice(question[s:e], "traced")


def snap_to_name(question: str, start: int, end: int) -> tuple[int, int]:
    """The whole name-like run (`entity_spans`) that a traced span touches, the one around its last word
    first; the span itself when it touches none.

    On a model that does not know the answer, the winning span can be part of a name ("Marchetti-Vos"
    of "Delphine Marchetti-Vos"), or run past it ("Marchetti-Vos born", "father of Xavian
    Nakagawa-Reyes"): a key at "born" is the template's and binds "Where was <anyone> born?", and
    questions about one person got several subjects, so several requests.
    """
    runs = [(s, e) for s, e, _ in entity_spans(question) if s < end and e > start]
    if not runs:
        return start, end
    return next(((s, e) for s, e in runs if s < end <= e), runs[-1])


def _without_possessive(question: str, start: int, end: int) -> tuple[int, int]:
    """Drops a trailing "'s", so the key is the name's own last token, not the possessive's."""
    match = _POSSESSIVE.search(question, start, end)
    return (start, match.start()) if match and match.start() > start else (start, end)


def _sentence_start(question: str, pos: int) -> bool:
    """True when the word at ``pos`` opens the question or a sentence in it."""
    before = question[:pos].rstrip(" \t\n\"'“‘(")
    return not before or before[-1] in ".!?:;"


def entity_spans(question: str) -> list[tuple[int, int, bool]]:
    """Name-like spans: runs of capitalised words, with lowercase connectors inside and numbers after.

    Returns:
        ``(start, end, at_sentence_start)`` character spans, in order.
    """
    words = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(question)]

    def capitalised(k: int) -> bool:
        s, _, w = words[k]
        if w.lower() in _STOPWORDS or not any(c.isupper() for c in w):
            return False
        return not (w.lower() in _OPENERS and _sentence_start(question, s))

    runs, k = [], 0
    while k < len(words):
        if not capitalised(k):
            k += 1
            continue
        first = last = k
        j = k + 1
        while j < len(words):
            gap = question[words[j - 1][1] : words[j][0]]
            if gap.strip(" -"):  # punctuation between words (a comma, a quote) ends a name
                break
            if capitalised(j) or words[j][2].isdigit():
                last = j
            elif words[j][2].lower() not in _CONNECTORS:
                break
            j += 1
        s, e = _without_possessive(question, words[first][0], words[last][1])
        runs.append((s, e, _sentence_start(question, words[first][0])))
        k = last + 1
    return runs


def fallback_subject(question: str) -> SubjectChoice:
    """A subject from the question's text alone, for when causal tracing finds none (module docstring).

    Raises:
        ValueError: The question is blank.
    """
    runs = entity_spans(question)
    if runs:
        # Runs inside a sentence first (a capital at a sentence's start says little), then the longest,
        # then the last: a question's own entity tends to come after its question words.
        def strength(i: int) -> tuple[bool, int, int, int]:
            s, e, initial = runs[i]
            return not initial, len(_WORD.findall(question[s:e])), e - s, i

        s, e, _ = runs[max(range(len(runs)), key=strength)]
        return SubjectChoice(question[s:e], "fallback:entity")
    words = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(question)]
    content = [w for w in words if w[2] not in _STOPWORDS]
    nouns = [w for w in content if w[2] not in _COMMON_VERBS]
    if nouns or content:
        s, e, _ = (nouns or content)[-1]
        s, e = _without_possessive(question, s, e)
        return SubjectChoice(question[s:e], "fallback:content-word")
    if words:
        s, e, _ = words[-1]
        return SubjectChoice(question[s:e], "fallback:last-word")
    if question.strip():
        return SubjectChoice(question.strip(), "fallback:question")
    raise ValueError("the question is blank: no subject can key an edit")


def find_subject(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    answer: str,
    max_words: int = 4,
    noise_samples: int = 3,
    keep_share: float = 0.8,
    seed: int = 0,
) -> SubjectChoice:
    """The subject of ``question``: the causal-tracing winner, else the text-only fallback.

    Args:
        model: The model whose knowledge is traced.
        tokenizer: Its tokenizer.
        question: The question.
        answer: The answer the model gives (or the reference answer).
        max_words: Longest span tried by tracing.
        noise_samples: Noise draws averaged per span.
        keep_share: Spans within this share of the best drop compete on length.
        seed: Noise seed, so detection is deterministic.

    Returns:
        A span of the question and how it was found (``traced``, ``traced:last-name`` or ``fallback:<step>``).

    Raises:
        ValueError: The question is blank.
    """
    traced = trace_subject(model, tokenizer, question, answer, max_words, noise_samples, keep_share, seed)
    return traced if traced is not None else fallback_subject(question)


def attach_subjects(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    facts: list[Fact],
    max_words: int = 4,
    rows: list[str] | None = None,
) -> tuple[list[Fact], list[SubjectChoice]]:
    """Every fact with a subject that keys its prompt: its own, checked, or one found for it.

    Runs a few forward passes per unlabelled fact, so callers run it before any expensive phase and a
    bad row fails in seconds.

    Args:
        model: The model whose knowledge is traced (the base model, before any token is installed).
        tokenizer: Its tokenizer.
        facts: The facts, with or without ``subject``.
        max_words: Longest span tried by tracing.
        rows: A name for each fact in errors (e.g. ``forget.jsonl:7``); positions when None.

    Returns:
        Copies of the facts with ``subject`` filled in, and how each subject was chosen.

    Raises:
        SubjectError: A fact's given subject does not occur in its question, or its question is blank.
    """
    rows = rows or [f"row {i + 1}" for i in range(len(facts))]
    if len(rows) != len(facts):
        raise ValueError(f"{len(rows)} row names for {len(facts)} facts")
    # Given subjects first (a tokenisation each), so a bad one fails before any row is traced.
    order = sorted(range(len(facts)), key=lambda i: not facts[i].subject)
    found: dict[int, SubjectChoice] = {}
    for i in order:
        fact, row = facts[i], rows[i]
        try:
            if fact.subject:
                choice = SubjectChoice(fact.subject, "given")
            else:
                choice = find_subject(model, tokenizer, fact.question, fact.answer, max_words=max_words)
            key_prompt(tokenizer, fact.question, choice.subject)
        except ValueError:
            # The message names the row, not its text: forget sets are what must not reach the logs
            # (and `from None` keeps the text-bearing original out of the traceback).
            if fact.subject:
                problem = "its subject is blank or does not occur in its question (case aside)"
            elif not fact.question.strip():
                problem = "its question is blank"
            else:
                problem = "no span of its question keys the prompt"
            raise SubjectError(f"{row}: {problem}; give the row a 'subject' that appears in its question") from None
        found[i] = choice
    choices = [found[i] for i in range(len(facts))]
    out = [
        fact if choice.method == "given" else fact.model_copy(update={"subject": choice.subject})
        for fact, choice in zip(facts, choices, strict=True)
    ]
    return out, choices
