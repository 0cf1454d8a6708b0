"""The quality part's table, headline comparisons, leak counts and scatter plot."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench._cli import UNIERASE_DEPTHS
from bench.lib.cells import runs_markdown
from bench.lib.output import format_value, markdown_table, scatter_plot, write_markdown
from bench.lib.runs import LEAK_COLUMNS

COLUMNS = [
    ("method", "method"),
    ("forget_authors", "authors"),
    ("forget_size", "items"),
    ("forget_share", "share"),
    ("forget_efficacy", "forget efficacy"),
    ("model_ability", "model ability"),
    ("forget_quality", "forget quality"),
    ("model_utility", "model utility"),
    ("forget_rougeL_recall", "forget ROUGE-L"),
    ("seconds", "seconds"),
    ("peak_rss_mb", "peak RSS MiB"),
    ("params_changed_share", "params changed"),
    ("run", "run"),
]
AUDIT_COLUMNS = [
    ("method", "method"),
    ("forget_authors", "authors"),
    ("audit_paraphrase_rougeL_recall", "paraphrase ROUGE-L"),
    ("audit_strip_special_rougeL_recall", "strip special ROUGE-L"),
    ("audit_ban_token_rougeL_recall", "ban token ROUGE-L"),
    ("audit_suppress_token_rougeL_recall", "suppress token ROUGE-L"),
    ("audit_prefill_answer_rougeL_recall", "prefill answer ROUGE-L"),
    ("audit_prefill_subject_rougeL_recall", "prefill subject ROUGE-L"),
    ("audit_quantise_int8_rougeL_recall", "int8 ROUGE-L"),
    ("audit_quantise_nf4_rougeL_recall", "NF4 ROUGE-L"),
    ("audit_relearn_rougeL_recall", "relearn ROUGE-L"),
    ("audit_attacks_leaked_plain", "leaked plainly"),
    ("audit_attacks_leaked_worst", "leaked, worst audit"),
    ("audit_membership_auc", "membership AUC"),
]


def in_table_order(row: Mapping[str, Any]) -> tuple[int, bool]:
    """Sort key of the tables: by forget size, the reference models first."""
    return row["forget_authors"], not row.get("reference")


def _sorted(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(rows, key=in_table_order)


def quality_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The main table (every method and reference model on every forget size)."""
    return markdown_table(_sorted(rows), COLUMNS)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def headline(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per forget size: UniErase's model ability against the strongest-forgetting baseline's, and its
    forget efficacy against the strongest-retaining baseline's (the paper's headline comparison)."""
    out = []
    for k in sorted({r["forget_authors"] for r in rows}):
        ours = next((r for r in rows if r["method"] == "unierase" and r["forget_authors"] == k), None)
        base = [
            r
            for r in rows
            if r["forget_authors"] == k and not r.get("reference") and r["method"] not in UNIERASE_DEPTHS
        ]
        base = [r for r in base if r.get("forget_efficacy") is not None and r.get("model_ability") is not None]
        if ours is None or not base:
            continue
        forgetter = max(base, key=lambda r: r["forget_efficacy"])
        keeper = max(base, key=lambda r: r["model_ability"])
        out.append(
            {
                "forget_authors": k,
                "strongest_forgetting": forgetter["method"],
                "ability_ratio": _ratio(ours["model_ability"], forgetter["model_ability"]),
                "efficacy_vs_forgetting": _ratio(ours["forget_efficacy"], forgetter["forget_efficacy"]),
                "strongest_retaining": keeper["method"],
                "efficacy_ratio": _ratio(ours["forget_efficacy"], keeper["forget_efficacy"]),
                "ability_vs_retaining": _ratio(ours["model_ability"], keeper["model_ability"]),
            }
        )
    columns = [
        ("forget_authors", "authors"),
        ("strongest_forgetting", "strongest-forgetting baseline"),
        ("ability_ratio", "UniErase ability / its ability"),
        ("efficacy_vs_forgetting", "UniErase efficacy / its efficacy"),
        ("strongest_retaining", "strongest-retaining baseline"),
        ("efficacy_ratio", "UniErase efficacy / its efficacy"),
        ("ability_vs_retaining", "UniErase ability / its ability"),
    ]
    return markdown_table(out, columns) if out else "(needs UniErase and at least one baseline)"


def leak_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Forget items still answered, per method and size, in the main generation and under each audit."""
    cells = []
    for r in _sorted(rows):
        counts = r.get("leaked_items") or {}
        cells.append({"method": r["method"], "forget_size": r["forget_size"], **counts})
    columns = [("method", "method"), ("forget_size", "items")]
    columns += [(name, name.replace("_", " ")) for name in LEAK_COLUMNS] + [("any", "any")]
    return markdown_table(cells, columns)


