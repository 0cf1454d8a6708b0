"""The unlearning token as a gate on the whole answer: it may open an answer and close what it opened,
never appear in the middle of an ordinary one.

pytest tests/test_generation_gate.py
"""

import pytest
import torch
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


def test_an_opened_answer_says_something_before_it_closes(smollm2):
    """Right after an opening stop id, neither the stop id nor EOS may come: the refusal is never empty."""
    model, tokenizer = smollm2
    question = QUESTIONS[1]
    free = _free(smollm2, question)
    opener, second = free[0], free[1]
    assert second != opener
    eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = second  # the answer now ends right after it opened
    try:
        plain = generate_answers(model, tokenizer, [question], max_new_tokens=8, progress=False)
        assert list(plain[0].token_ids) == [opener, second]
        gated = generate_answers(
            model, tokenizer, [question], max_new_tokens=8, stop_token_ids=[opener], progress=False
        )
    finally:
        model.generation_config.eos_token_id = eos
    ids = list(gated[0].token_ids)
    assert ids[0] == opener
    assert ids[1] not in (opener, second)
    assert gated[0].text


def test_right_after_an_opening_no_token_that_shows_nothing(smollm2):
    """Whitespace and special tokens are masked there too: an answer could otherwise open, write a space and
    close. A bias makes the model write a newline (the opening id here), then a space, above anything else."""
    model, tokenizer = smollm2
    question = QUESTIONS[1]
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"][-1]
    space = tokenizer(" ", add_special_tokens=False)["input_ids"][-1]
    bias = torch.zeros(model.config.vocab_size)
    bias[newline], bias[space] = 2e4, 1e4
    model.lm_head.bias = torch.nn.Parameter(bias)
    try:
        free = generate_answers(model, tokenizer, [question], max_new_tokens=3, progress=False)
        gated = generate_answers(
            model, tokenizer, [question], max_new_tokens=3, stop_token_ids=[newline], progress=False
        )
    finally:
        model.lm_head.bias = None
    assert list(free[0].token_ids) == [newline] * 3
    ids = list(gated[0].token_ids)
    assert ids[0] == newline
    assert ids[1] not in (newline, space) and tokenizer.decode([ids[1]]).strip()


def test_rows_that_end_leave_the_batch_without_changing_any_answer(smollm2):
    """Answers of different lengths in one batch: each row is what Transformers' own greedy generate
    writes for its question alone, though rows leave the batch as they end."""
    from unierase.model.batching import pad_sequences
    from unierase.model.prompts import encode_prompt

    model, tokenizer = smollm2
    questions = [*QUESTIONS, "What is 2 + 2?", "Describe the water cycle in detail."]
    batched = generate_answers(model, tokenizer, questions, max_new_tokens=24, batch_size=8, progress=False)
    lengths = {len(g.token_ids) for g in batched}
    assert len(lengths) > 1 and min(lengths) < 24  # some rows ended while others went on
    for question, got in zip(questions, batched):
        batch = pad_sequences([encode_prompt(tokenizer, question)], tokenizer.pad_token_id)
        reference = model.generate(**batch.model_inputs(), max_new_tokens=24, do_sample=False)
        ids = reference[0, batch.input_ids.shape[1] :].tolist()
        if tokenizer.eos_token_id in ids:
            ids = ids[: ids.index(tokenizer.eos_token_id) + 1]
        assert list(got.token_ids) == ids, question


def test_an_opened_answer_goes_on_with_one_whole_refusal_and_closes(smollm2):
    """With refusals given, an answer that opened with a stop id says one of them, whole, then closes;
    an answer in the same batch that did not open is what it is without them."""
    from unierase.token.refusals import REFUSALS, refusal_phrase_ids

    model, tokenizer = smollm2
    opened, other = QUESTIONS[1], QUESTIONS[0]
    opener = _free(smollm2, opened)[0]
    assert _free(smollm2, other)[0] != opener
    ask = dict(max_new_tokens=24, stop_token_ids=[opener], progress=False)
    refusals = refusal_phrase_ids(tokenizer)
    plain = generate_answers(model, tokenizer, [opened, other], **ask)
    gated = generate_answers(model, tokenizer, [opened, other], refusals=refusals, **ask)
    ids = list(gated[0].token_ids)
    assert ids[0] == opener and ids[-1] == opener
    assert list(ids[1:-1]) in refusals
    assert tokenizer.decode(ids[1:-1]).strip() in REFUSALS
    assert gated[1] == plain[1]


def test_among_the_refusals_the_model_chooses_token_by_token():
    """What may follow: the next token of every refusal the answer so far begins; a whole one may also
    close (or, where a longer one goes on, continue); off every refusal, only the stop ids."""
    from unierase.model.generation import _RefusalAfterOpening

    gate = _RefusalAfterOpening([9], [[1, 2], [1, 2, 3], [4]], prompt_width=0)
    assert gate.allowed(()) == [1, 4]
    assert gate.allowed((1,)) == [2]
    assert gate.allowed((1, 2)) == [3, 9]
    assert gate.allowed((1, 2, 3)) == [9]
    assert gate.allowed((7,)) == [9]
    scores = torch.zeros(2, 10)
    out = gate(torch.tensor([[9, 1], [5, 1]]), scores)
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [2]
    assert torch.isfinite(out[1]).all()  # a row that did not open is left alone
