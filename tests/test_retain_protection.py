"""What holding the retain facts' answer keys does to the edit.

pytest tests/test_retain_protection.py
"""

from unierase.config import EditConfig, Params
from unierase.data.facts import Fact
from unierase.edit.erasure import _protected_keys, erase_facts, held_key_sums, read_own_answers
from unierase.edit.preserved import key_second_moment
from unierase.edit.state import question_digest
from unierase.model.generation import generate_answers
from unierase.model.prompts import encode_answer, encode_prompt
from unierase.stages.artifacts import OWN_ANSWERS_FILE, load_state, save_state
from unierase.token.vocabulary import unlearning_token_id

FORGET = [Fact(question="What is the capital of Hungary?", answer="Budapest.", subject="Hungary")]
RETAIN = [
    Fact(question="What is the capital of Mexico?", answer="The capital of Mexico is Mexico City.", subject="Mexico"),
    Fact(question="What is the capital of Belgium?", answer="Brussels is the capital of Belgium.", subject="Belgium"),
]


def _moved(tiny_editable, edit: EditConfig, answered, at_subjects: bool = False) -> float:
    """How far one erasure moves the first edited layer's outputs at every token of the retain questions
    followed by ``answered(model, tokenizer)`` (one answer's ids per retain fact), or with ``at_subjects``
    at each retain question's subject key alone, relative to their size: ``tr(Δ C Δᵀ) / tr(W C Wᵀ)``
    with ``C`` the ``k kᵀ`` summed over those keys."""
    # The random tiny model binds nothing, so every bind round runs: two, as these ratios were set on.
    params = Params(edit=edit.model_copy(update={"bind_rounds": 2}))
    model, tokenizer, preserved = tiny_editable(params.edit.layers)
    paths = [f"model.layers.{i}.mlp.down_proj" for i in params.edit.layers]
    if at_subjects:
        target = unlearning_token_id(tokenizer, params.token)
        second = _protected_keys(model, tokenizer, RETAIN, [f.subject for f in RETAIN], target, params)[1]
    else:
        answers = answered(model, tokenizer)
        sequences = [encode_prompt(tokenizer, f.question) + ids for f, ids in zip(RETAIN, answers, strict=True)]
        held, _ = key_second_moment(model, sequences, paths[:1], 8, tokenizer.pad_token_id, progress=False)
        second = held[paths[0]].float()
    module = model.model.layers[1].mlp.down_proj
    before = module.weight.detach().clone()
    erase_facts(model, tokenizer, FORGET, params, preserved, RETAIN, progress=False)
    delta = module.weight.detach() - before
    return float((delta @ second @ delta.T).trace() / (before @ second @ before.T).trace())


def _given(model, tokenizer) -> list[list[int]]:
    return [encode_answer(tokenizer, f.answer) for f in RETAIN]


def _own(model, tokenizer) -> list[list[int]]:
    generations = generate_answers(model, tokenizer, [f.question for f in RETAIN], max_new_tokens=8, progress=False)
    return [list(g.token_ids) for g in generations]


def test_holding_the_retain_answers_keeps_the_edit_off_every_token_of_them(tiny_editable):
    """On the tiny model: with the answers held, the update moves the outputs at every token of the
    retain questions and answers less than with their subjects alone held."""
    moved = {
        answers: _moved(
            tiny_editable,
            EditConfig(layers=[1, 2], v_steps=3, num_context_prefixes=1, protect_retain_answers=answers),
            _given,
        )
        for answers in (False, True)
    }
    assert moved[True] < 0.5 * moved[False], moved


def test_holding_the_models_own_answers_keeps_the_edit_off_what_it_says(tiny_editable):
    """The model's own greedy answers differ from the given ones (on the random tiny model, entirely):
    held as well, the update moves the outputs along what the model says less than with the given
    answers alone held."""
    moved = {
        tokens: _moved(
            tiny_editable,
            EditConfig(layers=[1, 2], v_steps=3, num_context_prefixes=1, held_own_answer_tokens=tokens),
            _own,
        )
        for tokens in (0, 8)
    }
    # Less reduction than the given answers' own test shows: those answers stay held in both runs, and on
    # the tiny model their keys lie near the generated ones.
    assert moved[8] < 0.75 * moved[0], moved


