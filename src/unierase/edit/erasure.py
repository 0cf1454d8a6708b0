"""UniErase end to end, as pure functions: token (learned or given) + AlphaEdit edit -> weight delta.

Nothing here reads or writes files; `unierase.stages.erase` does that around these functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import EditConfig, Params
from unierase.data.facts import Fact
from unierase.edit.alphaedit import (
    EditOutcome,
    EditRequest,
    compute_keys,
    compute_values,
    solve_alphaedit,
)
from unierase.edit.neighbours import neighbour_facts
from unierase.edit.nullspace import null_space
from unierase.edit.preserved import key_moment_sums
from unierase.edit.state import EditState, accumulate, question_digest
from unierase.edit.subject import KeyedPrompt, find_subject, key_prompt
from unierase.model.delta import WeightDelta, diff_models, snapshot
from unierase.model.generation import generate_answers
from unierase.model.hooks import get_module
from unierase.model.prompts import encode_answer, encode_prompt
from unierase.token.refusals import refusal_ids
from unierase.token.vocabulary import unlearning_token_id

logger = logging.getLogger(__name__)

# Short openings a user might put before a question. Keys and values are averaged over the bare
# prompt and these variants (MEMIT's context templates), so the edit holds beyond one exact string.
CONTEXT_PREFIXES: tuple[str, ...] = (
    "Quick question.",
    "I was wondering about something.",
    "Please answer briefly.",
    "Here is something I want to know.",
    "Help me with this.",
    "I have a question for you.",
    "Answer this, please.",
    "Can you tell me?",
)


@dataclass
class ErasureResult:
    """Result of one erasure request.

    Attributes:
        delta: Every parameter that changed, with old and new values.
        state: The edit state after this request (None for methods without one).
        subjects: The subject each forget fact was keyed at (given or detected).
        outcome: Per-layer edit diagnostics (UniErase only).
        timings: Seconds per phase.
    """

    delta: WeightDelta
    state: EditState | None
    subjects: list[str]
    outcome: EditOutcome | None
    timings: dict[str, float]


def resolve_subjects(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, facts: list[Fact], params: Params
) -> list[str]:
    """Each fact's subject: its own ``subject`` field, else the one `find_subject` chooses (causal
    tracing, then its text-only fallback). The erase stage fills subjects in earlier
    (`unierase.edit.subject.attach_subjects`), so there every fact arrives with one."""
    out = []
    for fact in facts:
        if fact.subject:
            out.append(fact.subject)
        else:
            found = find_subject(model, tokenizer, fact.question, fact.answer, max_words=params.edit.subject_max_words)
            logger.info("subject found by %s", found.method)  # never the question or subject: forget text
            out.append(found.subject)
    return out


def subject_groups(subjects: list[str]) -> list[list[int]]:
    """Indices of the facts that share a subject (case and spacing ignored), groups in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, subject in enumerate(subjects):
        groups.setdefault(" ".join(subject.casefold().split()), []).append(i)
    return list(groups.values())


def build_requests(
    tokenizer: PreTrainedTokenizerBase,
    facts: list[Fact],
    subjects: list[str],
    target_id: int,
    params: Params,
    per_subject: bool | None = None,
) -> list[EditRequest]:
    """Edit requests keyed at the subject: each fact's bare prompt plus context-prefixed variants.

    With ``per_subject`` (default ``edit.one_key_per_subject``), facts that share a subject make one
    request: one key, averaged over all their prompts, and one value optimised to serve all of them;
    separate requests would bind nearly the same key to values that fight each other. The prefixed
    variants are then spread over the subject's facts (each prefix once per subject: the questions
    already vary the context), so a lone fact keeps every variant, as without grouping.
    """
    prefixes = CONTEXT_PREFIXES[: params.edit.num_context_prefixes]
    per_subject = params.edit.one_key_per_subject if per_subject is None else per_subject
    groups = subject_groups(subjects) if per_subject else [[i] for i in range(len(facts))]
    requests = []
    for group in groups:
        variants = [key_prompt(tokenizer, facts[i].question, subjects[i]) for i in group]
        for k, prefix in enumerate(prefixes):
            i = group[k % len(group)]
            variants.append(key_prompt(tokenizer, f"{prefix} {facts[i].question}", subjects[i]))
        subject = subjects[group[0]]
        kl_ids = tokenizer(f"{subject} is", add_special_tokens=False)["input_ids"]
        subject_len = len(tokenizer(subject, add_special_tokens=False)["input_ids"])
        kl = KeyedPrompt(input_ids=kl_ids, key_index=max(0, min(subject_len, len(kl_ids)) - 1))
        suppressed = (
            [
                row
                for j, i in enumerate(group)
                for row in suppressed_answer(tokenizer, variants[j], facts[i].answer, params)
            ]
            if params.erase.depth == "deep"
            else []
        )
        refusal = [
            row
            for j, i in enumerate(group)
            for row in refusal_rows(tokenizer, variants[j], facts[i].question, target_id, params.edit.refusal_tokens)
        ]
        requests.append(
            EditRequest(variants=variants, kl_prompt=kl, target_id=target_id, suppressed=suppressed, refusal=refusal)
        )
    return requests


