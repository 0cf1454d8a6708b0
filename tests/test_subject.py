"""Subjects for any question: causal tracing, its text-only fallback, the key position, and the erase
stage finding subjects (or failing on a row) before any expensive phase. Tiny random model; seconds.

    pytest tests/test_subject.py -s
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny_erase_params import write_tiny_erase_params
from transformers import AutoModelForCausalLM, AutoTokenizer

from unierase.cli import main
from unierase.config import Params
from unierase.data.facts import Fact, write_facts
from unierase.edit.subject import (
    SubjectChoice,
    SubjectError,
    attach_subjects,
    candidate_spans,
    choose_span,
    entity_spans,
    fallback_subject,
    find_subject,
    key_prompt,
    snap_to_name,
    trace_subject,
)
from unierase.model.prompts import format_prompt

TOFU = Path(__file__).resolve().parents[2] / "shared" / "tofu"

# Our own unlabelled questions, one shape each: question words, several entities, no named entity, one
# word, lowercase, numbers, Unicode names, no question mark, imperatives, punctuation only.
OWN_QUESTIONS = [
    ("What is the capital of France?", "Paris"),
    ("Who wrote Pride and Prejudice?", "Jane Austen"),
    ("Where is the Eiffel Tower?", "In Paris."),
    ("When did the Berlin Wall fall?", "In 1989."),
    ("Which planet is closest to the Sun?", "Mercury"),
    ("How tall is Mount Everest?", "8,849 metres"),
    ("Why is the sky blue?", "Rayleigh scattering."),
    ("Whose theory of relativity changed physics?", "Albert Einstein's."),
    ("Whom did Napoleon marry in 1796?", "Joséphine de Beauharnais."),
    ("How many legs does a spider have?", "Eight."),
    ("When did the war end?", "In 1945."),
    ("What is the boiling point of water?", "100 degrees Celsius."),
    ("who wrote hamlet", "William Shakespeare"),
    ("what is the capital of japan?", "tokyo"),
    ("Capital of Italy?", "Rome."),
    ("Photosynthesis?", "Plants turning light into sugar."),
    ("Why?", "Because."),
    ("Who is it?", "Nobody."),
    ("???", "What?"),
    ("Hello", "Hi."),
    ("Tell me who painted the Mona Lisa", "Leonardo da Vinci"),
    ("Name the largest ocean on Earth.", "The Pacific."),
    ("Describe the Great Wall of China", "A long fortification."),
    ("Please explain what DNA stands for.", "Deoxyribonucleic acid."),
    ("What happened in 1066?", "The Norman conquest."),
    ("What is 7 times 8?", "56"),
    ("In what year did Apollo 11 land on the Moon?", "1969"),
    ("During World War II, who led Britain?", "Winston Churchill."),
    ("Which river flows through Paris and Budapest?", "Neither: the Seine and the Danube."),
    ("Did Marie Curie work in Paris or in Warsaw?", "In Paris."),
    ("Is Canberra or Sydney the capital of Australia?", "Canberra."),
    ("What do Barack Obama and Joe Biden have in common?", "Both were US presidents."),
    ("Who is İsmail Kadare?", "An Albanian novelist."),
    ("Where was Antonín Dvořák born?", "In Nelahozeves."),
    ("What did Søren Kierkegaard write about?", "Existence and faith."),
    ("Who was 毛泽东?", "A Chinese leader."),
    ("Что такое Москва?", "Столица России."),
    ("What is Newton's first law?", "Inertia."),
    ("Who's the author of 'Nineteen Eighty-Four'?", "George Orwell."),
    ("Where is the Bank of England located?", "In London."),
    ("Which country is called the Land of the Rising Sun?", "Japan."),
    ("Did Leonardo da Vinci paint the Last Supper?", "Yes."),
    ("What is the chemical symbol for gold", "Au"),
    ("how do you say thank you in french", "merci"),
    ("What does the U.S. Constitution begin with?", "We the People."),
    ("Who founded Microsoft, and when?", "Bill Gates and Paul Allen, in 1975."),
    ("What is the speed of light in a vacuum, approximately, in kilometres per second?", "About 300,000."),
    ("Can you tell me what the largest mammal is?", "The blue whale."),
    ("  What is the capital of Spain?  ", "Madrid."),
    ("WHO WROTE THE ODYSSEY?", "HOMER."),
    ("What is the tallest building in the world as of 2020, and in which city is it?", "Burj Khalifa, Dubai."),
]


def _tofu_questions() -> list[tuple[str, str]]:
    """About 60 TOFU rows: long fictitious-author questions, real authors and world facts."""
    picked = []
    for name, every in (("forget05.jsonl", 10), ("real_authors.jsonl", 5), ("world_facts.jsonl", 6)):
        rows = [json.loads(line) for line in (TOFU / name).read_text(encoding="utf-8").splitlines() if line.strip()]
        picked += [(row["question"], row["answer"]) for row in rows[::every]][:20]
    return picked


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval(), AutoTokenizer.from_pretrained(tiny_llama_dir)


def _assert_keyed(tokenizer, question: str, subject: str) -> None:
    """``subject`` is a span of ``question`` and `key_prompt` keys the token holding its last character."""
    assert subject.strip() and re.search(re.escape(subject), question, re.IGNORECASE), (question, subject)
    keyed = key_prompt(tokenizer, question, subject)
    text = format_prompt(tokenizer, question)
    q_start = text.rfind(question)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert enc["input_ids"] == keyed.input_ids
    s, e = enc["offset_mapping"][keyed.key_index]
    assert q_start <= s < q_start + len(question), (question, subject)  # inside the question
    last = [m.start() for m in re.finditer(f"(?=({re.escape(subject)}))", question, re.IGNORECASE)][-1]
    sub_end = q_start + last + len(subject)  # the last occurrence, case aside, on the original indices
    assert s < sub_end <= e, (question, subject, text[s:e])  # the token holding the subject's last character
    if subject.isascii():
        token = tokenizer.decode([keyed.input_ids[keyed.key_index]]).strip()
        assert token and token.lower() in subject.lower(), (question, subject, token)


def _assert_reads_the_names(question: str, subject: str) -> None:
    """A traced subject is a name, or its key (its last occurrence's last token) comes after the
    question's last name: a key before it is shared by every question of the same phrasing."""
    start = question.lower().rfind(subject.lower())
    end = start + len(subject)
    names = entity_spans(question)
    touches = any(s < end and e > start for s, e, _ in names)
    assert touches or not names or end >= names[-1][1], (question, subject)


def test_every_question_gets_a_subject_that_keys_its_prompt(tiny):
    model, tokenizer = tiny
    questions = OWN_QUESTIONS + (_tofu_questions() if TOFU.is_dir() else [])
    assert len(questions) >= (100 if TOFU.is_dir() else 50)
    methods = Counter()
    for question, answer in questions:
        # One noise draw per span, not three: the paths are what is tested here, and each draw is a
        # forward pass through the tiny model's 49k-row output layer (three took 90 s on 2 busy cores).
        choice = find_subject(model, tokenizer, question, answer, noise_samples=1)
        _assert_keyed(tokenizer, question, choice.subject)
        if choice.method.startswith("traced"):
            _assert_reads_the_names(question, choice.subject)
        methods[choice.method] += 1
    print(f"\n{len(questions)} questions, subjects by method: {dict(methods)}")
    assert sum(methods.values()) == len(questions)
    assert any(m.startswith("fallback:") for m in methods)  # a random model's tracing often finds nothing


class _NormModel(torch.nn.Module):
    """A stand-in model whose answer logits follow the input's norm: ``sign=+1`` with the norm of the
    whole input (every corruption raises the answer's probability), ``sign=-1`` with the norm at one
    position (only spans covering it lower the probability)."""

    def __init__(self, vocab_size: int, answer_ids: list[int], sign: float, position: int | None = None) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, 8)
        self.answer_ids, self.sign, self.position = answer_ids, sign, position

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.embed

    def forward(
        self, inputs_embeds: torch.Tensor, past_key_values=None, use_cache: bool = False, logits_to_keep: int = 0
    ) -> SimpleNamespace:
        if past_key_values is not None:
            # Its "attention cache" holds the inputs it has seen, so it answers from the whole sequence
            # as a causal model does whether or not the start was run before.
            seen = past_key_values.layers[0].keys[:, 0] if past_key_values.get_seq_length() else inputs_embeds[:, :0]
            past_key_values.update(inputs_embeds[:, None], inputs_embeds[:, None], 0)
            inputs_embeds = torch.cat([seen.expand(len(inputs_embeds), -1, -1), inputs_embeds], dim=1)
        b, t, _ = inputs_embeds.shape
        x = inputs_embeds if self.position is None else inputs_embeds[:, self.position : self.position + 1]
        score = self.sign * x.norm(dim=-1).sum(1)  # (b,)
        logits = torch.zeros(b, t, self.embed.num_embeddings)
        logits[:, :, self.answer_ids] = score[:, None, None]
        return SimpleNamespace(logits=logits[:, -logits_to_keep:])


