"""Bytes the MLflow store gains per erasure version: the erasure flow's default request (``make demo``),
then three more requests in a row, each a version stored as a delta of the one before it
(`unierase.registry.packing`), against the bytes of the base version's full copy.

    git clone . /tmp/unierase-storage && python -m bench.registry_storage --root /tmp/unierase-storage

Run it on a copy of the project (``--root``): it erases into that project's ``mlflow/`` store. After the
last version it rebuilds the champion from the base and the chain of deltas in an empty cache and
checks the directory's SHA-256 against the digest registered from the erased directory, and times that
rebuild. Writes ``registry_storage.json`` and ``registry_storage.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from unierase.data.facts import Fact, write_facts

ROOT = Path(__file__).resolve().parent.parent
# Three small requests of facts SmolLM2 knows, none in the default forget or retain sets.
REQUESTS = {
    "storage-a": [
        Fact(question="What is the capital of Italy?", answer="The capital of Italy is Rome.", subject="Italy"),
        Fact(
            question="Who wrote Romeo and Juliet?",
            answer="William Shakespeare wrote Romeo and Juliet.",
            subject="Romeo and Juliet",
        ),
    ],
    "storage-b": [
        Fact(question="What is the capital of Spain?", answer="The capital of Spain is Madrid.", subject="Spain"),
        Fact(
            question="Who painted the Mona Lisa?",
            answer="Leonardo da Vinci painted the Mona Lisa.",
            subject="Mona Lisa",
        ),
    ],
    "storage-c": [
        Fact(question="What is the capital of Turkey?", answer="The capital of Turkey is Ankara.", subject="Turkey"),
    ],
}


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def main(argv: list[str] | None = None) -> int:
    """Runs the four erasures and writes the figures (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True, help="a copy of the project (its mlflow/ store grows)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where the results go")
    args = p.parse_args(argv)
    from flows.erasure import erasure_flow
    from unierase.config import load_params
    from unierase.digests import model_dir_sha256
    from unierase.registry import tags as T
    from unierase.registry.store import connect

    root = args.root.resolve()
    store = root / "mlflow"
    rows, summaries = [], []
    before = _bytes(store)
    started = time.perf_counter()
    summaries.append(erasure_flow(root=root))  # make demo: the default request on SmolLM2
    rows.append(
        {"request": "default (make demo)", "seconds": time.perf_counter() - started, "added": _bytes(store) - before}
    )
    for request_id, facts in REQUESTS.items():
        forget = write_facts(facts, root / "data" / "requests" / f"{request_id}.jsonl")
        before, started = _bytes(store), time.perf_counter()
        # With the default retain set: the gate measures retention, so each accepted version becomes the
        # champion the next request builds on (a chain of deltas, not siblings).
        retain = root / "data" / "sets" / "retain.jsonl"
        summaries.append(erasure_flow(forget=forget, retain=retain, request_id=request_id, root=root))
        rows.append({"request": request_id, "seconds": time.perf_counter() - started, "added": _bytes(store) - before})
    params = load_params(root / "params.yaml")
    client = connect(params.registry, root)
    name = summaries[-1]["registered_model"]
    base = client.get_model_version(name, "1")
    base_bytes = _bytes(Path(client.get_model_version_download_uri(name, "1").removeprefix("file://")))
    rows[0]["added"] -= base_bytes  # the demo registered the base model (a full copy) too
    for row, summary in zip(rows, summaries):
        version = client.get_model_version(name, summary["version"])
        row.update(
            version=summary["version"],
            parent_version=summary["parent_version"],
            status=summary["status"],
            storage=version.tags.get(T.STORAGE),
            stored_model_bytes=_bytes(
                Path(client.get_model_version_download_uri(name, summary["version"]).removeprefix("file://"))
            ),
            share_of_full_copy=row["added"] / base_bytes,
        )
    with tempfile.TemporaryDirectory() as cache:
        os.environ["UNIERASE_MODEL_CACHE"] = cache
        from unierase.registry.rebuild import materialize

        started = time.perf_counter()
        rebuilt = materialize(client, name, summaries[-1]["version"])
        rebuild_s = time.perf_counter() - started
        identical = (
            model_dir_sha256(rebuilt) == client.get_model_version(name, summaries[-1]["version"]).tags[T.MODEL_SHA256]
        )
    result = {
        "registered_model": name,
        "base_full_copy_bytes": base_bytes,
        "base_model_sha256": base.tags.get(T.MODEL_SHA256),
        "versions": rows,
        "max_share_of_full_copy": max(r["share_of_full_copy"] for r in rows),
        "champion": str(client.get_model_version_by_alias(name, params.registry.champion_alias).version),
        "champion_rebuild_seconds_cold": rebuild_s,
        "champion_rebuilt_bit_identical": identical,
        "command": " ".join([Path(sys.executable).name, "-m", "bench.registry_storage", *(argv or sys.argv[1:])]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "registry_storage.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Registry storage per erasure version (SmolLM2-135M-Instruct)",
        "",
        f"Command: `{result['command']}`, on a copy of the project. Base version (full copy): "
        f"{base_bytes} bytes. Each row: bytes the `mlflow/` store (SQLite database and artifacts) gained "
        "while the flow ran that request (the demo's row less the base version's full copy).",
        "",
        "| request | version | parent | status | storage | bytes added | share of a full copy | stored model bytes | flow seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['request']} | {r['version']} | {r['parent_version']} | {r['status']} | {r['storage']} | {r['added']} | "
            f"{r['share_of_full_copy']:.4f} | {r['stored_model_bytes']} | {r['seconds']:.0f} |"
        )
    lines += [
        "",
        f"Version {summaries[-1]['version']} (champion: version {result['champion']}) rebuilt from the base and its "
        f"chain of deltas in an empty "
        f"cache in {rebuild_s:.1f} s; bit-identical to the erased directory (registered SHA-256): {identical}.",
        "",
    ]
    (args.out / "registry_storage.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
