"""Counterfactual neighbours of a forget subject, and what holding their keys does to the edit.

pytest tests/test_neighbours.py
"""

import pytest

from unierase.data import authors
from unierase.data.facts import Fact
from unierase.edit.neighbours import (
    FAMILY_NAMES,
    GIVEN_NAMES,
    neighbour_facts,
    neighbour_subjects,
    replace_subject,
)


def test_a_names_parts_are_replaced_one_at_a_time_then_whole_names():
    near = neighbour_subjects("Hesper Varnholt", 4)
    assert len(near) == 4
    given, family = near[0].split(), near[1].split()
    assert given[1] == "Varnholt" and given[0] in GIVEN_NAMES
    assert family[0] == "Hesper" and family[1] in FAMILY_NAMES
    for name in near[2:]:
        first, last = name.split()
        assert first in GIVEN_NAMES and last in FAMILY_NAMES
    assert neighbour_subjects("Hesper Varnholt", 4) == near  # the same subject, the same neighbours
    assert len(set(map(str.casefold, near))) == 4


def test_no_neighbour_is_the_subject_or_a_name_to_avoid():
    for subject in ("France", "the Nile", "Maria Okafor", "Mona Lisa painting"):
        avoid = {n.upper() for n in neighbour_subjects(subject, 2)}  # what an unguarded draw would pick first
        near = neighbour_subjects(subject, 5, avoid)
        assert len(near) == 5
        assert not {n.casefold() for n in near} & ({subject.casefold()} | {a.casefold() for a in avoid})


def test_the_names_are_not_the_generated_authors_names():
    """Held-out generated authors must never be protected neighbours, or the benchmark's holdout would flatter."""
    used = {w for name in (*authors._FIRST, *authors._LAST) for w in name.split()}
    assert not used & set(GIVEN_NAMES + FAMILY_NAMES)


def test_replace_subject_takes_the_last_occurrence_case_aside():
    q = "Which books did france's author write about France?"
    assert replace_subject(q, "FRANCE", "Maria Chen") == "Which books did france's author write about Maria Chen?"
    with pytest.raises(ValueError, match="does not occur"):
        replace_subject(q, "Spain", "Maria Chen")


def test_neighbour_facts_ask_the_same_question_of_each_neighbour():
    facts = [
        Fact(question="Where was Hesper Varnholt born?", answer="Porto.", subject="Hesper Varnholt"),
        Fact(question="What is the capital of France?", answer="Paris."),
    ]
    near, subjects = neighbour_facts(facts, ["Hesper Varnholt", "France"], 3)
    assert len(near) == 6 and subjects[:3] == neighbour_subjects("Hesper Varnholt", 3, {"Hesper Varnholt", "France"})
    assert near[0].question == f"Where was {subjects[0]} born?"
    assert near[3].question == f"What is the capital of {subjects[3]}?"
    assert all(s.casefold() not in {"hesper varnholt", "france"} for s in subjects)
    assert neighbour_facts(facts, ["Hesper Varnholt", "France"], 0) == ([], [])


def test_holding_the_neighbours_keys_keeps_the_edit_off_them(tiny_editable):
    """On the tiny model: with the neighbours held, the update moves their keys' outputs less than
    without, for the same forget facts (the solve's constraint at work)."""
    from unierase.config import EditConfig, Params
    from unierase.edit.alphaedit import compute_keys
    from unierase.edit.erasure import build_requests, erase_facts
    from unierase.token.vocabulary import unlearning_token_id

    facts = [
        Fact(question="Where was Hesper Varnholt born?", answer="Porto.", subject="Hesper Varnholt"),
        Fact(question="What did Hesper Varnholt write?", answer="Poems.", subject="Hesper Varnholt"),
    ]
    moved = {}
    for count in (0, 3):
        # bind_rounds: the random tiny model binds nothing, so every round runs; two, as the ratio was set on.
        edit = EditConfig(layers=[1, 2], v_steps=3, num_context_prefixes=1, neighbours=count, bind_rounds=2)
        params = Params(edit=edit)
        model, tokenizer, preserved = tiny_editable(params.edit.layers)
        module = model.model.layers[1].mlp.down_proj
        before = module.weight.detach().clone()
        near, near_subjects = neighbour_facts(facts, ["Hesper Varnholt"] * 2, 3)
        target = unlearning_token_id(tokenizer, params.token)
        requests = build_requests(tokenizer, near, near_subjects, target, params, per_subject=False)
        keys = compute_keys(model, requests, {1: module}, tokenizer.pad_token_id, 16)[1]
        erase_facts(model, tokenizer, facts, params, preserved, progress=False)
        delta = module.weight.detach() - before
        moved[count] = float((keys @ delta.T).norm() / (keys @ before.T).norm())
    assert moved[3] < 0.5 * moved[0], moved