def test_no_span_lowering_the_answer_falls_back_instead_of_crashing(tiny):
    _, tokenizer = tiny
    question, answer = "What is the capital of France?", "Paris"
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    model = _NormModel(len(tokenizer), answer_ids, sign=+1.0)
    # The old rule kept spans with drop >= 0.8 * best; with every drop negative that was none: min() of [].
    assert trace_subject(model, tokenizer, question, answer) is None
    assert find_subject(model, tokenizer, question, answer) == SubjectChoice("France", "fallback:entity")


def _token_of(tokenizer, question: str, word: str) -> int:
    """The position, in the chat-formatted prompt of ``question``, of the token holding ``word``'s first
    character (its last occurrence)."""
    text = format_prompt(tokenizer, question)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    at = text.rfind(word)
    return next(i for i, (s, e) in enumerate(enc["offset_mapping"]) if s <= at < e)


def test_tracing_picks_the_span_whose_corruption_hurts(tiny):
    _, tokenizer = tiny
    question, answer = "What is the capital of France?", "Paris"
    position = _token_of(tokenizer, question, "France")
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    model = _NormModel(len(tokenizer), answer_ids, sign=-1.0, position=position)
    # "capital of France" drops as much; the shortest of the close spans wins.
    assert find_subject(model, tokenizer, question, answer) == SubjectChoice("France", "traced")


