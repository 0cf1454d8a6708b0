"""The cost part's summary from its cells, derived figures (ratios in the same run, growth with the
forget-set size), tables and plot."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.lib.cells import Cells, runs_markdown
from bench.lib.output import line_plots, markdown_table, write_markdown

ONCE_PHASES = ("token_learning", "covariance_cold", "covariance_cached")  # independent of the forget set
ONCE_CELL = "unierase@once"  # the cell of the ONCE_PHASES
PIPELINE_CELL = "pipeline"  # the cell of the pipeline overhead


def cost_summary(cells: Cells, not_measured: list[dict]) -> dict[str, Any]:
    """What ``cost.json`` holds: every cell's rows, each with the number of the run that measured it, in
    order of forget-set size (the once-per-model phases first), and the figures derived from them."""
    runs, measured = cells.load()
    pipeline = next(({"run": run, **data} for name, (run, data) in measured.items() if name == PIPELINE_CELL), None)
    phases = _by_size({"run": run, **r} for run, data in measured.values() for r in data.get("phases", []))
    storage = _by_size({"run": run, **r} for run, data in measured.values() for r in data.get("storage", []))
    return {
        "machine": runs[-1] if runs else cells.run,
        "runs": runs,
        "workload": cells.workload,
        "phases": phases,
        "storage": storage,
        "ratios": ratios(phases),
        "growth": growth(phases),
        "pipeline": pipeline,
        "not_measured": not_measured,
    }


def _by_size(rows: Iterable[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: -1 if r["forget_size"] is None else r["forget_size"])


def _find(phases: Sequence[Mapping], phase: str, method: str, size: int | None, run: Any = None) -> Mapping | None:
    """The row of (phase, method, size), the one of ``run`` when there is one."""
    rows = [r for r in phases if (r["phase"], r["method"], r["forget_size"]) == (phase, method, size)]
    return next((r for r in rows if r.get("run") == run), rows[0] if rows else None)


def ratios(phases: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each baseline against UniErase on the same forget set, in the same run where the file has both
    (``same_run`` says): time and peak memory of its unlearning over UniErase's edit, and its time over
    UniErase's first request (token learning, cold statistics and edit)."""
    out = []
    for row in phases:
        if row["phase"] != "unlearn":
            continue
        edit = _find(phases, "edit", "unierase", row["forget_size"], row.get("run"))
        if edit is None:
            continue
        once = sum(
            r["seconds"] for p in ("token_learning", "covariance_cold") if (r := _find(phases, p, "unierase", None))
        )
        out.append(
            {
                "method": row["method"],
                "forget_size": row["forget_size"],
                "same_run": row.get("run") == edit.get("run"),
                "seconds": row["seconds"],
                "unierase_edit_seconds": edit["seconds"],
                "time_ratio": row["seconds"] / edit["seconds"] if edit["seconds"] else None,
                "time_ratio_first_request": row["seconds"] / (edit["seconds"] + once),
                "peak_rss_ratio": row["peak_rss_mb"] / edit["peak_rss_mb"] if edit["peak_rss_mb"] else None,
                "peak_increase_mb": row["peak_rss_increase_mb"],
                "unierase_edit_peak_increase_mb": edit["peak_rss_increase_mb"],
            }
        )
    return out


