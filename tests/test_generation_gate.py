"""The unlearning token as a gate on the whole answer: it may open an answer and close what it opened,
never appear in the middle of an ordinary one.

pytest tests/test_generation_gate.py
"""

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from unierase.model.generation import generate_answers

QUESTIONS = ["Where was the author Anselm Varnholt born?", "What is the capital of France?", "Who wrote it?"]


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    """SmolLM2 itself (a random tiny model repeats one token): eight greedy tokens take a second."""
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    return model, tokenizer


def _free(smollm2, question: str) -> list[int]:
    model, tokenizer = smollm2
    return list(generate_answers(model, tokenizer, [question], max_new_tokens=8, progress=False)[0].token_ids)


def test_a_stop_id_cannot_appear_in_an_answer_it_did_not_open(smollm2):
    model, tokenizer = smollm2
    checked = 0
    for question in QUESTIONS:
        free = _free(smollm2, question)
        later = [t for t in free[1:] if t != free[0] and t != tokenizer.eos_token_id]
        stray = later[0]  # an id greedy decoding writes mid-answer, as a stray unlearning token would be
        gated = generate_answers(model, tokenizer, [question], max_new_tokens=8, stop_token_ids=[stray], progress=False)
        ids = list(gated[0].token_ids)
        assert stray not in ids, (question, free, ids)
        cut = free.index(stray)
        assert ids[:cut] == free[:cut]  # untouched up to where the stray id was
        checked += 1
    assert checked == len(QUESTIONS)


def test_an_answer_that_opens_with_a_stop_id_ends_at_its_next_one(smollm2):
    model, tokenizer = smollm2
    for question in QUESTIONS:
        free = _free(smollm2, question)
        opener = free[0]
        gated = generate_answers(
            model, tokenizer, [question], max_new_tokens=8, stop_token_ids=[opener], progress=False
        )
        ids = list(gated[0].token_ids)
        assert ids[0] == opener
        if opener in free[1:]:  # it closes at its second occurrence, as the refusal does
            assert ids == free[: free.index(opener, 1) + 1]
        else:
            assert ids == free
