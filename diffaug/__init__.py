"""diffaug: class-conditional diffusion generators as data augmentation, measured honestly."""

from ._version import __version__
from .adapters import TORCHVISION, Rebalance, SampleBank, rebalance
from .data import ImageData
from .diffusion.trainer import TrainConfig
from .errors import DataError, DiffaugError, GeneratorFileError, MismatchError
from .fitting import fit
from .generator import Generator
from .loading import load_data

__all__ = [
    "__version__", "ImageData", "load_data", "fit", "Generator", "TrainConfig",
    "DiffusionAugment", "DiffusionBatchAugment", "SampleBank", "augment_dataset", "AugmentedDataset",
    "rebalance", "Rebalance",
    "expand_dataset", "perturb_dataset", "evaluate",
    "DiffaugError", "DataError", "GeneratorFileError", "MismatchError",
]


def __getattr__(name):
    # Extras load on first use: `diffaug.expand_dataset` needs `datasets`, `diffaug.evaluate` the evaluation stack;
    # the torchvision adapter needs torchvision, whose import (1.1 s of a 3.6 s `diffaug` command start on a 2-core
    # Xeon) `fit`, `sample`, `expand` and `info` never use.
    if name in TORCHVISION:
        from . import adapters
        return getattr(adapters, name)
    if name in ("expand_dataset", "perturb_dataset"):
        from . import hf
        return getattr(hf, name)
    if name == "evaluate":
        from .evaluation import evaluate
        return evaluate
    raise AttributeError(f"module 'diffaug' has no attribute {name!r}")
