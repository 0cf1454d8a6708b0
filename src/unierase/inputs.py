"""Checks of what a person names on a command line, in a request file or in ``params.yaml``: request
ids, version numbers, cron strings, registered-model names and aliases, output folders.

Each runs in microseconds and raises `InputError` (a ``ValueError``) with a message that names the
value, the rule and what to do, so that a command refuses a bad value before it loads a model or
touches the registry.

    from unierase.inputs import check_request_id
    check_request_id("acme-42")          # -> "acme-42"
    check_request_id("../etc")           # InputError: request id '../etc' ...
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

# A request id becomes a folder name and an MLflow tag: letters, digits and _ . : - only, a letter or
# digit first (so never "." or ".."), at most 128 characters.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
_VERSION = re.compile(r"^[1-9][0-9]{0,17}$")
_ALIAS = re.compile(r"^[\w\-]{1,255}$")  # MLflow's alias rule
_MAX_MODEL_NAME = 256  # the registry's column width


class InputError(ValueError):
    """A value a person gave that no command can act on; the message names it and the rule."""


def check_request_id(request_id: str) -> str:
    """A request id that is safe as a folder name and a tag.

    Raises:
        InputError: It is empty, too long, or holds another character than letters, digits and ``_ . : -``.
    """
    if not isinstance(request_id, str) or not _REQUEST_ID.match(request_id):
        raise InputError(
            f"request id {request_id!r} is not allowed: use 1-128 letters, digits and _ . : - "
            "starting with a letter or digit (it names a folder and an MLflow tag)"
        )
    return request_id


def check_version(version: str | int) -> str:
    """A registered-model version number, as MLflow writes it (``"3"``).

    Raises:
        InputError: It is not a positive whole number.
    """
    text = str(version).strip()
    if not _VERSION.match(text):
        raise InputError(f"version {version!r} is not a version number: versions are 1, 2, 3, ...")
    return text


def check_model_name(name: str) -> str:
    """A registered-model name the MLflow registry accepts (its own rule, checked before any call).

    Raises:
        InputError: It is blank or too long, holds ``/`` or ``:``, or is not a plain file name.
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError("the registered model name is empty; set registry.model_name or leave it unset (null)")
    problem = None
    if len(name) > _MAX_MODEL_NAME:
        problem = f"longer than {_MAX_MODEL_NAME} characters"
    elif "/" in name or ":" in name:
        problem = "it holds '/' or ':'"
    elif (norm := posixpath.normpath(name)) != name or norm == "." or norm.startswith(".."):
        problem = "it is not a plain name (it would resolve to another path)"
    if problem:
        raise InputError(f"registered model name {name!r} is not allowed by MLflow: {problem}")
    return name


def check_alias(alias: str) -> str:
    """A registered-model alias MLflow accepts (``champion``): letters, digits, ``_`` and ``-``.

    Raises:
        InputError: It is empty, holds another character, is ``latest`` or looks like a version (``v3``).
    """
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        raise InputError(f"alias {alias!r} is not allowed: use letters, digits, _ and - (e.g. champion)")
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise InputError(f"alias {alias!r} is reserved by MLflow; choose another (e.g. champion)")
    return alias


def check_cron(cron: str) -> str:
    """A cron string Prefect can schedule (five fields: minute hour day-of-month month day-of-week).

    Raises:
        InputError: Prefect's cron validation rejects it.
    """
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron)
    except (ValidationError, ValueError, TypeError):
        raise InputError(
            f"schedule {cron!r} is not a cron string: give five fields, minute hour day month weekday "
            "(e.g. '0 2 * * *' for 02:00 every day)"
        ) from None
    return cron


def check_new_output_dir(path: str | Path) -> Path:
    """An output folder that does not exist yet or is empty, so that nothing is overwritten.

    Raises:
        FileExistsError: It is a file, or a folder that holds something.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} exists and is not an empty folder; choose a new output folder")
    return path
