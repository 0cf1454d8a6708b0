"""Counterfactual neighbours of a forget subject: the same question, asked about someone else.

The edit binds a key (the input of an early MLP projection at the subject's last token) to the
unlearning token. That key also carries what the question and the name's parts share with other
subjects, so an edit fitted to the forget keys alone can fire on questions of the same shape about
other, unseen subjects, and on names that share a part with the forgotten one. Holding the keys of such
neighbours in the solve's constraint, as the retain facts' keys are held, leaves the edit the directions
that belong to this subject only.

The names are common given and family names from many languages, none of them a name the project's
generated authors use, so a benchmark's held-out authors are never among the protected neighbours.
"""

from __future__ import annotations

import hashlib
import random
import re

from unierase.data.facts import Fact

GIVEN_NAMES: tuple[str, ...] = (
    "Maria",
    "James",
    "Aisha",
    "Wei",
    "Olga",
    "Carlos",
    "Fatima",
    "Kenji",
    "Ingrid",
    "Samuel",
    "Priya",
    "Tomasz",
    "Amara",
    "Lucas",
    "Hana",
    "Dmitri",
    "Chiara",
    "Kwame",
    "Elena",
    "Rahul",
    "Sofia",
    "Mateo",
    "Yuki",
    "Nadia",
)
FAMILY_NAMES: tuple[str, ...] = (
    "Okafor",
    "Chen",
    "Novak",
    "Fernandes",
    "Haddad",
    "Kowalski",
    "Tanaka",
    "Johansson",
    "Mensah",
    "Rossi",
    "Petrov",
    "Gupta",
    "Moreno",
    "Schmidt",
    "Nguyen",
    "O'Brien",
    "Yilmaz",
    "Dubois",
    "Kimura",
    "Adeyemi",
    "Larsen",
    "Castillo",
    "Weber",
    "Horvat",
)
_WORD = re.compile(r"\S+")


def neighbour_subjects(subject: str, count: int, avoid: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Up to ``count`` subjects near ``subject``, the same for the same subject (seeded by its text).

    For a subject of several words, first each word replaced in turn (names that share the other
    parts: "Hesper Varnholt" -> "Maria Varnholt", "Hesper Okafor"), then wholly different two-word names.
    None equals ``subject`` or any name in ``avoid`` (case ignored).
    """
    words = _WORD.findall(subject)
    rng = random.Random(hashlib.sha256(subject.casefold().encode()).digest())
    taken = {subject.casefold(), *(a.casefold() for a in avoid)}
    out: list[str] = []

    def add(name: str) -> None:
        if len(out) < count and name.casefold() not in taken:
            taken.add(name.casefold())
            out.append(name)

    if len(words) > 1:
        for i in range(len(words)):
            pool = FAMILY_NAMES if i == len(words) - 1 else GIVEN_NAMES
            add(" ".join([*words[:i], rng.choice([w for w in pool if w != words[i]]), *words[i + 1 :]]))
    for _ in range(4 * count):  # draws that hit a taken name are skipped
        add(f"{rng.choice(GIVEN_NAMES)} {rng.choice(FAMILY_NAMES)}")
    return out


def replace_subject(question: str, subject: str, replacement: str) -> str:
    """``question`` with the last occurrence of ``subject`` (case ignored, as the key is located) replaced."""
    at = question.casefold().rfind(subject.casefold())
    if at < 0:
        raise ValueError(f"subject {subject!r} does not occur in the question {question!r}")
    return question[:at] + replacement + question[at + len(subject) :]


def neighbour_facts(facts: list[Fact], subjects: list[str], count: int) -> tuple[list[Fact], list[str]]:
    """Each fact's question about each of its subject's ``count`` neighbours (no forget subject among them),
    with those neighbours as subjects."""
    avoid = set(subjects)
    out_facts, out_subjects = [], []
    for fact, subject in zip(facts, subjects, strict=True):
        for other in neighbour_subjects(subject, count, avoid):
            out_facts.append(Fact(question=replace_subject(fact.question, subject, other), answer=fact.answer))
            out_subjects.append(other)
    return out_facts, out_subjects
