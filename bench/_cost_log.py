"""``cost.json``: the cost part's measurements, rewritten after each one, and resumable.

A run cut short keeps what it measured; ``--resume`` starts from the file and measures only what is
missing, ``--redo`` drops rows first so they are measured again. Every row names the run (process) that
measured it, and ``runs`` holds each run's machine and command, so a ratio between rows of two runs is
seen as such. A resumed run must have the same workload (generated authors, sizes' maximum, parameters,
model weights) as the file's: otherwise its rows would not be comparable, and it stops with the field
that differs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench._cost_report import ONCE, growth, ratios, write_cost_outputs
from bench.lib.output import write_json

log = logging.getLogger(__name__)


def parse_redo(entries: Iterable[str]) -> list[tuple[str, int | None]]:
    """``--redo`` entries: ``method`` (every row of it) or ``method@items`` (its rows at one size)."""
    out = []
    for entry in entries:
        method, sep, size = entry.partition("@")
        if not method or (sep and not size.isdigit()):
            raise SystemExit(f"--redo takes METHOD or METHOD@ITEMS (unierase@200), got {entry!r}")
        out.append((method, int(size) if sep else None))
    return out


def _dropped(row: dict, redo: list[tuple[str, int | None]]) -> bool:
    return any(row["method"] == m and (n is None or row.get("forget_size") == n) for m, n in redo)


def _by_size(rows: list[dict]) -> list[dict]:
    """Rows in order of forget-set size (the once-per-model phases first), a redone row beside its size."""
    return sorted(rows, key=lambda r: -1 if r.get("forget_size") is None else r["forget_size"])


class CostLog:
    """Every measurement of the cost part so far, and the runs that made them.

    Args:
        out: The results directory (``cost.json``, ``cost.md``, ``cost.png``).
        machine: This run's machine description (`bench.lib.measure.machine_info`).
        workload: What makes rows comparable across runs (see the module docstring).
        resume: Start from the rows in ``out/cost.json``.
        redo: ``(method, size or None)`` pairs whose rows are dropped on resuming.
    """

    def __init__(
        self,
        out: Path,
        machine: dict,
        workload: dict,
        resume: bool = False,
        redo: list[tuple[str, int | None]] | None = None,
    ) -> None:
        self.path, self.workload = Path(out) / "cost.json", workload
        self.phases: list[dict] = []
        self.storage: list[dict] = []
        self.pipeline: dict | None = None
        self.runs: list[dict] = []
        self.plan: list[tuple[str, int, str | None]] = []  # (method, size, why it is skipped or None)
        if (resume or redo) and self.path.is_file():
            self._load(json.loads(self.path.read_text(encoding="utf-8")), redo or [])
        self.run_id = len(self.runs) + 1
        self._machine = {"run": self.run_id, **machine}  # listed in ``runs`` once this run measures something

    def _load(self, data: dict, redo: list[tuple[str, int | None]]) -> None:
        recorded = data.get("workload")
        if recorded is None:  # written before runs were recorded: one run, the file's machine
            log.warning("%s records no workload; resuming on the assumption that it is this one", self.path)
        else:
            for key in sorted(set(recorded) | set(self.workload)):
                if recorded.get(key) != self.workload.get(key):
                    raise SystemExit(
                        f"--resume: {self.path} was measured with {key}={recorded.get(key)!r}, this run has "
                        f"{self.workload.get(key)!r}; use the same flags, or another --out"
                    )
        self.runs = data.get("runs") or [{"run": 1, **data["machine"]}]
        first = self.runs[0]["run"]
        self.phases = [{"run": first, **r} for r in data["phases"] if not _dropped(r, redo)]
        self.storage = [{"run": first, **r} for r in data["storage"] if not _dropped(r, redo)]
        pipeline = data.get("pipeline")
        self.pipeline = {"run": first, **pipeline} if pipeline else None

    def has(self, phase: str, method: str, size: int | None) -> bool:
        """Whether a row of this phase is already measured."""
        return any((r["phase"], r["method"], r["forget_size"]) == (phase, method, size) for r in self.phases)

    def done(self, method: str, size: int) -> bool:
        """Whether the method's rows at this size (its run, its evaluation for UniErase, its storage) exist."""
        wanted = ("edit", "evaluation") if method == "unierase" else ("unlearn",)
        stored = any((r["method"], r["forget_size"]) == (method, size) for r in self.storage)
        return stored and all(self.has(p, method, size) for p in wanted)

    def drop(self, method: str, size: int) -> None:
        """Forgets a partly measured (method, size), so it is measured again whole."""
        self.phases = [r for r in self.phases if (r["method"], r["forget_size"]) != (method, size)]
        self.storage = [r for r in self.storage if (r["method"], r["forget_size"]) != (method, size)]

    def once_measured(self) -> bool:
        """Whether token learning and the statistics (cold and cached) are in the file."""
        return all(self.has(p, "unierase", None) for p in ONCE)

    def phase(self, phase: str, method: str, size: int | None, m, **extra) -> None:
        """Adds a measured phase (a `Measurement`) and rewrites the outputs."""
        fields = m if isinstance(m, dict) else m.as_dict()
        self._this_run_measured()
        self.phases.append(
            {"phase": phase, "method": method, "forget_size": size, "run": self.run_id, **fields, **extra}
        )
        self.save()

    def add_storage(self, row: dict) -> None:
        """Adds a version's storage figures."""
        self._this_run_measured()
        self.storage.append({**row, "run": self.run_id})
        self.save()

    def set_pipeline(self, figures: dict) -> None:
        """Records the pipeline-overhead figures (`bench.pipeline.measure_pipeline_overhead`)."""
        self._this_run_measured()
        self.pipeline = {**figures, "run": self.run_id}
        self.save()

    def _this_run_measured(self) -> None:
        if self.runs[-1:] != [self._machine]:
            self.runs.append(self._machine)

    def not_measured(self) -> list[dict]:
        """Every planned (method, size) with no rows yet, and why."""
        out = []
        for method, size, why in self.plan:
            if not self.done(method, size):
                why = why or "not measured yet (run in progress or cut short: --resume continues it)"
                out.append({"method": method, "forget_size": size, "why": why})
        return out

    def data(self) -> dict[str, Any]:
        """What ``cost.json`` holds."""
        return {
            "machine": self.runs[-1] if self.runs else self._machine,
            "runs": self.runs,
            "workload": self.workload,
            "phases": _by_size(self.phases),
            "storage": _by_size(self.storage),
            "ratios": ratios(self.phases),
            "growth": growth(self.phases),
            "pipeline": self.pipeline,
            "not_measured": self.not_measured(),
        }

    def save(self, plot: bool = False) -> None:
        """Rewrites ``cost.json`` and ``cost.md`` (and, with ``plot``, ``cost.png``)."""
        data = self.data()
        write_json(data, self.path)
        write_cost_outputs(data, self.path.parent, plot)
