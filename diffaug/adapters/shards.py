"""How generation work splits into shards and joins again. Every image's noise is keyed by its own index
(diffusion/noise.py), so any split of the rows between shards (ranks, machines, processes) makes exactly the
images one process makes; `write_sharded` is the one orchestration the bank and the HF expansion share."""

from __future__ import annotations

import time
from pathlib import Path

from ..checks import whole_number
from ..diffusion.distributed import from_env
from ..errors import DataError
from ..io import atomic_path, check_writable, make_shard


def shard_range(n_chunks: int, num_shards: int, shard_index: int) -> range:
    """The batches shard `shard_index` of `num_shards` makes: a contiguous, near-equal share of n_chunks."""
    if not 0 <= shard_index < num_shards:
        raise DataError(f"shard_index must lie in 0..{num_shards - 1}, got {shard_index}")
    return range(n_chunks * shard_index // num_shards, n_chunks * (shard_index + 1) // num_shards)


def which_shard(num_shards: int | None, shard_index: int | None) -> tuple[int, int]:
    """(num_shards, shard_index) as given, or, when not given, this torchrun rank's (one shard per rank)."""
    if num_shards is None:
        ranks = from_env()
        return (ranks.world, ranks.rank) if ranks.active else (1, 0)
    num_shards = whole_number(num_shards, "num_shards", low=1)
    return num_shards, whole_number(shard_index or 0, "shard_index", low=0, high=num_shards - 1)


def write_sharded(out, settings: dict, make_part, join, *, num_shards: int, shard_index: int,
                  overwrite: bool = False) -> bool:
    """Write the folder `out` with `make_part(folder)`, or this shard's part of it; True once `out` is whole.

    One shard: `out` is written atomically. Several: each shard is a part under OUT.parts/ (io.make_shard) and
    `join(part_folders, folder)` writes `out` once all parts are there. Under torchrun rank 0 waits for the
    other ranks' parts and joins, and the other ranks wait for `out`; by hand, the last shard to finish joins."""
    ranks = from_env()
    if num_shards == 1 or ranks.main:   # before any work
        check_writable(out, overwrite)
    if num_shards == 1:
        with atomic_path(out, overwrite=overwrite) as tmp:
            make_part(tmp)
        return True
    joined = make_shard(out, settings, num_shards, shard_index, make_part, join if ranks.main else None,
                        wait=ranks.active, overwrite=overwrite)
    while ranks.active and not Path(out).exists():   # the other ranks return once rank 0 has joined
        time.sleep(1.0)
    return joined or ranks.active