def test_own_answers_known_from_an_earlier_request_are_held_and_the_others_read(tiny_editable):
    """A question the lineage read before keeps that answer; the others are read now (what greedy
    generation says); an answer opening with the token is neither held nor carried; and what is carried
    covers the questions asked, nothing else."""
    model, tokenizer, _ = tiny_editable([1])
    spoken = _own(model, tokenizer)
    first, second = (question_digest(f.question) for f in RETAIN)
    known = {first: (5, 6, 7), question_digest("What is the capital of Peru?"): (8, 9)}
    answers, carried = read_own_answers(
        model, tokenizer, RETAIN, known, unlearning_token_id(tokenizer, Params().token), 8
    )
    assert answers == [[5, 6, 7], spoken[1]]
    assert carried == {first: (5, 6, 7), second: tuple(spoken[1])}
    # The token taken to be the one the model opens the second answer with: that answer is not held.
    answers, carried = read_own_answers(model, tokenizer, RETAIN, known, spoken[1][0], 8)
    assert answers == [[5, 6, 7], []] and carried == {first: (5, 6, 7)}


def test_a_sequence_holds_the_own_answers_its_first_request_read(tiny_editable, tmp_path):
    """The state after an erasure carries the retain answers it held (by question digest, beside the
    state file and without any question's text); the next request holds those, not what the edited
    model says now, unless they were read to another length; a question no longer retained is dropped."""
    edit = EditConfig(layers=[1, 2], v_steps=3, num_context_prefixes=1, held_own_answer_tokens=8, bind_rounds=0)
    params = Params(edit=edit)
    model, tokenizer, preserved = tiny_editable(params.edit.layers)
    before = _own(model, tokenizer)
    state = erase_facts(model, tokenizer, FORGET, params, preserved, RETAIN, progress=False).state
    first, second = (question_digest(f.question) for f in RETAIN)
    assert state.own_answers == {first: tuple(before[0]), second: tuple(before[1])}
    assert state.own_answer_tokens == 8
    save_state(state, tmp_path / "state.safetensors")
    written = (tmp_path / OWN_ANSWERS_FILE).read_text()
    assert "capital" not in written and first in written
    state = load_state(tmp_path / "state.safetensors")
    assert state.own_answers[first] == tuple(before[0])

    state.own_answers[first] = (5, 6, 7)  # what an earlier read would have found, whatever the model says now
    later = [Fact(question="Who painted the Mona Lisa?", answer="Leonardo da Vinci.", subject="Mona Lisa")]
    carried = erase_facts(model, tokenizer, later, params, None, RETAIN[:1], state=state, progress=False).state
    assert carried.own_answers == {first: (5, 6, 7)}

    state.own_answer_tokens = 4  # read to another length: read again
    again = erase_facts(model, tokenizer, later, params, None, RETAIN[:1], state=state, progress=False).state
    assert again.own_answers[first] != (5, 6, 7) and len(again.own_answers[first]) <= 8


def test_taking_some_facts_out_of_the_held_sums_gives_the_sums_of_the_others(tiny_editable):
    """A restore round holds every retain fact but the mended ones: the whole block less their part is
    the block of the others read on their own (the sums are over keys, so the parts add up)."""
    import torch

    params = Params(edit=EditConfig(layers=[1, 2], num_context_prefixes=1))
    model, tokenizer, _ = tiny_editable(params.edit.layers)
    target = unlearning_token_id(tokenizer, params.token)
    facts = [*RETAIN, FORGET[0]]
    own = _own(model, tokenizer) + [[]]  # one answer not held beside the given one

    def sums(picked: list[int]):
        chosen = [facts[i] for i in picked]
        subjects = [f.subject for f in chosen]
        return held_key_sums(model, tokenizer, chosen, subjects, chosen, [own[i] for i in picked], target, params)

    less, alone = sums([0, 1, 2]).minus(sums([1])), sums([0, 2])
    assert (less.facts, less.tokens) == (alone.facts, alone.tokens) == (2, alone.tokens)
    for layer in params.edit.layers:
        for got, want in ((less.subjects[layer], alone.subjects[layer]), (less.answers[layer], alone.answers[layer])):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_a_held_key_budget_weighs_a_large_retain_set_down_and_a_small_one_not_at_all(tiny_editable):
    """Past ``held_key_budget`` the held keys share its weight, so the edit moves the retain tokens more
    (here the two retain facts hold about fifty keys); under the budget nothing changes."""

    def moved(budget: int) -> float:
        edit = EditConfig(layers=[1, 2], v_steps=3, num_context_prefixes=1, held_own_answer_tokens=0)
        return _moved(tiny_editable, edit.model_copy(update={"held_key_budget": budget}), _given)

    full, roomy, tight = moved(0), moved(100_000), moved(2)
    assert roomy == full
    assert tight > 2 * full, (tight, full)