def restore_requests(
    tokenizer: PreTrainedTokenizerBase, facts: list[Fact], subjects: list[str], params: Params
) -> list[EditRequest]:
    """Edit requests that bind retain questions back to their answers: keyed at each question's subject
    (one request per question, as their keys are held), each prompt's next token the first token of
    that question's own answer. No deep or refusal rows: nothing here is erased."""
    plain = params.model_copy(
        update={
            "edit": params.edit.model_copy(update={"refusal_tokens": 0}),
            "erase": params.erase.model_copy(update={"depth": "paper"}),
        }
    )
    requests = build_requests(tokenizer, facts, subjects, 0, plain, per_subject=False)
    return [replace(r, target_id=encode_answer(tokenizer, f.answer)[0]) for r, f in zip(requests, facts, strict=True)]


def refusal_rows(
    tokenizer: PreTrainedTokenizerBase, prompt: KeyedPrompt, question: str, target_id: int, count: int
) -> list[tuple[KeyedPrompt, list[int]]]:
    """The first ``count`` tokens of the refusal Phase I taught for ``question``, read where each follows
    the prompt, the unlearning token and the refusal so far: one row (keyed at the prompt's subject
    position) whose last positions predict them, or none when ``count`` is 0."""
    ids = refusal_ids(tokenizer, question)[:count]
    if not ids:
        return []
    return [(KeyedPrompt(input_ids=prompt.input_ids + [target_id] + ids[:-1], key_index=prompt.key_index), ids)]


def suppressed_answer(
    tokenizer: PreTrainedTokenizerBase, prompt: KeyedPrompt, answer: str, params: Params
) -> list[tuple[KeyedPrompt, list[int]]]:
    """Deep erasure's rows for one fact: after the prompt and each of ``edit.deep_openings``, the first
    ``edit.deep_answer_tokens`` tokens of the true answer, read where each follows the question and the
    answer so far. One row per opening (keyed at the same subject position as the prompt): its last
    positions predict those tokens, as teacher forcing reads a whole answer in one pass."""
    rows = []
    for opening in params.edit.deep_openings:
        text = f"{opening} {answer}" if opening else answer
        ids = encode_answer(tokenizer, text)
        start = len(encode_answer(tokenizer, opening)) if opening else 0
        stop = min(len(ids), start + params.edit.deep_answer_tokens)
        if stop > start:
            context = prompt.input_ids + ids[: stop - 1]
            rows.append((KeyedPrompt(input_ids=context, key_index=prompt.key_index), ids[start:stop]))
    return rows