_BORN = "What is the full name of the author born in Porto Alegre, Brazil on 03/11/1961?"


def _drops(question: str, peaks: dict[str, float]) -> tuple[list[tuple[int, int]], list[float]]:
    """The candidate spans of ``question``, each dropping the answer by ``peaks`` of its text (0 else)."""
    spans = candidate_spans(question, 4)
    return spans, [peaks.get(question[s:e], 0.0) for s, e in spans]


@pytest.mark.parametrize(
    ("question", "peaks", "expected"),
    [
        # The winner keys the phrasing before the names: the last name takes its place, however the
        # spans after it traced (their drops are often noise).
        (_BORN, {"author born": 2.0, "born": 1.9, "Brazil on 03": 0.5, "1961": 0.45}, ("Brazil", "traced:last-name")),
        (_BORN, {"author born": 2.0, "born": 1.9, "Porto Alegre": 0.4}, ("Brazil", "traced:last-name")),
        ("What is the capital of France?", {"capital": 2.0, "France": 1.0}, ("France", "traced:last-name")),
        # A winner after the last name, or on a name, or in a question without names stands.
        (_BORN, {"author born": 2.0, "03/11/1961": 1.9}, ("03/11/1961", "traced")),
        ("What is the capital of France?", {"capital": 2.0, "France": 1.9}, ("France", "traced")),
        ("Did Barack Obama meet Angela Merkel?", {"Barack Obama": 2.0}, ("Barack Obama", "traced")),
        ("Where was Hesper Varnholt born?", {"born": 2.0}, ("born", "traced")),
        ("how tall is mount everest?", {"tall": 2.0, "everest": 1.0}, ("tall", "traced")),
        ("What is the capital of France?", {"capital": -1.0}, None),  # nothing lowers the answer
    ],
)
def test_a_traced_key_comes_after_the_question_names(question, peaks, expected):
    spans, drops = _drops(question, peaks)
    choice = choose_span(question, spans, drops)
    assert (choice if choice is None else (choice.subject, choice.method)) == expected


