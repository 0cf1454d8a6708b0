"""Before/after figures of an erasure run: greedy answers to the forget and retain questions, their
ROUGE-L recall against the reference answers, and how many forget answers are refusals."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.data.facts import Fact
from unierase.evaluation.metrics.rouge import rouge_l_recall
from unierase.model.generation import Generation, generate_answers
from unierase.token.refusals import is_refusal, served_refusals


@dataclass
class AnswerSnapshot:
    """Greedy answers to the forget and retain questions at one point in time."""

    forget: list[Fact]
    retain: list[Fact]
    forget_answers: list[Generation]
    retain_answers: list[Generation]
    token_ids: list[int]

    def _triggered(self, g: Generation) -> bool:
        return g.opens_with(self.token_ids)

    def _refused(self, g: Generation) -> bool:
        # An answer that opens with the unlearning token is a refusal by construction: the token was
        # trained to be followed by an "I don't know" phrase, whose wording after an edit varies
        # ("I have no words to describe ...") and escapes any phrase list. Text-only refusals (the
        # baselines' only kind) count too; `refusal_text_rate` keeps the text-only figure.
        return self._triggered(g) or is_refusal(g.text)

    def summary(self) -> dict[str, float | None]:
        """Mean ROUGE-L recall per set; share of answers that refuse (token trigger or refusal text), that
        read as a refusal by text alone, and that open with the unlearning token (trigger)."""
        out: dict[str, float | None] = {}
        for name, facts, answers in (
            ("forget", self.forget, self.forget_answers),
            ("retain", self.retain, self.retain_answers),
        ):
            if facts:
                scores = [rouge_l_recall(g.text, f.answer) for f, g in zip(facts, answers, strict=True)]
                out[f"{name}_rougeL_recall"] = sum(scores) / len(scores)
                out[f"{name}_refusal_rate"] = sum(self._refused(g) for g in answers) / len(answers)
                out[f"{name}_refusal_text_rate"] = sum(is_refusal(g.text) for g in answers) / len(answers)
                out[f"{name}_token_trigger_rate"] = sum(self._triggered(g) for g in answers) / len(answers)
            else:
                out[f"{name}_rougeL_recall"] = None
        return out

    def items(self) -> dict[str, list[dict]]:
        """Per-question answers and scores (the data of the summary)."""
        return {
            name: [
                {
                    "question": f.question,
                    "generation": g.text,
                    "rougeL_recall": rouge_l_recall(g.text, f.answer),
                    "refusal": self._refused(g),
                    "refusal_text": is_refusal(g.text),
                    "token_trigger": self._triggered(g),
                }
                for f, g in zip(facts, answers, strict=True)
            ]
            for name, facts, answers in (
                ("forget", self.forget, self.forget_answers),
                ("retain", self.retain, self.retain_answers),
            )
        }


def measure_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    forget: list[Fact],
    retain: list[Fact],
    token_ids: list[int],
    max_new_tokens: int,
    after_token: str = "refusal",
    progress: bool = True,
) -> AnswerSnapshot:
    """Greedy answers to every forget and retain question (the unlearning token ends a refusal; what
    it opens follows ``after_token``, `unierase.config.EvalConfig.after_token`)."""
    answers = generate_answers(
        model,
        tokenizer,
        [f.question for f in forget + retain],
        max_new_tokens=max_new_tokens,
        stop_token_ids=token_ids,
        refusals=served_refusals(tokenizer, after_token),
        progress=progress,
    )
    return AnswerSnapshot(forget, retain, answers[: len(forget)], answers[len(forget) :], list(token_ids))
