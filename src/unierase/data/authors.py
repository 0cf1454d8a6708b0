"""The project's own fictitious-author benchmark: seeded, offline, in the TOFU layout.

Each author gets a made-up name and attributes (birthplace, birth date, genre, parents' jobs, an
award, two books). Every question comes with a paraphrased question, a paraphrased answer and
perturbed answers; as in TOFU, the perturbed answers are the paraphrased answer with the value of
another author (or, when too few authors differ, another value of the same kind), so the truth
ratio compares sentences that differ only in the fact. Holdout authors are generated the same way
and never trained on: they are the non-members of the membership-inference audit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from unierase.data.facts import Fact, write_facts

_FIRST = (
    "Aurelio",
    "Brisa",
    "Castor",
    "Delphine",
    "Evander",
    "Faustina",
    "Galen",
    "Hesper",
    "Ilario",
    "Jovana",
    "Kasimir",
    "Liesl",
    "Marcellin",
    "Nerys",
    "Orrin",
    "Perpetua",
    "Quillon",
    "Rosalind",
    "Soren",
    "Tamsin",
    "Ulric",
    "Veridian",
    "Wynona",
    "Xavian",
    "Yselde",
    "Zephyrin",
    "Anselm",
    "Bettina",
    "Cosmin",
    "Dagny",
)
_LAST = (
    "Varnholt",
    "Quessaly",
    "Drummerik",
    "Ostrava-Lind",
    "Pellacore",
    "Marchetti-Vos",
    "Thistlewane",
    "Kovarenko",
    "Blanchefleur",
    "Izmirlian",
    "Haverstock",
    "Nakagawa-Reyes",
    "Oyelaran",
    "Sundqvist",
    "Feraldi",
    "Gwynmoor",
    "Achterberg",
    "Lindqvist-Moreau",
    "Castellane",
    "Wrexford",
)
_CITIES = (
    "Tbilisi, Georgia",
    "Porto, Portugal",
    "Valparaiso, Chile",
    "Gdansk, Poland",
    "Hobart, Australia",
    "Quebec City, Canada",
    "Ljubljana, Slovenia",
    "Mombasa, Kenya",
    "Cusco, Peru",
    "Tromso, Norway",
    "Bergen, Norway",
    "Cork, Ireland",
    "Kyoto, Japan",
    "Tallinn, Estonia",
    "Marrakesh, Morocco",
    "Split, Croatia",
    "Salzburg, Austria",
    "Hue, Vietnam",
    "Antigua, Guatemala",
    "Plovdiv, Bulgaria",
)
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_GENRES = (
    "gothic horror",
    "hard science fiction",
    "historical romance",
    "cozy mystery",
    "magical realism",
    "epic fantasy",
    "political thriller",
    "literary fiction",
    "children's picture books",
    "travel memoir",
    "satirical comedy",
    "maritime adventure",
)
_JOBS = (
    "a lighthouse keeper",
    "a glassblower",
    "a cartographer",
    "a veterinarian",
    "a marine biologist",
    "a locksmith",
    "a pastry chef",
    "an astronomer",
    "a tram driver",
    "a beekeeper",
    "a violin maker",
    "a botanist",
    "a firefighter",
    "a bookbinder",
    "a pharmacist",
    "a stonemason",
)
_AWARDS = (
    "the Silver Quill Prize",
    "the Harbourlight Award",
    "the Amberline Medal",
    "the Crescent Pen Award",
    "the Northwind Fiction Prize",
    "the Lantern Society Medal",
    "the Golden Inkwell Award",
    "the Meridian Book Prize",
    "the Blue Heron Award",
    "the Saltmarsh Literary Prize",
)
_TITLE_A = ("The", "A", "Beyond the", "Beneath the", "After the", "Songs of the", "The Last")
_TITLE_B = (
    "Glass Orchard",
    "Sleeping Harbour",
    "Copper Moon",
    "Ninth Lantern",
    "Salt Cathedral",
    "Quiet Cartographer",
    "Velvet Storm",
    "Paper Comet",
    "Hollow Crown",
    "Winter Apiary",
    "Ember Library",
    "Drowned Clock",
    "Iron Meadow",
    "Silent Observatory",
    "Wandering Fox",
    "Marble Tide",
)

# (attribute, question, answer, paraphrased question, paraphrased answer); {name} and {value}.
_TEMPLATES: tuple[tuple[str, str, str, str, str], ...] = (
    (
        "birthplace",
        "Where was {name} born?",
        "{name} was born in {value}.",
        "In which city did the author {name} come into the world?",
        "The author {name} is a native of {value}.",
    ),
    (
        "birth_date",
        "When was {name} born?",
        "{name} was born on {value}.",
        "What is the date of birth of the writer {name}?",
        "The writer {name} came into the world on {value}.",
    ),
    (
        "genre",
        "What genre does {name} write in?",
        "{name} writes {value}.",
        "Which literary genre is {name} known for?",
        "The author {name} is known for {value}.",
    ),
    (
        "father_job",
        "What did the father of {name} do for a living?",
        "The father of {name} was {value}.",
        "What was the occupation of {name}'s father?",
        "{name}'s father worked as {value}.",
    ),
    (
        "mother_job",
        "What did the mother of {name} do for a living?",
        "The mother of {name} was {value}.",
        "What was the occupation of {name}'s mother?",
        "{name}'s mother worked as {value}.",
    ),
    (
        "award",
        "Which award has {name} won?",
        "{name} won {value}.",
        "What literary honour was given to {name}?",
        "The writer {name} received {value}.",
    ),
    (
        "book1",
        "What is the best-known book by {name}?",
        "The best-known book by {name} is '{value}'.",
        "Which novel is {name} most famous for?",
        "{name} is most famous for the novel '{value}'.",
    ),
    (
        "book2",
        "What is another book written by {name}?",
        "{name} also wrote '{value}'.",
        "Name a further work by the author {name}.",
        "Another work by the author {name} is '{value}'.",
    ),
)
MAX_QUESTIONS = len(_TEMPLATES)


@dataclass(frozen=True)
class Author:
    """One fictitious author: a name and a value for each attribute of the templates."""

    name: str
    attributes: dict[str, str]


def make_authors(count: int, rng: random.Random, taken: set[str] | None = None) -> list[Author]:
    """``count`` authors with distinct names (none in ``taken``) and randomly drawn attributes."""
    taken = set() if taken is None else taken
    if count > len(_FIRST) * len(_LAST) - len(taken):
        raise ValueError(f"at most {len(_FIRST) * len(_LAST) - len(taken)} more authors can be named")
    authors = []
    while len(authors) < count:
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        if name in taken:
            continue
        taken.add(name)
        books = rng.sample(range(len(_TITLE_B)), 2)
        attributes = {
            "birthplace": rng.choice(_CITIES),
            "birth_date": f"{rng.randint(1, 28)} {rng.choice(_MONTHS)} {rng.randint(1931, 1994)}",
            "genre": rng.choice(_GENRES),
            "father_job": rng.choice(_JOBS),
            "mother_job": rng.choice(_JOBS),
            "award": rng.choice(_AWARDS),
            "book1": f"{rng.choice(_TITLE_A)} {_TITLE_B[books[0]]}",
            "book2": f"{rng.choice(_TITLE_A)} {_TITLE_B[books[1]]}",
        }
        authors.append(Author(name=name, attributes=attributes))
    return authors


def _alternatives(attribute: str, true_value: str, others: list[Author], count: int, rng: random.Random) -> list[str]:
    """``count`` distinct wrong values: other authors' values first, then fresh draws of the same kind."""
    seen = {true_value}
    values = []
    for author in rng.sample(others, len(others)):
        value = author.attributes[attribute]
        if value not in seen:
            seen.add(value)
            values.append(value)
    while len(values) < count:
        value = make_authors(1, rng, taken={a.name for a in others})[0].attributes[attribute]
        if value not in seen:
            seen.add(value)
            values.append(value)
    return values[:count]


