"""Per-image noise: every image's random numbers come from its own stream, keyed by (seed, stream, index, copy).

As EDM's StackedRandomGenerator does, each image gets its own `torch.Generator`, so an image's noise (the start
and, for stochastic samplers, every step's) does not depend on the batch it is drawn in, on how the work is
sharded, or on how many processes share it. Pure: no network, no I/O.
"""

from __future__ import annotations

import hashlib

import torch


def image_seed(seed: int, stream: str, index: int, copy: int = 0) -> int:
    """The seed of image `index` (its `copy`-th draw) in `stream` ("sample", "perturb", ...) of a job seeded `seed`.

    A hash, not arithmetic: no two (seed, stream, index, copy) keys share a stream by a linear coincidence."""
    key = f"{int(seed)}/{stream}/{int(index)}/{int(copy)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1   # < 2**63


class ImageNoise:
    """One CPU generator per image (CPU: the same numbers on every device); `randn_like(x)` draws x[i]'s slice
    from generator i and moves the stack to x's device."""

    def __init__(self, seeds):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    @classmethod
    def for_images(cls, seed: int, stream: str, indices, copy: int = 0) -> "ImageNoise":
        return cls(image_seed(seed, stream, i, copy) for i in indices)

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, shape, device=None, dtype=torch.float32) -> torch.Tensor:
        """(len(self), *shape) standard normal numbers, row i from generator i."""
        out = torch.stack([torch.randn(tuple(shape), generator=g, dtype=dtype) for g in self.generators])
        return out.to(device) if device is not None else out

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) != len(self):
            raise ValueError(f"{len(self)} per-image generators cannot draw noise for a batch of {len(x)}")
        return self.randn(x.shape[1:], x.device, x.dtype)
