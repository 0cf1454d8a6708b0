"""What holding the retain facts' answer keys does to the edit.

pytest tests/test_retain_protection.py
"""

from transformers import AutoModelForCausalLM, AutoTokenizer

from unierase.config import EditConfig, Params
from unierase.data.facts import Fact
from unierase.edit.erasure import erase_facts
from unierase.edit.preserved import key_second_moment, preserved_second_moment
from unierase.model.prompts import encode_answer, encode_prompt
from unierase.token.vocabulary import add_unlearning_tokens

FORGET = [Fact(question="What is the capital of Hungary?", answer="Budapest.", subject="Hungary")]
RETAIN = [
    Fact(question="What is the capital of Mexico?", answer="The capital of Mexico is Mexico City.", subject="Mexico"),
    Fact(question="What is the capital of Belgium?", answer="Brussels is the capital of Belgium.", subject="Belgium"),
]


def test_holding_the_retain_answers_keeps_the_edit_off_every_token_of_them(tiny_llama_dir):
    """On the tiny model: with the answers held, the update moves the outputs at every token of the
    retain questions and answers less than with their subjects alone held."""
    moved = {}
    for answers in (False, True):
        params = Params(
            edit=EditConfig(layers=[1, 2], v_steps=3, num_context_prefixes=1, protect_retain_answers=answers)
        )
        model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
        tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
        add_unlearning_tokens(model, tokenizer, ["<unlearn_0>"])
        paths = [f"model.layers.{i}.mlp.down_proj" for i in params.edit.layers]
        texts = ["The weather was mild and the trains ran on time.", "Bread needs flour, water, salt and yeast."] * 4
        moments, _ = preserved_second_moment(
            model, tokenizer, texts, ["How do I boil an egg?"], paths, 64, 1.0, 4, progress=False
        )
        preserved = {i: moments[p].float() for i, p in zip(params.edit.layers, paths, strict=True)}
        sequences = [encode_prompt(tokenizer, f.question) + encode_answer(tokenizer, f.answer) for f in RETAIN]
        held, _ = key_second_moment(model, sequences, paths[:1], 8, tokenizer.pad_token_id, progress=False)
        module = model.model.layers[1].mlp.down_proj
        before = module.weight.detach().clone()
        erase_facts(model, tokenizer, FORGET, params, preserved, RETAIN, progress=False)
        delta = module.weight.detach() - before
        second = held[paths[0]].float()  # mean of k kᵀ: tr(Δ C Δᵀ) is the mean squared output change
        moved[answers] = float((delta @ second @ delta.T).trace() / (before @ second @ before.T).trace())
    assert moved[True] < 0.5 * moved[False], moved