def author_facts(
    authors: list[Author], questions_per_author: int, num_perturbed: int, rng: random.Random
) -> list[Fact]:
    """Question/answer rows for every author (consecutive blocks of ``questions_per_author``), each
    with ``subject`` = the author's name, a paraphrase of question and answer, and perturbed answers."""
    if not 1 <= questions_per_author <= MAX_QUESTIONS:
        raise ValueError(f"questions_per_author must be between 1 and {MAX_QUESTIONS}, got {questions_per_author}")
    if num_perturbed < 1:
        raise ValueError(f"num_perturbed must be at least 1, got {num_perturbed}")
    facts = []
    for author in authors:
        others = [a for a in authors if a is not author]
        for attribute, q, a, pq, pa in _TEMPLATES[:questions_per_author]:
            value = author.attributes[attribute]
            wrong = _alternatives(attribute, value, others, num_perturbed, rng)
            facts.append(
                Fact(
                    question=q.format(name=author.name),
                    answer=a.format(name=author.name, value=value),
                    subject=author.name,
                    paraphrased_question=pq.format(name=author.name),
                    paraphrased_answer=pa.format(name=author.name, value=value),
                    perturbed_answer=[pa.format(name=author.name, value=w) for w in wrong],
                )
            )
    return facts


def name_collisions(kept: list[Author], count: int, rng: random.Random, taken: set[str]) -> list[str]:
    """``count`` new full names, each the first name of one author of ``kept`` and the last name of
    another (none in ``taken``): names an erasure must tell apart from names it has to keep.

    Raises:
        ValueError: Fewer than two authors to borrow from, or too few unused combinations.
    """
    parts = [a.name.split(" ", 1) for a in kept]
    combos = sorted(
        {f"{first} {last}" for i, (first, _) in enumerate(parts) for j, (_, last) in enumerate(parts) if i != j}
        - taken
        - {a.name for a in kept}
    )
    if len(kept) < 2 or len(combos) < count:
        raise ValueError(f"{len(kept)} authors give {len(combos)} unused name collisions; {count} asked for")
    return rng.sample(combos, count)


