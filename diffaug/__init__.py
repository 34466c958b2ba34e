"""diffaug: class-conditional diffusion generators as data augmentation, measured honestly."""

__version__ = "0.1.0"

from .data import ImageData, load_data
from .diffusion.trainer import TrainConfig
from .errors import DataError, DiffaugError, GeneratorFileError, MismatchError
from .generator import Generator, fit

__all__ = [
    "__version__", "ImageData", "load_data", "fit", "Generator", "TrainConfig",
    "DiffaugError", "DataError", "GeneratorFileError", "MismatchError",
]