def erase_facts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    forget: list[Fact],
    params: Params,
    preserved: dict[int, torch.Tensor] | None = None,
    retain: list[Fact] | None = None,
    state: EditState | None = None,
    heldout: dict[int, torch.Tensor] | None = None,
    progress: bool = True,
) -> ErasureResult:
    """Binds every forget fact to the unlearning token with one AlphaEdit edit (one request).

    The model must already carry the learned token (`unierase.token.learning`). Modes: ``batch``
    (all facts, one solve), ``precise`` (exactly one fact, the retain facts as protected
    neighbours), ``sequential`` (call once per request, passing the returned state on).

    Args:
        model: Edited in place.
        tokenizer: With the unlearning token.
        forget: Facts to erase.
        params: Configuration (edit, model, erase sections).
        preserved: Layer -> second moment of the keys to preserve; taken from ``state`` when it has one.
        retain: Facts to keep; their keys are protected in the solve when ``edit.protect_retain``.
        state: Edit state from earlier requests on this model (sequential erasure).
        heldout: Layer -> second moment of held-out general-text keys (diagnostics only).
        progress: Show progress bars.

    Returns:
        The delta of this request, the new state, the subjects used and diagnostics.
    """
    if not forget:
        raise ValueError("the forget set is empty")
    mode = params.erase.mode
    if mode == "precise":
        if len(forget) != 1:
            raise ValueError(f"precise mode erases exactly one fact; got {len(forget)} (use batch mode)")
        if not retain:
            raise ValueError("precise mode needs the neighbouring facts to keep (a retain set)")
    state = state or EditState()
    preserved = state.preserved or preserved
    if not preserved:
        raise ValueError("no preserved-key statistics: compute them (covariance) or pass an edit state")
    layers = sorted(params.edit.layers)
    if missing := [layer for layer in layers if layer not in preserved]:
        raise ValueError(f"preserved-key statistics lack layers {missing}; recompute them for edit.layers")
    timings: dict[str, float] = {}
    before = snapshot(model)
    target = unlearning_token_id(tokenizer, params.token)

    started = time.perf_counter()
    subjects = resolve_subjects(model, tokenizer, forget, params)
    requests = build_requests(tokenizer, forget, subjects, target, params)
    keep, keep_subjects = [], []
    if retain and (params.edit.protect_retain or mode == "precise"):
        keep, keep_subjects = list(retain), resolve_subjects(model, tokenizer, retain, params)
    # The same questions about other subjects (names sharing a part first) are held as retain facts are.
    near, near_subjects = neighbour_facts(forget, subjects, params.edit.neighbours)
    own_answers, carried = [], {}
    if keep and params.edit.protect_retain_answers and params.edit.held_own_answer_tokens:
        tokens = params.edit.held_own_answer_tokens
        known = state.own_answers if state.own_answer_tokens == tokens else {}
        own_answers, carried = read_own_answers(model, tokenizer, keep, known, target, tokens)

    counted: list[int] = []  # how many keys each call held
    weights = {layer: get_module(model, params.model.mlp_out_template.format(layer)).weight for layer in layers}
    # The weights before this request's edit, from the snapshot the delta is taken against.
    unedited = {layer: before[f"{params.model.mlp_out_template.format(layer)}.weight"] for layer in layers}

    def sums(kept: list[int], neighbours: bool) -> HeldKeySums:
        """The held keys' sums of the retain facts at ``kept`` (and the neighbours), read on the model
        before this request's edit."""
        with _weights_as(weights, unedited):
            return held_key_sums(
                model,
                tokenizer,
                [keep[i] for i in kept] + (near if neighbours else []),
                [keep_subjects[i] for i in kept] + (near_subjects if neighbours else []),
                [keep[i] for i in kept] if params.edit.protect_retain_answers else [],
                [own_answers[i] for i in kept] if own_answers and params.edit.protect_retain_answers else [],
                target,
                params,
            )

    every = sums(list(range(len(keep))), True) if keep or near else None

    def held_keys(dropped: list[int]) -> HeldKeys | None:
        """The keys the solve holds: every retain fact but those at ``dropped``, and the neighbours. The
        whole block is read once; a restore round takes its mended questions' part out of it, not
        reading the hundreds of others again."""
        if every is None or (len(dropped) == len(keep) and not near):
            return None
        held = every.minus(sums(dropped, False)) if dropped else every
        counted.append(held.facts + held.tokens)
        return held.weighed(params.edit.held_key_budget)

    protected = held_keys([])
    timings["subjects_s"] = time.perf_counter() - started

    started = time.perf_counter()
    # The decomposition and the solve run in float64 on the device that holds each edited layer (a model
    # spread over several GPUs keeps each layer's d_in x d_in covariance beside that layer's weights).
    # The preserved statistics are fixed from the first edit on: so is their factorisation, reused from the
    # state when this process made it for an earlier request.
    threshold = params.edit.nullspace_threshold
    reusable = state.preserved and state.null_space_threshold == threshold and set(layers) <= set(state.null_spaces)
    spaces = (
        {layer: state.null_spaces[layer] for layer in layers}
        if reusable
        else {
            layer: null_space(preserved[layer].to(_layer_device(model, params, layer)), threshold) for layer in layers
        }
    )
    timings["projection_s"] = time.perf_counter() - started

    started = time.perf_counter()

    def values(round_requests: list[EditRequest], config: EditConfig) -> tuple[torch.Tensor, dict]:
        """The round's target values (`compute_values`), and the outcome fields that record them."""
        began = time.perf_counter()
        zs, losses, rounds, steps = compute_values(
            model, round_requests, layers[-1], config, params.model, tokenizer.pad_token_id, progress
        )
        found = {"value_losses": losses, "value_rounds": rounds, "value_steps": steps}
        return zs, found | {"value_seconds": time.perf_counter() - began}

    def solve(
        round_requests: list[EditRequest],
        zs: torch.Tensor,
        previous_keys: dict[int, torch.Tensor],
        held: dict[int, torch.Tensor] | None,
        config: EditConfig,
    ) -> EditOutcome:
        return solve_alphaedit(
            model, round_requests, zs, config, params.model, spaces, preserved, previous_keys, held, heldout,
            tokenizer.pad_token_id, progress,
        )  # fmt: skip

    def bind(
        round_requests: list[EditRequest],
        previous_keys: dict[int, torch.Tensor],
        asked: int,
        last: bool,
        resume: float = 1.0,
    ) -> tuple[EditOutcome, list[int]]:
        """One bind round over ``asked`` forget questions: the values once, then the solve with the held
        answer keys at full weight and, while too many stay unbound, lighter (`relaxed_solve`): more than
        ``edit.held_relax_share`` of them, or in the ``last`` round any. Every round tries full weight
        first: its values are computed afresh on the edited model, and the few a first round leaves often
        bind without the lighter weight that tipped retain questions over. Where they do not, the search
        goes on from ``resume``, the weight the round before kept: where the held keys lie close to the
        forget keys, what that round had to lighten is not lighter now. Returns the round's outcome and the
        forget questions (positions) still not opening with the token."""
        zs, found = values(round_requests, params.edit)

        def weighed(weight: float) -> EditOutcome:
            held = None if protected is None else protected.at(weight)
            return solve(round_requests, zs, previous_keys, held, params.edit)

        def unbound() -> list[int]:
            return [i for i, fired in enumerate(opens_with(model, tokenizer, forget, target)) if not fired]

        def fired() -> int:
            return sum(opens_with(model, tokenizer, keep, target)) if keep else 0

        tries = params.edit.held_relax_tries if protected is not None and protected.answers is not None else 0
        tolerated = 0 if last else int(params.edit.held_relax_share * asked)
        outcome, left, scale = relaxed_solve(
            weighed, unbound, fired, weights, params.edit.held_relax, tries, tolerated, resume
        )
        return replace(outcome, **found, held_scale=[scale]), left

    def requests_for(positions: list[int]) -> list[EditRequest]:
        """The erasure requests of the forget questions at ``positions`` (a later bind round's)."""
        return build_requests(
            tokenizer, [forget[i] for i in positions], [subjects[i] for i in positions], target, params
        )

    rounds = params.edit.bind_rounds
    outcome, unbound = bind(requests, state.previous_keys, len(forget), last=rounds == 0)
    outcome.held_keys = counted[0] if counted else 0
    outcome.unbound.append(len(unbound))
    while unbound and len(outcome.unbound) <= rounds:
        logger.info(
            "edit round %d: %d of %d questions not bound yet", len(outcome.unbound) + 1, len(unbound), len(forget)
        )
        again = requests_for(unbound)
        # This request's earlier rounds are held as an earlier request's keys are: a later round must not
        # undo what the first bound.
        later, unbound = bind(
            again,
            accumulate(state.previous_keys, outcome.key_factors),
            len(unbound),
            last=len(outcome.unbound) == rounds,
            resume=outcome.held_scale[-1],
        )
        outcome.extend(later)
        outcome.unbound.append(len(unbound))
    # A retain question now opening with the token is bound back to its answer: its subject key gets a
    # value under which the answer's first token leads (``restore_stop_nll``), so it holds with a margin.
    # Every key bound so far is held ``restore_hold`` times harder than a bind round holds it, earlier
    # requests' forget keys among them (their questions cannot be asked again: their text is not kept),
    # so a restore moves along directions the erasures leave alone. A forget key whose name shares a part
    # with the retain question's (or whose question is phrased as another author's) lies close to it: the
    # forget questions a restore leaves unbound (those the bind rounds left among them) get one more bind
    # round, with the restored keys held, and where a question the bind rounds had bound is still unbound
    # after it, restore and rebind are both undone (the erasure comes first).
    mend = params.edit.model_copy(update={"value_stop_nll": params.edit.restore_stop_nll})
    for _ in range(params.edit.restore_rounds + 1 if keep else 0):
        fired = [i for i, hit in enumerate(opens_with(model, tokenizer, keep, target)) if hit]
        outcome.retain_fired.append(len(fired))
        if not fired or len(outcome.retain_fired) > params.edit.restore_rounds:
            break
        logger.info(
            "restore round %d: %d of %d retain questions open with the token",
            len(outcome.retain_fired),
            len(fired),
            len(keep),
        )
        back = restore_requests(tokenizer, [keep[i] for i in fired], [keep_subjects[i] for i in fired], params)
        # The fired questions' own keys leave the held block: held, they would pin the outputs being mended.
        mended = set(fired)
        others = held_keys(sorted(mended))
        bound = accumulate(state.previous_keys, outcome.key_factors)
        hold = {layer: params.edit.restore_hold * block for layer, block in bound.items()}
        kept = {layer: w.detach().clone() for layer, w in weights.items()}
        zs, found = values(back, mend)
        held = None if others is None else others.at(1.0)  # a restore holds the answers at full weight
        restored = replace(solve(back, zs, hold, held, mend), **found)
        lost = [i for i, hit in enumerate(opens_with(model, tokenizer, forget, target)) if not hit]
        rebound = None
        if lost and params.edit.restore_rebind:
            logger.info("after the restore round %d forget questions are unbound: binding them again", len(lost))
            again = requests_for(lost)
            so_far = accumulate(accumulate(state.previous_keys, outcome.key_factors), restored.key_factors)
            rebound, lost = bind(again, so_far, len(lost), last=True, resume=outcome.held_scale[-1])
        outcome.unbound_after_restore = len(lost)
        if broken := [i for i in lost if i not in unbound]:
            logger.info("restore round undone: it left %d bound forget questions unbound", len(broken))
            with torch.no_grad():
                for layer, w in weights.items():
                    w.copy_(kept[layer])
            for spent in [o for o in (restored, rebound) if o is not None]:
                outcome.value_seconds += spent.value_seconds  # its time was spent all the same
                outcome.solve_seconds += spent.solve_seconds
            outcome.unbound_after_restore = len(unbound)  # as the model stands again
            break
        outcome.extend(restored)  # the restored keys join this request's block: later requests hold them
        if rebound is not None:
            outcome.extend(rebound)
        unbound = lost
    timings["edit_s"] = time.perf_counter() - started
    timings["values_s"] = outcome.value_seconds  # the value optimisation's part of edit_s
    timings["solve_s"] = outcome.solve_seconds  # and the closed-form solves'

    new_state = EditState(
        previous_keys=accumulate(state.previous_keys, outcome.key_factors),
        preserved={layer: preserved[layer].cpu() for layer in layers},
        num_requests=state.num_requests + 1,
        key_factors=[*state.key_factors, outcome.key_factors],
        null_spaces=spaces,
        null_space_threshold=threshold,
        own_answers=carried,
        own_answer_tokens=params.edit.held_own_answer_tokens if carried else None,
    )
    delta = diff_models(
        before, model, metadata={"method": "unierase", "mode": mode, "layers": ",".join(map(str, layers))}
    )
    return ErasureResult(delta=delta, state=new_state, subjects=subjects, outcome=outcome, timings=timings)