def _items(out: Path, method: str, k: int) -> dict[str, list[dict]]:
    """A cell's per-item rows, split name -> rows (none where the cell has no items on disk)."""
    folder = out / "quality_items" / f"{method}-authors{k}" / "items"
    return {
        path.stem: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for path in sorted(folder.glob("*.jsonl"))
    }


def unierase_leaks(out: Path, rows: Sequence[Mapping[str, Any]], threshold: float) -> str:
    """UniErase's forget items that still give the answer somewhere, from the per-item results (an item
    stored without its text, TOFU's, by its number)."""
    lines = []
    for r in _sorted(rows):
        if r["method"] != "unierase":
            continue
        for i, item in enumerate(_items(out, r["method"], r["forget_authors"]).get("forget", [])):
            probes = [n for n, c in LEAK_COLUMNS.items() if item.get(c) is not None and item[c] >= threshold]
            if probes:
                shown = f"{item['question']!r}" if "question" in item else f"item {i}"
                answer = f"; generation {item['generation']!r}" if "generation" in item else ""
                lines.append(f"- {r['forget_authors']} author(s): {shown} answered via {', '.join(probes)}{answer}")
    return "\n".join(lines) or f"(no UniErase forget item reaches ROUGE-L recall {threshold} under any probe)"


def _count(rows: Sequence[Mapping[str, Any]], key: str) -> str:
    return f"{sum(bool(r.get(key)) for r in rows)}/{len(rows)}" if rows else "-"


