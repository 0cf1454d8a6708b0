"""The project's recipe for Phase I: which questions the unlearning token is learned on, and with
which anchors. `unierase.token.learning` holds the training itself; this decides its inputs."""

from __future__ import annotations

import random

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import Params
from unierase.data.general_questions import general_questions
from unierase.model.generation import generate_answers
from unierase.model.hooks import get_module
from unierase.token.learning import UnlearningToken, learn_unlearning_token


def token_training_questions(params: Params) -> list[str]:
    """``token.num_general_questions`` ordinary questions, shuffled with ``token.seed``."""
    # The token is learned once per base model and reused by every request, so it is trained on
    # ordinary questions only, never on a forget set.
    questions = general_questions()
    random.Random(params.token.seed).shuffle(questions)
    return questions[: params.token.num_general_questions]


def learn_token(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, params: Params, progress: bool = True
) -> UnlearningToken:
    """Learns the unlearning token on ordinary questions, with the model's own answers as anchors and
    the MLPs of the layers to be edited perturbed in the robustness pass."""
    questions = token_training_questions(params)
    anchors = [g.text for g in generate_answers(model, tokenizer, questions, max_new_tokens=32, progress=progress)]
    mlps = [get_module(model, params.model.mlp_out_template.format(layer)) for layer in params.edit.layers]
    return learn_unlearning_token(model, tokenizer, questions, anchors, params.token, mlps, progress)