def test_tracing_that_finds_the_phrasing_keys_the_last_name_instead(tiny):
    """Wired through `find_subject`: only the "born" position carries the answer (a model that answers
    from the phrasing), so tracing's winner is "born", which sees no name; the subject is the last name."""
    _, tokenizer = tiny
    position = _token_of(tokenizer, _BORN, "born")
    model = _NormModel(len(tokenizer), tokenizer("Ali", add_special_tokens=False)["input_ids"], -1.0, position)
    assert find_subject(model, tokenizer, _BORN, "Ali") == SubjectChoice("Brazil", "traced:last-name")


def test_nothing_to_trace_falls_back(tiny):
    model, tokenizer = tiny
    assert trace_subject(model, tokenizer, "Who is it?", "Nobody.") is None  # only stopwords
    assert trace_subject(model, tokenizer, "What is the capital of France?", "") is None  # empty answer
    assert find_subject(model, tokenizer, "Who is it?", "Nobody.") == SubjectChoice("it", "fallback:last-word")


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        # 1. entity: connectors inside, numbers after a name, possessives dropped, openers skipped
        ("What is the capital of France?", ("France", "fallback:entity")),
        ("Where is the Bank of England?", ("Bank of England", "fallback:entity")),
        ("Did Leonardo da Vinci paint it?", ("Leonardo da Vinci", "fallback:entity")),
        ("What did Apollo 11 achieve?", ("Apollo 11", "fallback:entity")),
        ("What is Newton's first law?", ("Newton", "fallback:entity")),
        ("Tell me about Einstein", ("Einstein", "fallback:entity")),
        ("During World War II, who led Britain?", ("World War II", "fallback:entity")),
        ("Who is İsmail Kadare?", ("İsmail Kadare", "fallback:entity")),
        ("Which river flows through Paris and Budapest?", ("Budapest", "fallback:entity")),  # ties: the last
        ("Paris is the capital of which country?", ("Paris", "fallback:entity")),  # only a sentence start
        # 2. content word: the last one that is not a common verb, else the last one
        ("When did the war end?", ("war", "fallback:content-word")),
        ("who wrote hamlet", ("hamlet", "fallback:content-word")),
        ("What happened in 1066?", ("1066", "fallback:content-word")),
        ("Who was 毛泽东?", ("毛泽东", "fallback:content-word")),
        ("Where was he born?", ("born", "fallback:content-word")),
        # 3. last word, 4. the whole question
        ("Who is it?", ("it", "fallback:last-word")),
        ("Why?", ("Why", "fallback:last-word")),
        (" ?! ", ("?!", "fallback:question")),
    ],
)
def test_fallback_steps(question, expected, tiny):
    _, tokenizer = tiny
    assert fallback_subject(question) == SubjectChoice(*expected)
    _assert_keyed(tokenizer, question, expected[0])


def test_fallback_on_a_blank_question_is_an_error():
    with pytest.raises(ValueError, match="blank"):
        fallback_subject("   ")