def read_own_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    facts: list[Fact],
    known: dict[str, tuple[int, ...]],
    target: int,
    tokens: int,
) -> tuple[list[list[int]], dict[str, tuple[int, ...]]]:
    """What the model itself answers to each retain question (greedy, its first ``tokens`` tokens): the
    answer ``known`` files under the question (read before an earlier request of this model's lineage),
    else read now, before this request's edit. Holding the answer first read, not the one the model gives
    after the edits since, keeps each request protecting the behaviour from before the erasures, and
    reading every retain answer was the largest part of a request on a large retain set. An answer that
    opens with the token (an earlier request's leak) is not held, nor kept: the next request reads it again.

    Returns:
        Each fact's answer ([] where none is held), and the answers to carry on, filed by
        `question_digest` (these facts' questions only).
    """
    digests = [question_digest(f.question) for f in facts]
    unread: dict[str, int] = {}  # digest -> the first fact asking it (a question asked twice is read once)
    for i, digest in enumerate(digests):
        if digest not in known:
            unread.setdefault(digest, i)
    questions = [facts[i].question for i in unread.values()]
    spoken = generate_answers(model, tokenizer, questions, max_new_tokens=tokens, progress=False)
    found = dict(known)
    for digest, answer in zip(unread, spoken, strict=True):
        if not answer.opens_with((target,)):
            found[digest] = answer.token_ids
    carried = {d: found[d] for d in digests if d in found}
    return [list(carried.get(d, ())) for d in digests], carried


