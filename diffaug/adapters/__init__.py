"""Adapters: diffaug generators inside torchvision, albumentations and Hugging Face datasets pipelines.

`torchvision` and `bank` import eagerly (torchvision is a core dependency); `albumentations` and `hf`
import on first use, since their packages are extras.
"""

from .bank import SampleBank
from .rebalance import Rebalance, rebalance
from .torchvision import AugmentedDataset, DiffusionAugment, DiffusionBatchAugment, augment_dataset

__all__ = ["SampleBank", "DiffusionAugment", "DiffusionBatchAugment", "AugmentedDataset", "augment_dataset",
           "Rebalance", "rebalance"]