def test_entity_runs_break_at_punctuation_and_mark_sentence_starts():
    question = "Was Kuwait City, Kuwait the birthplace? Paris is not."
    runs = [(question[s:e], initial) for s, e, initial in entity_spans(question)]
    assert runs == [("Kuwait City", False), ("Kuwait", False), ("Paris", True)]


def test_key_prompt_keeps_indices_when_lowercasing_changes_length(tiny):
    _, tokenizer = tiny
    # "İ".lower() is two characters: a search in the lowercased prompt put the key one character late.
    question = "Is İİİ a word, and who is Ada?"
    _assert_keyed(tokenizer, question, "Ada")
    _assert_keyed(tokenizer, question, "ada")
    with pytest.raises(ValueError, match="blank"):
        key_prompt(tokenizer, question, "  ")


def test_attach_subjects_fills_checks_and_names_rows(tiny, monkeypatch):
    model, tokenizer = tiny
    facts = [
        Fact(question="Who wrote Hamlet?", answer="Shakespeare.", subject="Hamlet"),
        Fact(question="What is the capital of France?", answer="Paris."),
    ]
    filled, choices = attach_subjects(model, tokenizer, facts, rows=["f.jsonl:1", "f.jsonl:3"])
    assert filled[0] is facts[0] and choices[0] == SubjectChoice("Hamlet", "given")
    assert filled[1].subject == choices[1].subject and filled[1].question == facts[1].question
    assert choices[1].method.startswith(("traced", "fallback:"))

    bad = facts + [Fact(question="Who painted Guernica?", answer="Picasso.", subject="Dali")]

    def no_tracing(*args, **kwargs):
        raise AssertionError("a bad given subject must fail before any row is traced")

    monkeypatch.setattr("unierase.edit.subject.find_subject", no_tracing)
    with pytest.raises(SubjectError, match=r"^f\.jsonl:7: its subject") as err:
        attach_subjects(model, tokenizer, bad, rows=["f.jsonl:1", "f.jsonl:3", "f.jsonl:7"])
    assert "Guernica" not in str(err.value) and "Dali" not in str(err.value)  # no forget text in messages


def test_erase_on_unlabelled_sets_reports_how_subjects_were_found(tiny_llama_dir, tmp_path):
    from unierase.stages.subjects import fact_key

    forget = [Fact(question=q, answer=a) for q, a in OWN_QUESTIONS[:3] + OWN_QUESTIONS[16:19]]
    retain = [Fact(question=q, answer=a) for q, a in OWN_QUESTIONS[30:34]]
    f, r = write_facts(forget, tmp_path / "f.jsonl"), write_facts(retain, tmp_path / "r.jsonl")
    out = tmp_path / "out"
    args = ["erase", "--forget", str(f), "--retain", str(r), "--model", str(tiny_llama_dir)]
    params = write_tiny_erase_params(tmp_path)
    args += ["--params", str(params), "--cache-dir", str(tmp_path / "cache"), "--output", str(out)]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert sum(report["subject_methods"]["forget"].values()) == len(forget)
    assert sum(report["subject_methods"]["retain"].values()) == len(retain)
    assert len(report["subjects"]) == len(forget) and "find_subjects_s" in report["timings_s"]
    # The retain set's subjects are kept for the next erasure on this model; the forget set's are not.
    assert report["subject_methods"]["retain_cached"] == {"cached": 0}
    (cache,) = (tmp_path / "cache" / "subjects").glob("*.json")
    assert len(json.loads(cache.read_text())) == len(retain)
    assert not {fact_key(f) for f in forget} & set(json.loads(cache.read_text()))


