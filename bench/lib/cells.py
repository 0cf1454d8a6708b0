"""One JSON file per measured cell: the one resume rule of every benchmark part.

A cell is one measurement: a method at one size or step (``<method>@<size>``), or something measured once
(cost: ``unierase@once``, ``pipeline``). Its file, ``<out>/<part>_cells/<name>.json``, is written as soon
as it is measured; a run measures only cells without a file, so running the same command again goes on
with a run cut short, and ``--redo METHOD[@SIZE]`` deletes files first. The part's summary is rebuilt from
every cell at the end of each run. A cell records the run that measured it (machine, commit, command) and
its workload; a run whose workload differs from the cells already there stops, naming what differs. A part
may narrow each cell's workload to what that cell reads (``scope``): a baseline's cell does not depend on
the erasure's own parameters, so changing them keeps it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.lib.output import markdown_table, write_json

log = logging.getLogger(__name__)

RUN_COLUMNS = [("run", "run"), ("date", "date"), ("git_commit", "commit"), ("command", "command")]

# A cell's name and the run's workload -> the part of that workload the cell's result depends on.
Scope = Callable[[str, dict[str, Any]], dict[str, Any]]


def whole_workload(name: str, workload: dict[str, Any]) -> dict[str, Any]:
    """The default `Scope`: every cell depends on the whole workload."""
    return workload


def workload_digest(workload: Mapping[str, Any]) -> str:
    """SHA-256 of the workload's canonical JSON."""
    return hashlib.sha256(json.dumps(workload, sort_keys=True).encode()).hexdigest()


def _differences(old: Any, new: Any, key: str = "") -> Iterator[str]:
    """``key=old there, new now`` for each leaf that differs, keys dotted (``params.edit.v_steps``)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for k in sorted(set(old) | set(new)):
            yield from _differences(old.get(k), new.get(k), f"{key}.{k}" if key else k)
    elif old != new:
        yield f"{key}={old!r} there, {new!r} now"


def _redo_matches(entry: str, name: str) -> bool:
    """Whether a ``--redo`` entry (``METHOD``: every size, or ``METHOD@SIZE``) names a cell."""
    return name == entry or ("@" not in entry and name.startswith(entry + "@"))


@dataclass(frozen=True)
class Cells:
    """The cell files of one part, as one run sees them (see the module docstring); made by `open_cells`.

    Attributes:
        folder: ``<out>/<part>_cells``.
        workload: This run's workload (JSON values).
        run: This run's provenance: the machine description plus its start time.
        scope: The part of the workload each cell depends on (what its file records and is checked on).
    """

    folder: Path
    workload: dict[str, Any]
    run: dict[str, Any]
    scope: Scope = whole_workload

    def path(self, name: str) -> Path:
        """The file of a cell."""
        return self.folder / f"{name}.json"

    def has(self, name: str) -> bool:
        """Whether the cell is measured (its file exists)."""
        return self.path(name).is_file()

    def read(self, name: str) -> Any:
        """A measured cell's data."""
        return json.loads(self.path(name).read_text(encoding="utf-8"))["data"]

    def save(self, name: str, data: Any) -> None:
        """Writes a measured cell with this run's provenance and workload (atomically: never half a file)."""
        workload = self.scope(name, self.workload)
        record = {"name": name, "run": self.run, "workload_digest": workload_digest(workload)}
        write_json({**record, "workload": workload, "data": data}, self.path(name))

    def load(self) -> tuple[list[dict[str, Any]], dict[str, tuple[int, Any]]]:
        """Every cell file.

        Returns:
            The runs that measured them, numbered from 1 in the order they started (``run``: the
            number), and each cell's name mapped to (its run's number, its data).
        """
        cells = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(self.folder.glob("*.json"))]
        runs = {c["run"]["started"]: c["run"] for c in cells}
        number = {started: i + 1 for i, started in enumerate(sorted(runs))}
        numbered = [{"run": number[s], **runs[s]} for s in sorted(runs)]
        return numbered, {c["name"]: (number[c["run"]["started"]], c["data"]) for c in cells}


def open_cells(
    out: Path,
    part: str,
    workload: Mapping[str, Any],
    machine: Mapping[str, Any],
    redo: Sequence[str] = (),
    scope: Scope = whole_workload,
) -> Cells:
    """A part's cells for this run: the ``--redo`` cells deleted, the others checked against the workload
    (each on its ``scope``: what the cell recorded, narrowed the same way, against this run's).

    Args:
        out: The results directory.
        part: The part's name (``cost``): its cells go under ``out/<part>_cells``.
        workload: What makes cells comparable (JSON values).
        machine: This run's machine, commit and command (`bench.lib.measure.machine_info`).
        redo: ``METHOD`` or ``METHOD@SIZE`` entries whose cells are deleted.
        scope: The part of the workload each cell depends on (default: all of it).

    Raises:
        SystemExit: A malformed ``--redo`` entry, or a kept cell measured on another workload.
    """
    for entry in redo:
        method, sep, size = entry.partition("@")
        if not method or (sep and not (size.isdigit() or size == "once")):
            raise SystemExit(f"--redo takes METHOD or METHOD@SIZE (unierase@200, unierase@once), got {entry!r}")
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")
    workload = json.loads(json.dumps(workload))  # tuples as lists: compared as the files hold them
    cells = Cells(Path(out) / f"{part}_cells", workload, {**machine, "started": started}, scope)
    for path in sorted(cells.folder.glob("*.json")):
        if any(_redo_matches(entry, path.stem) for entry in redo):
            log.info("--redo: deleting %s", path)
            path.unlink()
    for path in sorted(cells.folder.glob("*.json")):
        cell = json.loads(path.read_text(encoding="utf-8"))
        # Narrowing the recorded workload too keeps a cell written before its part had a scope.
        there, now = scope(cell["name"], cell["workload"]), scope(cell["name"], workload)
        if workload_digest(there) != workload_digest(now):
            what = "; ".join(_differences(there, now))
            raise SystemExit(
                f"{path} was measured on another workload ({what}): use the same flags, another --out, or "
                f"--redo {cell['name']}"
            )
    return cells


def runs_markdown(runs: Sequence[Mapping[str, Any]]) -> str:
    """The runs behind a summary, one line each (the ``run`` column of its rows)."""
    return markdown_table(runs, RUN_COLUMNS) if runs else "(no cell measured yet)"
