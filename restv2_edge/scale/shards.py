"""Deterministic shards of a sorted image list: the unit of work of a distributed eval.

A shard is a contiguous slice of the (class-sorted) labelled image list; its id names that
slice (``s000256-000512``), so the same data and shard size always give the same ids on any
machine, and results can be merged by id: a shard that comes back twice counts once.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_SHARD_SIZE = 256


@dataclass(frozen=True)
class Shard:
    """Items ``start:stop`` of the image list; ``size_limit`` is the shard size used."""

    start: int
    stop: int
    items: tuple[tuple[str, int], ...]
    size_limit: int

    @property
    def id(self) -> str:
        return f"s{self.start:06d}-{self.stop:06d}"

    def __len__(self) -> int:
        return self.stop - self.start


def make_shards(
    items: list[tuple[str, int]], shard_size: int = DEFAULT_SHARD_SIZE, batch_size: int = 1
) -> list[Shard]:
    """Cut ``items`` into shards of ``shard_size`` (rounded up to a multiple of
    ``batch_size``, so that a shard of readable images is batched as an unsharded run)."""
    if shard_size < 1 or batch_size < 1:
        raise ValueError("shard_size and batch_size must be positive")
    size = -(-shard_size // batch_size) * batch_size
    return [
        Shard(start, min(start + size, len(items)), tuple(items[start : start + size]), size)
        for start in range(0, len(items), size)
    ]
