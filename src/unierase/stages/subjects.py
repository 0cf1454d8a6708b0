"""The one cache of subjects found for retain facts, so a recurring erasure does not trace them again.

Finding a subject for an unlabelled fact runs a few forward passes per fact (`unierase.edit.subject`);
a retain set is usually the same from one erasure to the next and much larger than the forget set
(TOFU's: 600 rows, over twenty minutes on a 2-core CPU). What tracing finds depends only on the model,
its loading config, the span limit and the fact, so it is kept under the user cache
(``subjects/<model digest>-<settings hash>.json``, fact digest -> subject and method) and reused.

Only retain facts are cached: a forget set is what an erasure must not leave lying about, so its
subjects are found afresh every time. A cache file that is missing or unreadable is found again and
rewritten; a cached subject is checked against its question like any other before it is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.atomic import write_text_atomic
from unierase.config import Params, config_hash
from unierase.data.facts import Fact
from unierase.digests import model_dir_sha256, texts_sha256
from unierase.edit.subject import SubjectChoice, attach_subjects

logger = logging.getLogger(__name__)

# Bumped whenever `find_subject` would choose differently for the same model and fact.
TRACING_VERSION = 2


def subject_cache_path(cache_dir: str | Path, model_dir: str | Path, params: Params) -> Path:
    """Where the subjects traced on the model in ``model_dir`` (loaded with ``params.model``, spans of
    at most ``params.edit.subject_max_words`` words) are cached."""
    settings = f"{config_hash(params.model)}-{params.edit.subject_max_words}-{TRACING_VERSION}"
    name = f"{model_dir_sha256(model_dir)[:16]}-{hashlib.sha256(settings.encode()).hexdigest()[:16]}"
    return Path(cache_dir) / "subjects" / f"{name}.json"


def fact_key(fact: Fact) -> str:
    """A fact's entry in the cache: what tracing reads of it (its question and answer)."""
    return texts_sha256([fact.question, fact.answer])


def _read(path: Path) -> dict[str, list[str]]:
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(entries, dict) or not all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(s, str) for s in v) for v in entries.values()
        ):
            raise ValueError("not a mapping of fact digests to [subject, method]")
        return entries
    except (ValueError, OSError) as err:  # json raises a ValueError subclass
        logger.warning("subject cache %s is unusable (%s); finding its subjects again", path, err)
        return {}


def attach_retain_subjects(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    retain: list[Fact],
    rows: list[str],
    params: Params,
    cache_path: Path,
) -> tuple[list[Fact], list[SubjectChoice], int]:
    """`attach_subjects` for retain facts, with the subjects of unlabelled facts taken from the cache at
    ``cache_path`` where it has them and the newly found ones added to it.

    Returns:
        The facts with subjects, how each subject was chosen (a cached one keeps the method that first
        found it) and how many came from the cache.
    """
    cached = _read(cache_path)
    keys = [fact_key(fact) for fact in retain]
    hits = {i for i, (fact, key) in enumerate(zip(retain, keys, strict=True)) if not fact.subject and key in cached}
    # A cached subject goes through the same check as a given one: one that no longer keys its prompt
    # fails here with the row's name, as a bad given subject would.
    labelled = [
        fact.model_copy(update={"subject": cached[keys[i]][0]}) if i in hits else fact for i, fact in enumerate(retain)
    ]
    facts, choices = attach_subjects(model, tokenizer, labelled, params.edit.subject_max_words, rows)
    choices = [SubjectChoice(c.subject, cached[keys[i]][1]) if i in hits else c for i, c in enumerate(choices)]
    found = {
        keys[i]: [choice.subject, choice.method]
        for i, (fact, choice) in enumerate(zip(retain, choices, strict=True))
        if not fact.subject and i not in hits
    }
    if found:
        write_text_atomic(cache_path, json.dumps({**cached, **found}, sort_keys=True) + "\n")
    return facts, choices, len(hits)