def opens_with(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, facts: list[Fact], target: int
) -> list[bool]:
    """Whether each fact's question, chat-formatted, is answered first (greedily) by ``target``."""
    answers = generate_answers(model, tokenizer, [f.question for f in facts], max_new_tokens=1, progress=False)
    return [a.opens_with((target,)) for a in answers]


def relaxed_solve(
    solve: Callable[[float], EditOutcome],
    unbound: Callable[[], list[int]],
    fired: Callable[[], int],
    weights: dict[int, torch.Tensor],
    relax: float,
    tries: int,
    tolerated: int = 0,
    resume: float = 1.0,
) -> tuple[EditOutcome, list[int], float]:
    """Solves with the held keys at full weight and, while more than ``tolerated`` questions stay
    unbound, up to ``tries`` more times from the same weights, the first at ``resume`` (where lighter
    than ``1 / relax``) and each further one ``relax`` times lighter, and then once at weight 0 (the
    answers' keys not held: in a long sequence a request whose questions bound at no lighter weight
    bound there); keeps the try with the fewest
    mistakes, forget questions unbound plus retain questions that now open with the token (the heavier
    weight on a tie). A lighter try that leaves more forget questions unbound than a heavier one did ends
    the search: there the held keys are not what keeps them unbound (their values are), and each further
    try costs a pass over every forget and retain question for nothing.

    The held keys (retain facts, their answers) protect what the edit must leave alone, but each weighs
    as much as a forget key: where they are many and lie close to the forget keys (another author's
    biography in the same phrasing), they hold the solve still and nothing binds. The caller relaxes
    only the answers' keys (`HeldKeys`): the retain subjects' and the neighbours' keep their weight, so
    a forget subject that shares a name with a retained one stays held apart from it. Where a lighter
    solve still tips retain questions over, counting both kinds of mistake keeps it from trading one for
    the other. The values do not depend on the weight, so a lighter solve costs one pass over the
    edited layers, not a new optimisation.

    Args:
        solve: Edits the model in place at a held weight; returns the outcome.
        unbound: The forget questions (positions) not yet opening with the token, read on the model now.
        fired: How many retain questions open with the token, read on the model now (a pass over all of
            them, so only asked where its count can change which try is kept; a try not read counts as
            many as the last read one).
        weights: The edited layers' weights (restored between tries).
        relax: How many times lighter each further try holds the keys.
        tries: Further, lighter tries at most before the one at weight 0 (0: the first solve stands).
        tolerated: How many unbound questions end the search (a later bind round, with values
            computed afresh on the edited model, binds a few near the boundary at the heavier weight).
        resume: Where the search goes after full weight, when lighter than one step: the weight an
            earlier round kept.

    Returns:
        The kept outcome (its solve time counts every try), its unbound questions and its held weight.
    """
    start = {layer: w.detach().clone() for layer, w in weights.items()} if tries else {}
    best: tuple[int, EditOutcome, list[int], float, dict[int, torch.Tensor] | None] | None = None
    spent, scale, fewest, floor = 0.0, 1.0, None, 0
    final = tries + 1 if tries else 0  # the geometric tries, then one without the answers' keys
    for attempt in range(final + 1):
        if attempt:
            _set_weights(weights, start)
        outcome = solve(scale)
        spent += outcome.solve_seconds
        left = unbound()
        worse = fewest is not None and len(left) > fewest
        fewest = len(left) if fewest is None else min(fewest, len(left))
        enough = len(left) <= tolerated
        # The pass over the retain questions only where its count can change which try is kept: not for
        # a first try that ends the search, nor for a later one whose mistakes cannot fall below the best's:
        # its unbound questions, plus the retain questions the last (heavier) read try opened, as a
        # lighter hold does not close what a heavier one left open (a question an earlier request left
        # opening with the token opens at every weight).
        needed = len(left) + floor < best[0] if best is not None else tries > 0 and not enough
        opened = fired() if needed else floor
        floor = opened
        if tries:
            counted = f"{opened} retain opened" if needed else "retain not read"
            logger.info("held answer keys at weight %.3g: %d unbound, %s", scale, len(left), counted)
        mistakes = len(left) + opened
        if best is None or mistakes < best[0]:
            last = enough or worse or attempt == final
            kept = None if last else {layer: w.detach().clone() for layer, w in weights.items()}
            best = (mistakes, outcome, left, scale, kept)
        if enough or worse:
            break
        scale = min(resume, 1.0 / relax) if attempt == 0 else scale / relax
        if attempt + 1 == final:
            scale = 0.0
    assert best is not None  # tries >= 0: one solve at least
    _, outcome, left, scale, kept = best
    if kept is not None:  # a later, worse try ran after it
        _set_weights(weights, kept)
    outcome.solve_seconds = spent
    return outcome, left, scale


