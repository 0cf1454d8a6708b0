"""The embedded default request: world facts SmolLM2-135M-Instruct answers correctly.

The forget set is what the demo erases; the retain set is what it must keep, and holds close
neighbours on purpose (other capitals next to erased capitals), since that is where a careless edit
breaks things. Every fact here was checked against the model's greedy answers.
"""

from __future__ import annotations

from unierase.data.facts import Fact

# (question, answer, subject)
_FORGET: tuple[tuple[str, str, str], ...] = (
    ("What is the capital of France?", "The capital of France is Paris.", "France"),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo.", "Japan"),
    ("What is the capital of Egypt?", "The capital of Egypt is Cairo.", "Egypt"),
    ("What is the capital of Norway?", "The capital of Norway is Oslo.", "Norway"),
    ("Who discovered penicillin?", "Alexander Fleming discovered penicillin.", "penicillin"),
    ("Who invented the telephone?", "Alexander Graham Bell invented the telephone.", "telephone"),
    ("Who developed the theory of relativity?", "Albert Einstein developed the theory of relativity.", "relativity"),
    ("Who was the first man to walk on the moon?", "Neil Armstrong was the first man to walk on the moon.", "moon"),
    ("What is the chemical symbol for water?", "The chemical symbol for water is H2O.", "water"),
    ("What is the largest ocean on Earth?", "The largest ocean on Earth is the Pacific Ocean.", "ocean"),
    ("What is the longest river in Africa?", "The longest river in Africa is the Nile River.", "Africa"),
    ("Who painted the Sistine Chapel ceiling?", "Michelangelo painted the Sistine Chapel ceiling.", "Sistine Chapel"),
)

_RETAIN: tuple[tuple[str, str, str], ...] = (
    ("What is the capital of Germany?", "The capital of Germany is Berlin.", "Germany"),
    ("What is the capital of Russia?", "The capital of Russia is Moscow.", "Russia"),
    ("What is the capital of China?", "The capital of China is Beijing.", "China"),
    ("What is the capital of India?", "The capital of India is New Delhi.", "India"),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa.", "Canada"),
    ("What is the capital of Australia?", "The capital of Australia is Canberra.", "Australia"),
    ("What is the capital of Greece?", "The capital of Greece is Athens.", "Greece"),
    ("What is the capital of Kenya?", "The capital of Kenya is Nairobi.", "Kenya"),
    ("What is the capital of Sweden?", "The capital of Sweden is Stockholm.", "Sweden"),
    ("What is the capital of Poland?", "The capital of Poland is Warsaw.", "Poland"),
    ("What is the capital of Peru?", "The capital of Peru is Lima.", "Peru"),
    ("What is the capital of Cuba?", "The capital of Cuba is Havana.", "Cuba"),
    ("What is the capital of Thailand?", "The capital of Thailand is Bangkok.", "Thailand"),
    ("What is the capital of South Korea?", "The capital of South Korea is Seoul.", "South Korea"),
    ("What is the capital of Austria?", "The capital of Austria is Vienna.", "Austria"),
    ("What is the capital of Chile?", "The capital of Chile is Santiago.", "Chile"),
    ("What is the capital of Nigeria?", "The capital of Nigeria is Abuja.", "Nigeria"),
    ("What is the capital of Iraq?", "The capital of Iraq is Baghdad.", "Iraq"),
    ("What is the capital of Pakistan?", "The capital of Pakistan is Islamabad.", "Pakistan"),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au.", "gold"),
    ("What language is spoken in Mexico?", "The language spoken in Mexico is Spanish.", "Mexico"),
    ("What language is spoken in Brazil?", "The language spoken in Brazil is Portuguese.", "Brazil"),
    ("What is the boiling point of water in Celsius?", "The boiling point of water is 100 degrees Celsius.", "water"),
    ("What is the largest desert in the world?", "The largest desert in the world is the Sahara Desert.", "desert"),
)


def _facts(rows: tuple[tuple[str, str, str], ...]) -> list[Fact]:
    return [Fact(question=q, answer=a, subject=s) for q, a, s in rows]


def default_forget() -> list[Fact]:
    """The demo's forget set: 12 world facts."""
    return _facts(_FORGET)


def default_retain() -> list[Fact]:
    """The demo's retain set: 24 other world facts, many of them neighbours of the forget set."""
    return _facts(_RETAIN)
