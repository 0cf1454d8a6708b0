"""Batched generation runs the head every chat-formatted prompt shares once: the answers and the first
token's logits must be what each question alone, through the whole model, gives.

pytest tests/test_generation_prefill.py
"""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unierase.model.batching import shared_head
from unierase.model.generation import _prefill, generate_answers
from unierase.model.prompts import encode_prompt

# Unlike lengths and wording, a question shorter than most, one that is not about an author at all.
QUESTIONS = [
    "Where was the author Anselm Varnholt born?",
    "What is the capital of France?",
    "Who wrote it?",
    "What genre of books does the writer Mireille Ostrander, born in Lyon in 1961, mostly publish?",
    "Name one river that flows through Germany.",
    "How many legs does a spider have?",
]


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    return model, tokenizer


def test_shared_head_counts_the_common_first_tokens_and_leaves_each_sequence_one():
    assert shared_head([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_head([[1, 2, 3], [1, 2, 3]]) == 2  # never the whole of a sequence
    assert shared_head([[7, 8], [9, 8]]) == 0
    assert shared_head([[1, 2, 3]]) == 2


def test_the_first_token_logits_match_each_prompt_run_alone_through_the_whole_model(smollm2):
    model, tokenizer = smollm2
    encoded = [encode_prompt(tokenizer, q) for q in QUESTIONS]
    assert shared_head(encoded) >= 10  # the template's system turn is shared: the split is exercised
    with torch.no_grad():
        prefilled = _prefill(model, encoded, tokenizer.pad_token_id, torch.device("cpu"))
        alone = torch.cat([model(input_ids=torch.tensor([ids])).logits[:, -1] for ids in encoded])
    torch.testing.assert_close(prefilled.logits, alone, atol=1e-4, rtol=1e-4)


def test_batched_answers_equal_each_question_generated_alone(smollm2):
    model, tokenizer = smollm2
    batched = generate_answers(model, tokenizer, QUESTIONS, max_new_tokens=12, batch_size=4, progress=False)
    eos = tokenizer.eos_token_id
    for question, answer in zip(QUESTIONS, batched, strict=True):
        ids = torch.tensor([encode_prompt(tokenizer, question)])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
        alone = out[0, ids.shape[1] :].tolist()
        if eos in alone:
            alone = alone[: alone.index(eos) + 1]
        assert list(answer.token_ids) == alone, question