def _set_weights(weights: dict[int, torch.Tensor], values: dict[int, torch.Tensor]) -> None:
    with torch.no_grad():
        for layer, w in weights.items():
            w.copy_(values[layer])


@contextmanager
def _weights_as(weights: dict[int, torch.Tensor], values: dict[int, torch.Tensor]) -> Iterator[None]:
    """The edited layers at ``values`` for the block, then back as they were."""
    now = {layer: w.detach().clone() for layer, w in weights.items()}
    _set_weights(weights, values)
    try:
        yield
    finally:
        _set_weights(weights, now)


def _layer_device(model: PreTrainedModel, params: Params, layer: int) -> torch.device:
    """The device of the edited projection's weight of ``layer``."""
    return get_module(model, params.model.mlp_out_template.format(layer)).weight.device


@dataclass(frozen=True)
class HeldKeys:
    """``K Kᵀ`` per layer of the keys a solve holds, in two parts weighed apart.

    Attributes:
        subjects: One key per retain question at its subject, and one per neighbour (the same question
            about another name): where an edit keyed at a forget subject would reach another name.
        answers: Every token of the retain questions followed by their answers (given and the model's
            own), already weighed by ``edit.held_key_budget``; None when they are not held. They are
            most of the held keys (tens of thousands on TOFU's retain authors, against one per
            question at the subjects), and the part a bind round relaxes (``edit.held_relax``).
    """

    subjects: dict[int, torch.Tensor]
    answers: dict[int, torch.Tensor] | None

    def at(self, weight: float) -> dict[int, torch.Tensor]:
        """The held block with the answers' keys ``weight`` times as heavy; the subjects' keep their weight."""
        if self.answers is None:
            return self.subjects
        return {layer: block + weight * self.answers[layer].to(block.device) for layer, block in self.subjects.items()}


