"""A version stored as a delta of its parent: the bytes its transformers directory adds, and the recipe
that rebuilds the directory, bit for bit, from the parent's.

`pack_delta` writes, into the directory about to be logged as the version's model artifact:

* ``unierase-delta.json``, the recipe: the registered model, the parent version and the SHA-256 of the
  parent's directory and of the result (`unierase.digests.model_dir_sha256`), and for each file of the
  result its SHA-256 and how it is made;
* ``delta/<file>``, the new bytes of each file that differs from the parent's. A weights file
  (safetensors) is cut at tensor boundaries: a tensor whose bytes equal the parent's is a range of the
  parent's file, a grown embedding keeps the parent's rows and stores only the new ones, every other
  tensor is stored whole (the new values of the changed tensors only: the parent holds the old ones).
  Another file keeps the parent's common start and end and stores the middle (tokenizer, config);
* ``key_blocks.safetensors``, in place of the edit state: each request's keys ``K`` (d_in x n), from
  which the accumulated ``C_prev`` is replayed (`unierase.edit.state.accumulate`), the preserved-key
  statistics coming from the parent's edit state or, after a first edit, from the statistics cache by
  key (they depend only on the base model and the corpus), computed again from the recorded covariance
  settings where that cache lacks them.

`unpack_delta` rebuilds the directory and checks each file's SHA-256 and the whole directory's. A
delta over half the size of a full copy (a baseline that fine-tunes every tensor) is refused, and the
caller stores the full directory instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import struct
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open

from unierase.digests import file_sha256, model_dir_sha256
from unierase.edit.state import EditState, accumulate
from unierase.registry.integrity import ArtifactDigestError
from unierase.stages.artifacts import STATE_FILE, load_key_blocks, load_state, save_state

logger = logging.getLogger(__name__)

RECIPE = "unierase-delta.json"
DELTA_DIR = "delta"
KEY_BLOCKS = "key_blocks.safetensors"
# A delta above this share of the full directory is not kept: it would save little and lengthen every
# later rebuild's chain (a baseline that fine-tunes every tensor changes nearly every byte).
FULL_COPY_SHARE = 0.5
# A piece of a rebuilt file: bytes [offset, offset + length) of the parent's file of the same name
# ("parent") or of the version's stored file ``delta/<name>`` ("delta").
Piece = tuple[str, int, int]


def pack_delta(
    model_dir: Path,
    parent_dir: Path,
    out_dir: Path,
    name: str,
    parent_version: str,
    key_blocks: Path | None = None,
    statistics_dir: Path | None = None,
) -> dict | None:
    """Writes the delta of ``model_dir`` against ``parent_dir`` into ``out_dir``; returns the recipe, or
    None (``out_dir`` left empty) when the delta would be over `FULL_COPY_SHARE` of a full copy.

    Args:
        model_dir: The result: a transformers directory.
        parent_dir: The parent version's directory, as rebuilt (its digest goes into the recipe).
        out_dir: An empty directory, the version's model artifact.
        name: Registered model name (the rebuild finds the parent by it).
        parent_version: The parent's version number.
        key_blocks: The erase run's ``key_blocks.safetensors``, when its edit keeps a state.
        statistics_dir: Root of the statistics cache (``<dir>/covariance/<key>.safetensors``).
    """
    model_dir, parent_dir, out_dir = Path(model_dir), Path(parent_dir), Path(out_dir)
    files: dict[str, dict] = {}
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = str(path.relative_to(model_dir))
        sha = file_sha256(path)
        parent = parent_dir / rel
        if parent.is_file() and file_sha256(parent) == sha:
            files[rel] = {"sha256": sha, "pieces": [("parent", 0, path.stat().st_size)]}
            continue
        if rel == STATE_FILE and key_blocks is not None:
            if (entry := _pack_state(path, parent_dir, out_dir, key_blocks, statistics_dir)) is not None:
                files[rel] = {"sha256": sha, **entry}
                continue
            logger.warning("%s: the replayed edit state differs from the file; storing the file instead", rel)
        pieces, new_bytes = _pieces(path, parent if parent.is_file() else None)
        blob = out_dir / DELTA_DIR / rel
        blob.parent.mkdir(parents=True, exist_ok=True)
        with blob.open("wb") as fh:
            for chunk in new_bytes:
                fh.write(chunk)
        files[rel] = {"sha256": sha, "pieces": pieces}
    stored = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    full = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    if stored > FULL_COPY_SHARE * full:
        logger.info("delta of %d bytes is over half the %d-byte directory: storing a full copy", stored, full)
        for child in out_dir.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        return None
    recipe = {
        "format": 1,
        "registered_model": name,
        "parent_version": str(parent_version),
        "parent_sha256": model_dir_sha256(parent_dir),
        "model_sha256": model_dir_sha256(model_dir),
        "files": files,
    }
    (out_dir / RECIPE).write_text(json.dumps(recipe, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return recipe


def unpack_delta(parent_dir: Path, stored_dir: Path, out_dir: Path, statistics_dir: Path | None = None) -> Path:
    """Rebuilds a version's directory at ``out_dir`` (new) from its parent's and its stored delta.

    The stored files must have been checked against the version's manifest already
    (`unierase.registry.integrity.verify_model_dir`); this checks what it builds.

    Raises:
        ArtifactDigestError: The parent is not the recorded one, or a rebuilt file or the rebuilt
            directory does not have its recorded SHA-256 (the message names the file).
        FileNotFoundError: A first edit's preserved statistics are neither in the statistics cache nor
            computable here (the run's corpus is missing or differs).
    """
    parent_dir, stored_dir, out_dir = Path(parent_dir), Path(stored_dir), Path(out_dir)
    recipe = json.loads((stored_dir / RECIPE).read_text(encoding="utf-8"))
    if (actual := model_dir_sha256(parent_dir)) != recipe["parent_sha256"]:
        raise ArtifactDigestError(
            f"parent version {recipe['parent_version']}: SHA-256 {actual} is not the recorded {recipe['parent_sha256']}"
        )
    out_dir.mkdir(parents=True)
    # The edit state last: computing its statistics again needs the rebuilt weights and tokenizer.
    for rel, entry in sorted(recipe["files"].items(), key=lambda item: "state" in item[1]):
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if "pieces" in entry:
            _join(entry["pieces"], parent_dir / rel, stored_dir / DELTA_DIR / rel, target)
        else:
            _replay_state(entry, parent_dir, stored_dir, target, statistics_dir, out_dir)
        if (actual := file_sha256(target)) != entry["sha256"]:
            raise ArtifactDigestError(f"{rel}: rebuilt with SHA-256 {actual}, not the registered {entry['sha256']}")
    if (actual := model_dir_sha256(out_dir)) != recipe["model_sha256"]:
        raise ArtifactDigestError(f"rebuilt directory: SHA-256 {actual} is not the registered {recipe['model_sha256']}")
    return out_dir


# --- byte pieces -------------------------------------------------------------------------------------


def _pieces(path: Path, parent: Path | None) -> tuple[list[Piece], list[bytes]]:
    """How ``path`` is made of the parent's bytes and new ones; the new bytes in order."""
    data = path.read_bytes()
    if parent is None:
        return [("delta", 0, len(data))], [data]
    old = parent.read_bytes()
    if path.suffix == ".safetensors" and (cut := _tensor_pieces(data, old)) is not None:
        return cut
    # Anything else: the common start and end are the parent's, the middle is new.
    limit = min(len(data), len(old))
    start = next((i for i in range(limit) if data[i] != old[i]), limit)
    end = 0
    while end < limit - start and data[len(data) - 1 - end] == old[len(old) - 1 - end]:
        end += 1
    middle = data[start : len(data) - end]
    pieces = [("parent", 0, start), ("delta", 0, len(middle)), ("parent", len(old) - end, end)]
    return [p for p in pieces if p[2] > 0], [middle]


def _tensor_pieces(data: bytes, old: bytes) -> tuple[list[Piece], list[bytes]] | None:
    """Pieces cut at tensor boundaries, or None when either file's layout is not a plain safetensors one."""
    new_start, new_header = _header(data)
    old_start, old_header = _header(old)
    if new_header is None or old_header is None:
        return None
    ranges = sorted(
        (v["data_offsets"][0], v["data_offsets"][1], k) for k, v in new_header.items() if k != "__metadata__"
    )
    if any(a != b for (_, a, _), (b, _, _) in zip(ranges, ranges[1:])) or new_start + (
        ranges[-1][1] if ranges else 0
    ) != len(data):
        return None  # gaps or trailing bytes: not a layout the pieces below reproduce
    pieces: list[Piece] = []
    chunks: list[bytes] = [data[:new_start]]
    offset = new_start
    pieces.append(("delta", 0, new_start))  # the header: small, and it changes with any shape
    for begin, end, key in ranges:
        new = data[new_start + begin : new_start + end]
        meta = old_header.get(key)
        parent_range = None
        if meta is not None and meta["dtype"] == new_header[key]["dtype"]:
            a, b = meta["data_offsets"]
            parent_range = (old_start + a, old_start + b)
        kept = 0
        if parent_range is not None:
            length = parent_range[1] - parent_range[0]
            if length <= len(new) and old[parent_range[0] : parent_range[1]] == new[:length]:
                kept = length  # the same tensor, or the same rows with new ones appended
        if kept:
            pieces.append(("parent", parent_range[0], kept))
        if kept < len(new):
            pieces.append(("delta", offset, len(new) - kept))
            chunks.append(new[kept:])
            offset += len(new) - kept
    return _merge(pieces), chunks


def _header(data: bytes) -> tuple[int, dict | None]:
    if len(data) < 8:
        return 0, None
    (size,) = struct.unpack("<Q", data[:8])
    try:
        return 8 + size, json.loads(data[8 : 8 + size])
    except ValueError:
        return 0, None


def _merge(pieces: list[Piece]) -> list[Piece]:
    """Joins pieces that continue each other (a run of unchanged tensors is one range)."""
    out: list[Piece] = []
    for source, start, length in pieces:
        if out and out[-1][0] == source and out[-1][1] + out[-1][2] == start:
            out[-1] = (source, out[-1][1], out[-1][2] + length)
        else:
            out.append((source, start, length))
    return out


def _join(pieces: list, parent: Path, blob: Path, target: Path) -> None:
    """Writes ``target`` from its pieces, reading the parent's file and the stored bytes by range."""
    handles = {}
    try:
        with target.open("wb") as out:
            for source, start, length in pieces:
                path = parent if source == "parent" else blob
                if path not in handles:
                    handles[path] = path.open("rb")
                fh = handles[path]
                fh.seek(start)
                remaining = length
                while remaining:
                    chunk = fh.read(min(remaining, 1 << 24))
                    if not chunk:
                        raise ArtifactDigestError(f"{path.name}: shorter than its recipe says ({start}+{length} bytes)")
                    out.write(chunk)
                    remaining -= len(chunk)
    finally:
        for fh in handles.values():
            fh.close()


# --- the edit state ----------------------------------------------------------------------------------


def _tensor_sha256(tensor) -> str:
    return hashlib.sha256(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def _pack_state(
    path: Path, parent_dir: Path, out_dir: Path, key_blocks: Path, statistics_dir: Path | None
) -> dict | None:
    """The edit state as the keys of this version's requests plus where its preserved statistics come
    from; None when the replay does not give the file's exact bytes."""
    _, meta = load_key_blocks(key_blocks)
    cache_key = meta.get("preserved_cache_key")
    state = load_state(path)
    parent_file = parent_dir / STATE_FILE
    parent = load_state(parent_file) if parent_file.is_file() else EditState()
    if parent.preserved and all(
        layer in parent.preserved and torch.equal(parent.preserved[layer], t) for layer, t in state.preserved.items()
    ):
        source: dict = {"from": "parent"}
    elif cache_key and statistics_dir is not None and (stats := _statistics(statistics_dir, cache_key)) is not None:
        if not all(layer in stats and torch.equal(stats[layer], t) for layer, t in state.preserved.items()):
            return None
        source = {
            "from": "statistics",
            "cache_key": cache_key,
            "sha256": {str(layer): _tensor_sha256(t) for layer, t in state.preserved.items()},
            "settings": meta.get("statistics"),  # to compute them again where the cache lacks them
        }
    else:
        return None
    entry = {"state": {"key_blocks": KEY_BLOCKS, "preserved": source, "layers": sorted(state.preserved)}}
    shutil.copyfile(key_blocks, out_dir / KEY_BLOCKS)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            _replay_state(entry, parent_dir, out_dir, Path(tmp) / STATE_FILE, statistics_dir, path.parent)
        except (OSError, ValueError, KeyError):
            (out_dir / KEY_BLOCKS).unlink()
            return None
        if (Path(tmp) / STATE_FILE).read_bytes() != path.read_bytes():
            (out_dir / KEY_BLOCKS).unlink()
            return None
    return entry


def _replay_state(
    entry: dict, parent_dir: Path, stored_dir: Path, target: Path, statistics_dir: Path | None, result_dir: Path
) -> None:
    """Writes the edit state: the parent's ``C_prev`` plus each stored request's `key_block`, and the
    preserved statistics from the parent's state or the statistics cache, computed again on the parent
    with the result's token when the cache lacks them (checked by SHA-256). ``result_dir`` holds the
    result's other files (weights, tokenizer)."""
    spec = entry["state"]
    factors, _ = load_key_blocks(stored_dir / spec["key_blocks"])
    parent_file = parent_dir / STATE_FILE
    parent = load_state(parent_file) if parent_file.is_file() else EditState()
    source, layers = spec["preserved"], [int(layer) for layer in spec["layers"]]
    if source["from"] == "parent":
        preserved = parent.preserved
    else:
        preserved = _statistics(statistics_dir, source["cache_key"]) if statistics_dir is not None else None
        if preserved is None:
            preserved = _recompute_statistics(source, parent_dir, result_dir, statistics_dir)
        for layer in layers:
            if (actual := _tensor_sha256(preserved[layer])) != source["sha256"][str(layer)]:
                raise ArtifactDigestError(
                    f"covariance/{source['cache_key']}.safetensors: preserved.{layer} has SHA-256 {actual}, "
                    f"not the registered {source['sha256'][str(layer)]}"
                )
    previous = parent.previous_keys
    for block in factors:
        previous = accumulate(previous, block)
    state = EditState(
        previous_keys=previous,
        preserved={layer: preserved[layer] for layer in layers},
        num_requests=parent.num_requests + len(factors),
    )
    save_state(state, target)


def _recompute_statistics(source: dict, parent_dir: Path, result_dir: Path, statistics_dir: Path | None) -> dict:
    """The first edit's preserved statistics, computed again as the erase stage computed them (on the
    parent with the unlearning token installed) and left in the statistics cache."""
    from unierase.stages.statistics import first_edit_statistics

    if not source.get("settings") or statistics_dir is None:
        raise FileNotFoundError(
            f"the edit state needs the preserved-key statistics {source['cache_key']}, not in the statistics cache "
            f"{statistics_dir}/covariance, and the version does not record how they were computed"
        )
    logger.info("preserved-key statistics %s not cached: computing them on the parent", source["cache_key"])
    preserved, key = first_edit_statistics(parent_dir, result_dir, source["settings"], statistics_dir)
    if key != source["cache_key"]:
        raise FileNotFoundError(
            f"the preserved-key statistics computed here have key {key}, not the registered {source['cache_key']}: "
            "the corpus or the question set differs from the machine that erased (covariance settings of the run)"
        )
    return preserved


def _statistics(statistics_dir: Path, cache_key: str) -> dict | None:
    path = Path(statistics_dir) / "covariance" / f"{cache_key}.safetensors"
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as fh:
        return {int(k.split(".")[1]): fh.get_tensor(k) for k in fh.keys() if k.startswith("preserved.")}