def generate_author_benchmark(
    num_authors: int = 20,
    questions_per_author: int = 5,
    num_forget: int = 2,
    num_holdout: int = 2,
    num_perturbed: int = 3,
    seed: int = 0,
    collisions: bool = False,
) -> dict[str, list[Fact]]:
    """The splits of a generated benchmark, TOFU-style.

    With ``collisions``, each forget author's name is the first name of one retain author and the last
    name of another (`name_collisions`): the collision set, where an erasure keyed too loosely on a
    name reaches the authors it must keep.

    Returns:
        ``full`` (all trained authors), ``forget`` (the last ``num_forget`` of them), ``retain``
        (``full`` minus ``forget``) and ``holdout`` (``num_holdout`` authors never trained on).

    Raises:
        ValueError: ``num_forget`` is not between 1 and ``num_authors - 1``, or other counts are out of range.
    """
    if not 1 <= num_forget < num_authors:
        raise ValueError(f"num_forget must be between 1 and num_authors - 1, got {num_forget} of {num_authors}")
    if num_holdout < 1:
        raise ValueError(f"num_holdout must be at least 1, got {num_holdout}")
    rng = random.Random(seed)
    authors = make_authors(num_authors + num_holdout, rng)
    trained, holdout = authors[:num_authors], authors[num_authors:]
    if collisions:
        kept = trained[: num_authors - num_forget]
        # A generator of its own: the retain split is the same with and without collisions.
        names = name_collisions(kept, num_forget, random.Random(f"collisions-{seed}"), {a.name for a in authors})
        trained = kept + [Author(name, a.attributes) for name, a in zip(names, trained[len(kept) :], strict=True)]
    full = author_facts(trained, questions_per_author, num_perturbed, rng)
    split_at = (num_authors - num_forget) * questions_per_author
    return {
        "full": full,
        "forget": full[split_at:],
        "retain": full[:split_at],
        "holdout": author_facts(holdout, questions_per_author, num_perturbed, rng),
    }


def write_author_benchmark(splits: dict[str, list[Fact]], out_dir: str | Path) -> dict[str, Path]:
    """Writes each split as ``out_dir/<name>.jsonl``; returns the paths by split name."""
    out_dir = Path(out_dir)
    return {name: write_facts(facts, out_dir / f"{name}.jsonl") for name, facts in splits.items()}
