"""How generation work splits into batches and shards: each batch has its own seed, so any split of the batches
between shards (ranks, machines, processes) makes exactly the images one process makes."""

from __future__ import annotations

from ..errors import DataError


def shard_range(n_chunks: int, num_shards: int, shard_index: int) -> range:
    """The batches shard `shard_index` of `num_shards` makes: a contiguous, near-equal share of n_chunks."""
    if not 0 <= shard_index < num_shards:
        raise DataError(f"shard_index must lie in 0..{num_shards - 1}, got {shard_index}")
    return range(n_chunks * shard_index // num_shards, n_chunks * (shard_index + 1) // num_shards)


def chunk_seed(seed: int, chunk: int) -> int:
    """The seed of batch `chunk` of a job seeded `seed`."""
    return (int(seed) * 1_000_003 + chunk) % (2 ** 63)
