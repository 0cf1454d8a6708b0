"""Cutting work into shards and putting the results back together: the pure half of the parallel runs.

Both ways of running shards (one after another in the flow's process, or as tasks on a Ray cluster)
use these functions, so the two differ only in who runs each shard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ItemShard:
    """Items ``start:stop`` of split ``split`` (in the split's order)."""

    split: str
    start: int
    stop: int

    @property
    def name(self) -> str:
        """A file-name-safe label, unique within one evaluation."""
        return f"{self.split}-{self.start:06d}-{self.stop:06d}"


def plan_item_shards(sizes: Mapping[str, int], chunk_size: int) -> list[ItemShard]:
    """Every split cut into runs of at most ``chunk_size`` items, in split order, then item order.

    Raises:
        ValueError: A chunk size below 1.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk size must be at least 1, got {chunk_size}")
    return [
        ItemShard(split, start, min(start + chunk_size, size))
        for split, size in sizes.items()
        for start in range(0, size, chunk_size)
    ]


def merge_item_shards(
    sizes: Mapping[str, int], shards: Sequence[ItemShard], rows: Sequence[list[dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """Split name -> its rows, concatenated in item order whatever order the shards finished in.

    Raises:
        ValueError: The shards do not cover every split exactly once, or a shard returned a number of rows
            other than its length.
    """
    by_split: dict[str, list[tuple[ItemShard, list[dict[str, Any]]]]] = {name: [] for name in sizes}
    for shard, shard_rows in zip(shards, rows, strict=True):
        if len(shard_rows) != shard.stop - shard.start:
            raise ValueError(f"shard {shard.name} returned {len(shard_rows)} rows for {shard.stop - shard.start} items")
        if shard.split not in by_split:
            raise ValueError(f"shard {shard.name} is of an unknown split")
        by_split[shard.split].append((shard, shard_rows))
    merged = {}
    for name, parts in by_split.items():
        parts.sort(key=lambda part: part[0].start)
        covered = 0
        for shard, _ in parts:
            if shard.start != covered:
                raise ValueError(f"split {name!r}: items {covered}:{shard.start} are missing or doubled")
            covered = shard.stop
        if covered != sizes[name]:
            raise ValueError(f"split {name!r}: {covered} of {sizes[name]} items evaluated")
        merged[name] = [row for _, shard_rows in parts for row in shard_rows]
    return merged


def plan_ranges(total: int, parts: int, align: int = 1) -> list[tuple[int, int]]:
    """``range(total)`` cut into at most ``parts`` contiguous ranges of near-equal length, each starting at a
    multiple of ``align`` (the batch size: a shard then forms the same batches as one pass over everything).

    Raises:
        ValueError: ``parts`` or ``align`` below 1.
    """
    if parts < 1 or align < 1:
        raise ValueError(f"parts and align must be at least 1, got {parts} and {align}")
    blocks = -(-total // align)  # whole batches
    per = -(-blocks // parts) if blocks else 0
    ranges = [(b * align, min((b + per) * align, total)) for b in range(0, blocks, per or 1)]
    return ranges
