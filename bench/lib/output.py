"""Benchmark outputs: JSON written atomically, markdown tables with the machine they ran on, and PNG
plots (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

Column = tuple[str, str]  # (row key, header)


def finite(data: Any) -> Any:
    """``data`` with NaN and infinite floats replaced by None (JSON has no such numbers)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, Mapping):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [finite(v) for v in data]
    return data


def write_json(data: Any, path: str | Path) -> Path:
    """Writes JSON atomically (a temporary file renamed into place): an interrupted run never leaves
    a half-written file. Non-finite floats become null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(finite(data), fh, indent=2, allow_nan=False)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def format_value(value: Any) -> str:
    """A table cell: floats to 4 significant figures, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """A markdown table of ``rows`` with the given (key, header) columns."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_value(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def machine_markdown(info: Mapping[str, Any]) -> str:
    """The machine description as a bullet list."""
    return "\n".join(f"- {key}: {format_value(value)}" for key, value in info.items())


def write_markdown(path: str | Path, title: str, sections: Sequence[tuple[str, str]], machine: Mapping) -> Path:
    """Writes ``# title``, each (heading, body) section, then the machine the numbers come from."""
    parts = [f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.rstrip(), ""]
    parts += ["## Machine", "", machine_markdown(machine), ""]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    return plt


def scatter_plot(
    path: str | Path,
    rows: Sequence[Mapping[str, Any]],
    x: str,
    y: str,
    group: str,
    label: Callable[[Mapping[str, Any]], str],
    title: str,
) -> Path:
    """One point per row, coloured by ``rows[group]`` and annotated with ``label(row)``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    groups = list(dict.fromkeys(r[group] for r in rows))
    for name in groups:
        pts = [r for r in rows if r[group] == name and r.get(x) is not None and r.get(y) is not None]
        ax.scatter([r[x] for r in pts], [r[y] for r in pts], label=name, s=40)
        for r in pts:
            ax.annotate(label(r), (r[x], r[y]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def line_plots(
    path: str | Path,
    series: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float | None]]]],
    xlabel: str,
    title: str,
    log: bool = False,
) -> Path:
    """One panel per entry of ``series`` (panel title -> line name -> (xs, ys)); None values are gaps."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(series), figsize=(5.5 * len(series), 4.5), squeeze=False)
    for ax, (panel, lines) in zip(axes[0], series.items()):
        for name, (xs, ys) in lines.items():
            pts = [(a, b) for a, b in zip(xs, ys) if b is not None]
            if pts:
                ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", label=name)
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