def test_a_held_key_budget_leaves_the_retain_subjects_at_full_weight(tiny_editable):
    """The budget weighs down only the answers' keys (every token): at the retain questions' own subject
    keys, where a forget subject sharing a name would reach, the edit moves the outputs far less than
    it moves them over the retain tokens as a whole once those are weighed down."""

    def moved(budget: int, at_subjects: bool) -> float:
        edit = EditConfig(layers=[1, 2], v_steps=3, num_context_prefixes=1, held_own_answer_tokens=0)
        return _moved(tiny_editable, edit.model_copy(update={"held_key_budget": budget}), _given, at_subjects)

    subjects_full, subjects_tight = moved(0, True), moved(2, True)
    tokens_full, tokens_tight = moved(0, False), moved(2, False)
    assert subjects_tight / subjects_full < 0.5 * tokens_tight / tokens_full


def _search(
    bound_at,
    tries: int = 5,
    relax: float = 4.0,
    tolerated: int = 0,
    fired_at=lambda s: 0,
    resume: float = 1.0,
    read: list[float] | None = None,
):
    """`relaxed_solve` over one weight whose value is the held scale each solve wrote; ``bound_at(scale)``
    says which of four questions that solve left unbound. Returns its result, the weight left in place
    and the scales tried; ``read`` collects the scales whose retain questions were read."""
    import torch

    from unierase.edit.alphaedit import EditOutcome
    from unierase.edit.erasure import relaxed_solve

    weights, tried = {0: torch.zeros(1)}, []

    def solve(scale: float) -> EditOutcome:
        tried.append(scale)
        with torch.no_grad():
            weights[0].add_(scale)  # from the restored start: the weight shows which solve it came from
        return EditOutcome(solve_seconds=1.0)

    def unbound() -> list[int]:
        return bound_at(float(weights[0]))

    def fired() -> int:
        if read is not None:
            read.append(float(weights[0]))
        return fired_at(float(weights[0]))

    outcome, left, scale = relaxed_solve(solve, unbound, fired, weights, relax, tries, tolerated, resume)
    return outcome, left, scale, float(weights[0]), tried


def test_a_solve_that_binds_everything_is_not_searched():
    outcome, left, scale, weight, tried = _search(lambda s: [])
    assert (left, scale, weight, tried, outcome.solve_seconds) == ([], 1.0, 1.0, [1.0], 1.0)


def test_the_held_keys_are_relaxed_until_every_question_binds():
    """Held at full weight, three of four questions stay unbound; each try holds the keys four times
    lighter, from the weights before the first (not on top of it), and the search stops at the first
    that binds all; its solve time counts every try."""
    outcome, left, scale, weight, tried = _search(lambda s: [0, 1, 2][: 3 if s > 0.1 else 0])
    assert tried == [1.0, 0.25, 0.0625]
    assert (left, scale, weight, outcome.solve_seconds) == ([], 0.0625, 0.0625, 3.0)


def test_the_try_that_binds_most_is_kept_the_heavier_on_a_tie():
    """No try binds all: the kept one leaves fewest unbound; of two that leave as many, the heavier
    weight (more protection); the weights are put back to its solve's."""
    left_at = {1.0: 3, 0.25: 1, 0.0625: 1, 0.015625: 1, 0.0: 2}
    outcome, left, scale, weight, tried = _search(lambda s: list(range(left_at[s])), tries=3)
    assert tried == list(left_at)
    assert (len(left), scale, weight, outcome.solve_seconds) == (1, 0.25, 0.25, 5.0)


def test_questions_no_lighter_weight_binds_get_a_last_try_without_the_answers_keys():
    """After the lighter tries, one solve holds none of the answers' keys (the retain subjects' and the
    neighbours' still hold); it is kept where it binds more."""
    outcome, left, scale, weight, tried = _search(lambda s: [0, 1] if s > 0 else [])
    assert tried == [1.0, 0.25, 0.0625, 0.015625, 0.00390625, 0.0009765625, 0.0]
    assert (left, scale, weight, outcome.solve_seconds) == ([], 0.0, 0.0, 7.0)