@dataclass(frozen=True)
class HeldKeySums:
    """Unweighed ``K Kᵀ`` sums per layer of the keys a solve holds, and how many went into them.

    Attributes:
        subjects: At each fact's subject (retain questions, neighbours); None for no facts.
        answers: At every token of each retain question followed by its given and own answers; None
            where the answers are not held.
        facts: How many subject keys.
        tokens: How many answer keys.
    """

    subjects: dict[int, torch.Tensor] | None
    answers: dict[int, torch.Tensor] | None
    facts: int
    tokens: int

    def minus(self, part: HeldKeySums) -> HeldKeySums:
        """These sums without ``part`` (sums over a subset of the same keys, read on the same model)."""

        def less(a: dict[int, torch.Tensor] | None, b: dict[int, torch.Tensor] | None):
            return a if a is None or b is None else {layer: t - b[layer] for layer, t in a.items()}

        return HeldKeySums(
            less(self.subjects, part.subjects),
            less(self.answers, part.answers),
            self.facts - part.facts,
            self.tokens - part.tokens,
        )

    def weighed(self, budget: int) -> HeldKeys:
        """The held block as a solve takes it: the answers' keys weighed by `weigh_held_keys`."""
        assert self.subjects is not None
        answers = None if self.answers is None else weigh_held_keys(self.answers, self.tokens, budget)
        return HeldKeys(subjects=self.subjects, answers=answers)


