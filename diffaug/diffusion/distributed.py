"""Data-parallel fitting under `torchrun` (PyTorch DDP): who this process is, and the few collectives the fit needs.

The trainer draws every step's *global* batch (images, label dropout, times, noise) from one generator that all
ranks seed alike, and each rank trains on its slice of it; DDP averages the gradients. So a run on N ranks follows
the same trajectory as one process with the same global batch and seed (up to the order of floating-point sums),
and a checkpoint resumes under any number of ranks.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import DiffaugError

DEFAULT_TIMEOUT_S = 300   # a collective that waits longer than this fails the run instead of hanging


@dataclass(frozen=True)
class Ranks:
    """This process's place in a run: rank `rank` of `world` (local rank `local` on its machine)."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """The rank that writes checkpoints, keeps the EMA and shows progress."""
        return self.rank == 0

    def part(self, n: int) -> slice:
        """This rank's slice of a global batch of n (n divisible by world)."""
        per = n // self.world
        return slice(self.rank * per, (self.rank + 1) * per)


SINGLE = Ranks()


def launched() -> bool:
    """True inside a multi-process launch (torchrun sets WORLD_SIZE, RANK and LOCAL_RANK)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def from_env() -> Ranks:
    """The ranks torchrun describes in the environment (one process when it describes none)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    try:
        return Ranks(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                     int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError:
        raise DiffaugError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (torchrun sets them)") from None


def rank_device(device, ranks: Ranks):
    """Under torchrun on CUDA, each rank takes the GPU of its local rank; otherwise `device` as given."""
    if ranks.active and str(device) in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", ranks.local % torch.cuda.device_count())
    return device


def setup(distributed: bool | None, device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S):
    """Join the process group when launched by torchrun (or `distributed=True`); returns (ranks, device, owned).

    NCCL on CUDA (each rank takes the GPU of its local rank), gloo on the CPU. `owned` is True when this call
    created the group, so the caller tears it down again; a group the user already made is joined as it is.
    """
    if distributed is None:
        distributed = launched() or (dist.is_available() and dist.is_initialized())
    if not distributed:
        return SINGLE, device, False
    if not dist.is_available():
        raise DiffaugError("this torch build has no torch.distributed; fit in one process")
    if not dist.is_initialized() and "MASTER_ADDR" not in os.environ:
        raise DiffaugError("distributed fitting needs a launcher: run it under torchrun "
                           "(torchrun --nproc-per-node N -m diffaug fit ...)")
    ranks = from_env()
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local)
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": device} if device.type == "cuda" else {}))
        ranks = from_env()
    return ranks, device, owned


def teardown(owned: bool) -> None:
    if owned and dist.is_initialized():
        dist.destroy_process_group()


def mean(x: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The mean of `x` over ranks (x itself in one process)."""
    if not ranks.active:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / ranks.world


def max_value(x: float, ranks: Ranks, device: torch.device) -> float:
    """The largest of the ranks' `x` on every rank (e.g. the slowest rank's clock)."""
    if not ranks.active:
        return x
    t = torch.tensor(float(x), dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def broadcast_module(module: torch.nn.Module, ranks: Ranks) -> None:
    """Give every rank rank 0's parameters and buffers."""
    if ranks.active:
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)