def _slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(seconds) on log(items): 1 is linear growth, 0 flat."""
    pts = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def growth(phases: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """How each size-dependent phase's time grows with the number of items (log-log slope), and its
    seconds per item at the largest size."""
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    runs: dict[tuple[str, str], set] = {}
    for r in phases:
        if r["forget_size"] is not None:
            series.setdefault((r["phase"], r["method"]), []).append((r["forget_size"], r["seconds"]))
            runs.setdefault((r["phase"], r["method"]), set()).add(r.get("run"))
    out = []
    for (phase, method), pts in series.items():
        largest = max(pts)
        out.append(
            {
                "phase": phase,
                "method": method,
                "sizes": [n for n, _ in sorted(pts)],
                "loglog_slope": _slope(pts),
                "seconds_per_item_at_largest": largest[1] / largest[0],
                # Points of several runs mix machines (or one machine on two days): the slope is then rougher.
                "runs": ",".join(str(x) for x in sorted(runs[phase, method], key=str)),
            }
        )
    return out


PHASE_COLUMNS = [
    ("phase", "phase"),
    ("method", "method"),
    ("forget_size", "items"),
    ("seconds", "seconds"),
    ("peak_rss_mb", "peak RSS MiB"),
    ("peak_rss_increase_mb", "peak increase MiB"),
    ("cache_hit", "cache hit"),
    ("value_steps_per_fact", "value steps / fact"),  # cells measured before one key per subject
    ("value_keys", "value keys"),
    ("value_steps_per_key", "value steps / key"),
    ("value_share", "value share of edit"),
    ("run", "run"),
]
RATIO_COLUMNS = [
    ("method", "baseline"),
    ("forget_size", "items"),
    ("time_ratio", "time / UniErase edit"),
    ("time_ratio_first_request", "time / UniErase first request"),
    ("peak_rss_ratio", "peak RSS / UniErase edit"),
    ("same_run", "same run"),
]
STORAGE_COLUMNS = [
    ("method", "method"),
    ("forget_size", "items"),
    ("delta_bytes", "delta bytes"),
    ("full_model_bytes", "full copy bytes"),
    ("delta_to_full", "delta / full"),
    ("params_changed_share", "params changed"),
    ("changed_tensors", "tensors changed"),
    ("run", "run"),
]
GROWTH_COLUMNS = [
    ("phase", "phase"),
    ("method", "method"),
    ("loglog_slope", "log-log slope (1 = linear)"),
    ("seconds_per_item_at_largest", "seconds per item (largest)"),
    ("runs", "runs"),
]


def _pipeline_rows(pipeline: Mapping[str, Any] | None) -> str:
    if not pipeline:
        return "(not measured: --no-pipeline, or UniErase not among the methods)"
    keys = (
        "forget_size",
        "core_seconds",
        "flow_seconds",
        "overhead_seconds",
        "overhead_share",
        "prefect_server_startup_seconds",
        "core_peak_rss_mb",
        "flow_peak_rss_mb",
        "status",
        "run",
    )
    rows = [{"figure": k, "value": pipeline.get(k)} for k in keys]
    for record in pipeline.get("version_storage", []):
        rows += [
            {"figure": f"registered version {record['version']}: {k}", "value": v}
            for k, v in record.items()
            if k != "version"
        ]
    return markdown_table(rows, [("figure", "figure"), ("value", "value")])


def _served_rows(served: Mapping[str, Any] | None) -> str:
    if not served:
        return "(not measured: python -m bench.serve_overhead adds it)"
    keys = (
        "forget_size",
        "core_erase_seconds",
        "core_evaluate_seconds",
        "core_seconds",
        "flow_seconds",
        "overhead_seconds",
        "overhead_share",
        "serve_startup_seconds",
        "base_registration_seconds",
        "core_peak_rss_mb",
        "flow_peak_rss_mb",
        "version",
        "status",
    )
    rows = [{"figure": k, "value": served.get(k)} for k in keys]
    machine = served.get("machine") or {}
    rows += [{"figure": k, "value": machine.get(k)} for k in ("date", "git_commit", "command", "cpu", "cores")]
    return markdown_table(rows, [("figure", "figure"), ("value", "value")])


def _registry_rows(storage: Mapping[str, Any] | None) -> str:
    if not storage:
        return "(not measured: python -m bench.registry_storage, then python -m bench.serve_overhead)"
    columns = [
        ("request", "request"),
        ("version", "version"),
        ("storage", "stored as"),
        ("added", "bytes added to the store"),
        ("share_of_full_copy", "share of a full copy"),
        ("seconds", "flow seconds"),
    ]
    table = markdown_table(storage["versions"], columns)
    return (
        f"{table}\n\nFull copy (the base version): {storage['base_full_copy_bytes']} bytes. Champion rebuilt from the "
        f"base and its deltas in an empty cache in {storage['champion_rebuild_seconds_cold']:.1f} s, bit-identical to "
        f"the erased directory: {storage['champion_rebuilt_bit_identical']}. Command: `{storage['command']}`."
    )


def _not_measured(data: Mapping[str, Any]) -> str:
    rows = data.get("not_measured") or []
    if not rows:
        return "Every method ran at every size."
    return markdown_table(rows, [("method", "method"), ("forget_size", "items"), ("why", "why")])


def _unreleased_heap_note(phases: list[dict]) -> str:
    """Which runs measured memory without first returning freed heap memory to the kernel (rows from
    before ``measure`` did, or off glibc), and what that does to their figures."""
    runs = sorted({r.get("run") for r in phases if not r.get("heap_released")}, key=str)
    if not runs:
        return ""
    return (
        f" Run(s) {', '.join(map(str, runs))} measured memory without first returning freed heap memory to the kernel "
        "(rows without `heap_released`): their peak RSS includes what earlier phases in the process freed but "
        "the allocator kept resident, so it is an upper bound, and their peak increase can understate a phase "
        "that reused that memory."
    )


def _table_sections(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        ("Phases (time and peak resident memory)", markdown_table(data["phases"], PHASE_COLUMNS)),
        ("Baselines against UniErase (same run where both are)", markdown_table(data["ratios"], RATIO_COLUMNS)),
        ("Growth with the forget-set size", markdown_table(data["growth"], GROWTH_COLUMNS)),
        ("Storage per version", markdown_table(data["storage"], STORAGE_COLUMNS)),
        ("Pipeline overhead (Prefect flow against erase_stage alone, same request)", _pipeline_rows(data["pipeline"])),
        (
            "Pipeline overhead with `unierase serve` (flow against erase_stage + evaluate_stage called directly)",
            _served_rows(data.get("pipeline_served")),
        ),
        (
            "Registry storage per erasure version (delta versions, make demo + three erasures)",
            _registry_rows(data.get("registry_storage")),
        ),
        ("Not measured", _not_measured(data)),
    ]


def cost_tables(data: Mapping[str, Any]) -> str:
    """Every table of the cost part, as markdown."""
    return "\n\n".join(f"{heading}\n\n{body}" for heading, body in _table_sections(data))


def write_cost_outputs(data: Mapping[str, Any], out: Path) -> None:
    """``cost.md`` and ``cost.png`` from a summary (`cost_summary`, or a ``cost.json`` read back)."""
    runs = runs_markdown(data["runs"]) + "\n\nThe machine below is the latest run's."
    sections = _table_sections(data) + [
        ("Runs (the `run` column of each row)", runs),
        (
            "Notes",
            "Token learning and the preserved-key statistics do not depend on the forget set and are measured "
            "once; `time / UniErase first request` adds them to the edit. The edit is `erase_facts` (subjects, "
            "projection, value optimisation, solve); evaluation is the full protocol with the leak audits. A "
            "delta holds every changed tensor before and after (a baseline changes all of them); the full copy "
            "is a saved model directory. Peak memory is the process's resident set during the phase. Each row names "
            "the run that measured it (Runs): cells measured by several runs can mix machines, or one machine on "
            "two days, so compare figures within one run; the ratios pair rows of the same run where there are both."
            + _unreleased_heap_note(data["phases"]),
        ),
    ]
    write_markdown(out / "cost.md", "Cost: time, memory and storage", sections, data["machine"])
    phases = data["phases"]
    sizes = sorted({r["forget_size"] for r in phases if r["forget_size"] is not None})
    if not sizes:
        return
    time_panel: dict[str, tuple] = {}
    memory_panel: dict[str, tuple] = {}
    for phase, method in sorted({(r["phase"], r["method"]) for r in phases}):
        label = method if phase == "unlearn" else f"{method} {phase}"
        if phase in ONCE_PHASES:
            row = _find(phases, phase, method, None)
            xs, picked = sizes, [row] * len(sizes)  # a flat line: the same cost at every size
        else:
            picked = [_find(phases, phase, method, n) for n in sizes]
            xs = sizes
        time_panel[label] = (xs, [r["seconds"] if r else None for r in picked])
        memory_panel[label] = (xs, [r["peak_rss_mb"] if r else None for r in picked])
    storage_panel: dict[str, tuple] = {}
    for method in dict.fromkeys(r["method"] for r in data["storage"]):
        rows = [
            next((r for r in data["storage"] if (r["method"], r["forget_size"]) == (method, n)), None) for n in sizes
        ]
        storage_panel[f"{method} delta"] = (sizes, [r["delta_bytes"] if r else None for r in rows])
    full = next((r["full_model_bytes"] for r in data["storage"] if r.get("full_model_bytes")), None)
    if full:
        storage_panel["full model copy"] = (sizes, [full] * len(sizes))
    panels = {"seconds": time_panel, "peak RSS of the process (MiB)": memory_panel, "bytes per version": storage_panel}
    line_plots(out / "cost.png", panels, "forget-set size (items)", "Cost against forget-set size (log-log)", log=True)