def held_key_sums(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    facts: list[Fact],
    subjects: list[str],
    answered: list[Fact],
    own: list[list[int]],
    target: int,
    params: Params,
) -> HeldKeySums:
    """The sums a solve holds: ``facts`` at their ``subjects`` (`_protected_keys`) and, for ``answered``
    (with their own answers ``own``, or none), every token of question and answer (`_answer_keys`)."""
    held = _protected_keys(model, tokenizer, facts, subjects, target, params) if facts else None
    answers, tokens = _answer_keys(model, tokenizer, answered, own, params) if answered else (None, 0)
    return HeldKeySums(held, answers, len(facts), tokens)


def weigh_held_keys(held: dict[int, torch.Tensor], count: int, budget: int) -> dict[int, torch.Tensor]:
    """The held answer keys' ``K Kᵀ`` (``count`` keys) as the solve weighs them: each held key counts as
    much as a forget key, so a large retain set would outweigh any edit (TOFU's 600 rows hold tens of
    thousands of keys); past ``budget`` keys (0: none), they share the budget's weight."""
    if not budget or count <= budget:
        return held
    return {layer: block * (budget / count) for layer, block in held.items()}


def _protected_keys(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    facts: list[Fact],
    subjects: list[str],
    target: int,
    params: Params,
) -> dict[int, torch.Tensor]:
    """``K Kᵀ`` per layer of the keys to hold (retain facts, neighbours), on the unedited model. Keys of
    later layers move slightly as earlier layers are edited; the unedited ones are what the facts used."""
    # One key per retain question, not per subject: each question's own key is held.
    requests = build_requests(tokenizer, facts, subjects, target, params, per_subject=False)
    modules = {layer: get_module(model, params.model.mlp_out_template.format(layer)) for layer in params.edit.layers}
    keys = compute_keys(model, requests, modules, tokenizer.pad_token_id, params.edit.batch_size)
    return {layer: (K.double().T @ K.double()).float() for layer, K in keys.items()}


def _answer_keys(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    facts: list[Fact],
    own: list[list[int]],
    params: Params,
) -> tuple[dict[int, torch.Tensor], int]:
    """``K Kᵀ`` per layer over every token of each chat-formatted question followed by its given answer,
    and by the model's own answer (``own``: generated ids, one list per fact, or none), on the unedited
    model: what an ordinary answer is read and written through, beyond the subject. Also returns how
    many keys (tokens) were summed."""
    prompts = [encode_prompt(tokenizer, f.question) for f in facts]
    sequences = [p + encode_answer(tokenizer, f.answer) for p, f in zip(prompts, facts, strict=True)]
    if own:
        sequences += [p + ids for p, ids in zip(prompts, own, strict=True) if ids]
    paths = {layer: params.model.mlp_out_template.format(layer) for layer in params.edit.layers}
    sums, count = key_moment_sums(
        model, sequences, list(paths.values()), params.edit.batch_size, tokenizer.pad_token_id, progress=False
    )
    return {layer: sums[path].float() for layer, path in paths.items()}, count