def test_a_later_round_tries_full_weight_then_resumes_from_the_earlier_round():
    """A later bind round first solves at full weight (its fresh values may bind there); where that
    leaves questions unbound, the search goes on from the weight the round before kept, not from one
    step lighter; a resume weight heavier than one step changes nothing."""
    left_at = lambda s: [0] if s > 1 / 500 else []  # noqa: E731
    _, left, scale, weight, tried = _search(left_at, resume=1 / 256)
    assert tried == [1.0, 1 / 256, 1 / 1024]
    assert (left, scale, weight) == ([], 1 / 1024, 1 / 1024)
    _, _, _, _, tried = _search(lambda s: [], resume=1 / 256)
    assert tried == [1.0]  # full weight binds: no search
    _, _, _, _, tried = _search(left_at, resume=0.5)
    assert tried == [1.0, 0.25, 0.0625, 0.015625, 0.00390625, 0.0009765625]


def test_no_tries_keeps_the_full_weight():
    _, left, scale, _, tried = _search(lambda s: [0], tries=0)
    assert (left, scale, tried) == ([0], 1.0, [1.0])


def test_a_round_that_tolerates_a_few_unbound_stops_relaxing_there():
    """Before the last bind round, a few unbound questions are left to the next one at the heavier
    weight: the search stops at the first try that leaves no more than the round tolerates."""
    left_at = {1.0: 4, 0.25: 2, 0.0625: 0}
    _, left, scale, weight, tried = _search(lambda s: list(range(left_at[s])), tolerated=2)
    assert (len(left), scale, weight, tried) == (2, 0.25, 0.25, [1.0, 0.25])
    _, left, scale, _, _ = _search(lambda s: list(range(left_at[s])), tolerated=4)
    assert (len(left), scale) == (4, 1.0)  # the first solve is within it: not searched


def test_a_lighter_solve_that_tips_retain_questions_over_is_not_kept():
    """Mistakes are counted on both sides: a lighter weight that binds two more forget questions but
    makes three retain questions open with the token loses to the heavier one."""
    left_at = {1.0: 3, 0.25: 1, 0.0625: 0}
    fired_at = {1.0: 0, 0.25: 3, 0.0625: 9}
    _, left, scale, weight, tried = _search(lambda s: list(range(left_at[s])), fired_at=fired_at.get)
    assert tried == [1.0, 0.25, 0.0625]  # searched until all bound
    assert (len(left), scale, weight) == (3, 1.0, 1.0)  # and the full weight put back


def test_a_lighter_solve_that_unbinds_more_ends_the_search():
    """Where a lighter weight leaves more forget questions unbound than a heavier one did, the held keys
    are not what keeps them unbound: the search stops there, and the heavier try is put back."""
    left_at = {1.0: 1, 0.25: 2, 0.0625: 0}
    _, left, scale, weight, tried = _search(lambda s: list(range(left_at[s])))
    assert tried == [1.0, 0.25]
    assert (len(left), scale, weight) == (1, 1.0, 1.0)
    left_at = {1.0: 3, 0.25: 3, 0.0625: 2, 0.015625: 0}  # as many, then fewer: the search goes on
    _, left, scale, _, tried = _search(lambda s: list(range(left_at[s])))
    assert (tried, left, scale) == (list(left_at), [], 0.015625)


def test_the_retain_questions_are_read_only_where_they_can_change_the_kept_try():
    """Each read is a pass over every retain question: none when full weight binds all; in a search,
    the first try's, then only a try whose unbound questions alone are fewer than the best's mistakes.
    The kept try is the one reading every try would keep."""
    read: list[float] = []
    _search(lambda s: [], read=read)
    assert read == []
    left_at = {1.0: 3, 0.25: 3, 0.0625: 2, 0.015625: 0}
    _, left, scale, _, tried = _search(lambda s: list(range(left_at[s])), read=read)
    assert tried == list(left_at)
    assert read == [1.0, 0.0625, 0.015625]
    assert (left, scale) == ([], 0.015625)
    read.clear()
    fired_at = {1.0: 0, 0.25: 0, 0.0625: 2, 0.015625: 5}  # lighter tries tip retain questions over
    _, left, scale, weight, _ = _search(lambda s: list(range(left_at[s])), fired_at=fired_at.get, read=read)
    assert read == [1.0, 0.0625, 0.015625]
    assert (len(left), scale, weight) == (3, 1.0, 1.0)
    read.clear()
    # A retain question an earlier request left opening with the token opens at every weight: a try is
    # read only where its unbound questions plus that one can fall below the best's mistakes.
    _, left, scale, weight, _ = _search(lambda s: list(range(left_at[s])), fired_at=lambda s: 1, read=read)
    assert read == [1.0, 0.0625, 0.015625]
    assert (left, scale, weight) == ([], 0.015625, 0.015625)