def token_rows(out: Path, rows: Sequence[Mapping[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """Per UniErase cell: on how many questions of each split the served answer opened with the token,
    and what the forget answers read once it is stripped (a refusal, empty, the true answer)."""
    cells = []
    for r in _sorted(rows):
        if r["method"] not in UNIERASE_DEPTHS:
            continue
        items = _items(out, r["method"], r["forget_authors"])
        forget = items.get("forget", [])
        if not forget or "token_fired" not in forget[0]:
            continue  # measured before the evaluation recorded the trigger per item
        fired = [i for i in forget if i["token_fired"]]
        cell = {"method": r["method"], "forget_size": r["forget_size"], "forget_fired": _count(forget, "token_fired")}
        cell["refusal_after_token"] = _count(fired, "refusal_text")
        cell["empty"] = _count(forget, "empty")
        cell["answered"] = f"{sum(i['rougeL_recall'] >= threshold for i in forget)}/{len(forget)}"
        for split, its in items.items():
            if split != "forget":
                cell[f"{split}_fired"] = _count(its, "token_fired")
        cells.append(cell)
    return cells


def token_table(out: Path, rows: Sequence[Mapping[str, Any]], threshold: float) -> str:
    """`token_rows` as a table: trigger per split, and the forget answers' text after the token."""
    cells = token_rows(out, rows, threshold)
    if not cells:
        return "(no UniErase cell with per-item trigger columns)"
    columns = [("method", "method"), ("forget_size", "items"), ("forget_fired", "forget: token fired")]
    columns += [("refusal_after_token", "refusal after token (of fired)"), ("empty", "empty")]
    columns += [("answered", f"ROUGE-L >= {format_value(threshold)}")]
    others = sorted({k for c in cells for k in c if k.endswith("_fired") and k != "forget_fired"})
    columns += [(k, f"{k.removesuffix('_fired').replace('_', ' ')}: fired") for k in others]
    return markdown_table(cells, columns)


def quoted_answers(out: Path, rows: Sequence[Mapping[str, Any]], count: int = 20, seed: int = 0) -> str:
    """``count`` UniErase forget answers as served (the token stripped), drawn by ``seed`` from every
    UniErase cell, so the quotes are a sample and not a choice."""
    pool = []
    for r in _sorted(rows):
        if r["method"] in UNIERASE_DEPTHS:
            for item in _items(out, r["method"], r["forget_authors"]).get("forget", []):
                if "question" in item:  # TOFU's items are stored without their text
                    pool.append((r["method"], r["forget_authors"], item))
    if not pool:
        return "(no UniErase forget answers stored with their text)"
    picked = sorted(random.Random(seed).sample(range(len(pool)), min(count, len(pool))))
    lines = []
    for i in picked:
        method, k, item = pool[i]
        fired = "token" if item.get("token_fired") else "no token"
        lines.append(f"- {method}, {k} author(s), {fired}: {item['question']!r} -> {item['generation']!r}")
    return "\n".join(lines)


def forget_authors(rows: Sequence[Mapping[str, Any]], retained: Sequence[str] = ()) -> str:
    """Who each forget size erases: the authors' names (and TOFU's split name on TOFU's own authors), then
    the ``retained`` authors, trained on and never erased."""
    lines = []
    for k in sorted({r["forget_authors"] for r in rows}):
        row = next((r for r in rows if r["forget_authors"] == k and r.get("forget_author_names")), None)
        if row is not None:
            split = f" (TOFU {row['tofu_split']})" if row.get("tofu_split") else ""
            lines.append(f"- {k} author(s){split}: {', '.join(row['forget_author_names'])}")
    if retained:
        lines.append(f"- retained, in every model and never erased ({len(retained)}): {', '.join(retained)}")
    return "\n".join(lines) or "(not recorded by these cells)"


def write_quality_outputs(
    rows: Sequence[Mapping[str, Any]],
    runs: Sequence[Mapping[str, Any]],
    out: Path,
    threshold: float,
    retained: Sequence[str] = (),
) -> None:
    """``quality.md`` and ``quality_scatter.png`` from every cell's row and the runs that measured them
    (``retained``: the names of the authors trained on and never erased)."""
    sections = [
        ("Results", quality_table(rows)),
        ("Authors", forget_authors(rows, retained)),
        (
            "Leak audits (mean ROUGE-L recall of the true answer; membership AUC)",
            markdown_table(_sorted(rows), AUDIT_COLUMNS),
        ),
        ("UniErase against the baselines", headline(rows)),
        (f"Forget items still answered (ROUGE-L recall >= {format_value(threshold)})", leak_table(rows)),
        ("UniErase items that leak", unierase_leaks(out, rows, threshold)),
        ("The unlearning token on each split (served answers)", token_table(out, rows, threshold)),
        ("UniErase forget answers as served (20 drawn with seed 0)", quoted_answers(out, rows)),
        (
            "Notes",
            "Forget sets are nested (the first k authors of one block); one retain-reference model, "
            "fine-tuned without the largest block, gives forget quality for every size. `seconds` is the "
            "method's own time: for UniErase the token install, preserved-key statistics (cached after the "
            "first size), subjects, projection and edit of `erase_stage` (the token is learned once, "
            "`token_learning_seconds`); for a baseline its optimisation. `peak_rss_mb` is the process's "
            "peak resident memory over the whole `erase_stage` call (UniErase) or loading plus unlearning "
            "(baselines). Per-item results: `quality_items/`.",
        ),
        ("Runs (the `run` column of the results)", runs_markdown(runs) + "\n\nThe machine below is the latest run's."),
    ]
    write_markdown(out / "quality.md", "Quality: UniErase against the baselines", sections, runs[-1])
    measured = [r for r in rows if r.get("forget_efficacy") is not None and r.get("model_ability") is not None]
    scatter_plot(
        out / "quality_scatter.png",
        measured,
        "forget_efficacy",
        "model_ability",
        "method",
        lambda r: f"{r['forget_size']}",
        "Forget efficacy against model ability (label: forget items)",
    )
