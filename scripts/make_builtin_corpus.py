"""Writes the built-in general-text corpus (src/unierase/data/resources/general_text.jsonl).

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/make_builtin_corpus.py

The default model writes short paragraphs on everyday topics, greedily, so the file is the same on
every run. It ships with the package, so the default run needs no download; any other corpus (a
local text/JSONL file or a datasets name) replaces it through `covariance.corpus` in params.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from unierase.model.default import ensure_default_model
from unierase.model.generation import generate_answers

TOPICS = (
    "the ocean",
    "a busy city street",
    "autumn leaves",
    "a library",
    "coffee",
    "a train journey",
    "mountains",
    "a rainy day",
    "the history of writing",
    "bees",
    "bread baking",
    "a football match",
    "the moon",
    "gardening",
    "a thunderstorm",
    "learning to swim",
    "an old bridge",
    "music lessons",
    "a farmers market",
    "winter mornings",
    "a museum visit",
    "bicycles",
    "the desert at night",
    "a family dinner",
    "computers",
    "a forest walk",
    "birds migrating",
    "a small village",
    "painting",
    "the stars",
    "a school day",
    "rivers",
    "cooking soup",
    "a long flight",
    "friendship",
    "a summer festival",
    "trees",
    "the post office",
    "a hospital",
    "recycling paper",
)
STYLES = (
    "Write a short paragraph about {}.",
    "Describe {} in a few sentences.",
    "Tell a very short story about {}.",
    "Give some facts about {}.",
)
OUT = Path(__file__).resolve().parents[1] / "src" / "unierase" / "data" / "resources" / "general_text.jsonl"


def main() -> None:
    model_dir = ensure_default_model()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompts = [style.format(topic) for topic in TOPICS for style in STYLES]
    texts = generate_answers(model, tokenizer, prompts, max_new_tokens=128, batch_size=20)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as fh:
        for g in texts:
            if g.text:
                fh.write(json.dumps({"text": g.text}, ensure_ascii=False) + "\n")
    print(f"wrote {len(texts)} texts to {OUT}")


if __name__ == "__main__":
    main()
