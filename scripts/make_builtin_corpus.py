"""Writes the built-in general-text corpus (src/unierase/data/resources/general_text.jsonl).

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/make_builtin_corpus.py

The default model writes short paragraphs on everyday topics and on the life and work of well-known
people, greedily, so the file is the same on every run. The people matter: erasures are keyed at
names, and without prose that names people the preserved statistics hold no keys read where a name
is being written, so edits drift into writing names in general. They are composers, painters,
scientists, inventors, explorers, film makers, architects, philosophers and athletes, no writers,
and none whose surname occurs in TOFU's real-author or world-fact questions
(tests/test_builtin_corpus.py checks), so the evaluation's general questions stay unseen by the
statistics. The file ships with the package, so the default run needs no download; any other corpus
(a local text/JSONL file or a datasets name) replaces it through `covariance.corpus` in params.yaml.
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
PEOPLE = (
    "Ludwig van Beethoven",
    "Wolfgang Amadeus Mozart",
    "Johann Sebastian Bach",
    "Frédéric Chopin",
    "Antonio Vivaldi",
    "Pyotr Ilyich Tchaikovsky",
    "Giuseppe Verdi",
    "Claude Debussy",
    "Franz Schubert",
    "Johannes Brahms",
    "Vincent van Gogh",
    "Pablo Picasso",
    "Claude Monet",
    "Rembrandt van Rijn",
    "Salvador Dalí",
    "Frida Kahlo",
    "Johannes Vermeer",
    "Georgia O'Keeffe",
    "Edvard Munch",
    "Henri Matisse",
    "Marie Curie",
    "Charles Darwin",
    "Nikola Tesla",
    "Louis Pasteur",
    "Gregor Mendel",
    "Thomas Edison",
    "James Watt",
    "Johannes Gutenberg",
    "Guglielmo Marconi",
    "Karl Benz",
    "Ada Lovelace",
    "Alan Turing",
    "Grace Hopper",
    "Tim Berners-Lee",
    "Marco Polo",
    "Roald Amundsen",
    "Ernest Shackleton",
    "Ibn Battuta",
    "Alfred Hitchcock",
    "Charlie Chaplin",
    "Akira Kurosawa",
    "Steven Spielberg",
    "Walt Disney",
    "Antoni Gaudí",
    "Zaha Hadid",
    "Le Corbusier",
    "Socrates",
    "Confucius",
    "Immanuel Kant",
    "Aristotle",
    "Pelé",
    "Jesse Owens",
)
PEOPLE_STYLES = (
    "Write a short paragraph about the life and work of {}.",
    "Who was {}, and what is {} best known for?",
)
OUT = Path(__file__).resolve().parents[1] / "src" / "unierase" / "data" / "resources" / "general_text.jsonl"


def main() -> None:
    model_dir = ensure_default_model()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    topics = [style.format(topic) for topic in TOPICS for style in STYLES]
    people = [style.format(person, person) for person in PEOPLE for style in PEOPLE_STYLES]
    # Two calls, not one: a batch's padding can change a greedy continuation, and the topics' batches
    # stay the ones the corpus had before the people were added.
    texts = [
        g
        for prompts in (topics, people)
        for g in generate_answers(model, tokenizer, prompts, max_new_tokens=128, batch_size=20)
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as fh:
        for g in texts:
            if g.text:
                fh.write(json.dumps({"text": g.text}, ensure_ascii=False) + "\n")
    print(f"wrote {len(texts)} texts to {OUT}")


if __name__ == "__main__":
    main()
