"""Adapters: diffaug generators inside torchvision, albumentations and Hugging Face datasets pipelines.

`bank` and `rebalance` import eagerly; `torchvision` on first use of its names (torchvision is a core dependency,
but importing it costs a second that a command which never augments should not pay); `albumentations` and `hf`
import on first use too, since their packages are extras.
"""

from .bank import SampleBank
from .rebalance import Rebalance, rebalance

TORCHVISION = ("AugmentedDataset", "DiffusionAugment", "DiffusionBatchAugment", "augment_dataset")

__all__ = ["SampleBank", "DiffusionAugment", "DiffusionBatchAugment", "AugmentedDataset", "augment_dataset",
           "Rebalance", "rebalance"]


def __getattr__(name):
    if name in TORCHVISION:
        from . import torchvision
        return getattr(torchvision, name)
    raise AttributeError(f"module 'diffaug.adapters' has no attribute {name!r}")
