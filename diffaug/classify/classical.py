"""Classical augmentation baselines, chosen by name: the arm diffusion augmentation has to beat."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torchvision.transforms import v2

from ..errors import DataError, require_extra

# Every baseline starts from a random crop with padding (the standard small-image base augmentation;
# no flips by default: they turn digits and text into other symbols) and adds a policy on top.
CLASSICAL = ("crop", "trivialaugment", "randaugment", "autoaugment", "albumentations")


def classical_augment(name: str, size: tuple[int, int], hflip: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """A per-image uint8 (C,H,W) -> uint8 (C,H,W) augmentation; randomness from torch's RNG."""
    h, w = size
    base = [v2.RandomCrop((h, w), padding=max(1, min(h, w) // 8), padding_mode="constant")]
    if hflip:
        base.append(v2.RandomHorizontalFlip())
    if name == "crop":
        return v2.Compose(base)
    if name == "trivialaugment":
        return v2.Compose(base + [v2.TrivialAugmentWide()])
    if name == "randaugment":
        return v2.Compose(base + [v2.RandAugment()])
    if name == "autoaugment":
        return v2.Compose(base + [v2.AutoAugment()])
    if name == "albumentations":
        return _albumentations_preset(base)
    raise DataError(f"unknown classical augmentation {name!r}; choose one of {CLASSICAL}")


def _albumentations_preset(base):
    A = require_extra("albumentations", "albumentations")
    pipe = A.Compose([A.Affine(scale=(0.9, 1.1), rotate=(-12, 12), translate_percent=(-0.08, 0.08), p=0.8),
                      A.RandomBrightnessContrast(0.2, 0.2, p=0.5),
                      A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(0.1, 0.25),
                                      hole_width_range=(0.1, 0.25), p=0.5)])
    crop = v2.Compose(base)

    def apply(x: torch.Tensor) -> torch.Tensor:
        # albumentations draws from its own generator; seed it from torch's so runs stay reproducible.
        pipe.set_random_seed(int(torch.randint(2 ** 31 - 1, ())))
        out = pipe(image=np.ascontiguousarray(crop(x).permute(1, 2, 0).numpy()))["image"]
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))
    return apply


def augment_batch(aug: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """Apply a per-image augmentation to every image of a uint8 batch (each with its own random draw)."""
    return torch.stack([aug(x) for x in images])