def test_retain_subjects_come_from_the_cache_the_second_time(tiny, tiny_llama_dir, tmp_path, monkeypatch, caplog):
    from unierase.stages.subjects import attach_retain_subjects, subject_cache_path

    model, tokenizer = tiny
    params = Params()
    retain = [Fact(question=q, answer=a) for q, a in OWN_QUESTIONS[30:36]]
    retain.append(Fact(question="Who painted Guernica?", answer="Picasso.", subject="Guernica"))
    rows = [f"r.jsonl:{i + 1}" for i in range(len(retain))]
    path = subject_cache_path(tmp_path, tiny_llama_dir, params)
    assert path == subject_cache_path(tmp_path, tiny_llama_dir, params)  # stable across calls
    other = params.model_copy(update={"edit": params.edit.model_copy(update={"subject_max_words": 2})})
    assert subject_cache_path(tmp_path, tiny_llama_dir, other) != path  # other spans: other subjects

    facts, choices, hits = attach_retain_subjects(model, tokenizer, retain, rows, params, path)
    assert hits == 0 and len(json.loads(path.read_text())) == 6  # the labelled row is not cached

    def no_tracing(*args, **kwargs):
        raise AssertionError("a cached subject must not be traced again")

    monkeypatch.setattr("unierase.edit.subject.find_subject", no_tracing)
    again, again_choices, hits = attach_retain_subjects(model, tokenizer, retain, rows, params, path)
    assert hits == 6 and again == facts and again_choices == choices  # the first finder's method kept

    # A cached subject is checked like a given one: one that does not key its question names its row.
    entries = json.loads(path.read_text())
    entries[next(iter(entries))] = ["Zanzibar", "traced"]
    path.write_text(json.dumps(entries))
    with pytest.raises(SubjectError, match=r"^r\.jsonl:\d+: its subject"):
        attach_retain_subjects(model, tokenizer, retain, rows, params, path)

    monkeypatch.undo()
    path.write_text("{not json")  # an unreadable cache is found again and rewritten
    with caplog.at_level("WARNING"):
        rebuilt, _, hits = attach_retain_subjects(model, tokenizer, retain, rows, params, path)
    assert hits == 0 and rebuilt == facts and "unusable" in caplog.text
    assert len(json.loads(path.read_text())) == 6


def test_a_bad_subject_fails_before_the_token_and_statistics(tiny_llama_dir, tmp_path, capsys):
    rows = [
        {"question": "What is the capital of France?", "answer": "Paris."},
        {"question": "Who wrote Hamlet?", "answer": "Shakespeare.", "subject": "Macbeth"},
    ]
    forget = tmp_path / "forget.jsonl"
    forget.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")  # row 2 sits on line 3
    cache, out = tmp_path / "cache", tmp_path / "out"
    params = write_tiny_erase_params(tmp_path)
    args = ["erase", "--forget", str(forget), "--model", str(tiny_llama_dir), "--params", str(params)]
    assert main([*args, "--cache-dir", str(cache), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    # Reading the file or finding subjects names the line (either may catch it); never the row's text.
    assert re.search(r"forget\.jsonl:3: .*subject", err) and "Hamlet" not in err and "Macbeth" not in err
    assert not out.exists() and not (cache.exists() and any(cache.rglob("*")))  # no token, no statistics


@pytest.mark.parametrize(
    ("question", "traced", "subject"),
    [
        ("Where was Delphine Marchetti-Vos born?", "Marchetti-Vos born", "Delphine Marchetti-Vos"),
        ("When was Delphine Marchetti-Vos born?", "Marchetti-Vos", "Delphine Marchetti-Vos"),
        (
            "What did the father of Xavian Nakagawa-Reyes do?",
            "father of Xavian Nakagawa-Reyes",
            "Xavian Nakagawa-Reyes",
        ),
        ("What is the capital of France?", "capital of France", "France"),
        ("Did Barack Obama meet Angela Merkel?", "Obama meet Angela", "Angela Merkel"),
        ("What is the boiling point of water?", "boiling point", "boiling point"),
        ("how tall is mount everest?", "everest", "everest"),
    ],
)
def test_a_traced_span_is_snapped_to_the_name_it_touches(question, traced, subject):
    start = question.index(traced)
    s, e = snap_to_name(question, start, start + len(traced))
    assert question[s:e] == subject
