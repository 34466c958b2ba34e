"""Long-tailed classes in a training loop: a sampler that draws every class equally often and the per-class
probabilities that make the short classes' extra draws synthetic.

    plan = rebalance(train_labels)
    loader = DataLoader(ds, batch_size=128, sampler=plan.sampler(), ...)
    tf = DiffusionAugment(bank, class_p=plan.class_p)   # or AlbumentationsDiffusionAugment(..., class_p=...)

Class c, holding n_c images, gets gap_c = round(fill * (head - n_c)) extra draws per epoch (head: the largest
class's count): the sampler draws its images at (n_c + gap_c) / n_c times the head's rate and the transform
replaces each draw of it with probability gap_c / (n_c + gap_c). Its real images are then seen as often as the
head's, and the extra draws are new images: the evaluation's `classical+rebalance` arm, in a DataLoader.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..checks import is_number
from ..data import rebalance_gaps
from ..errors import DataError


@dataclass(frozen=True)
class Rebalance:
    """The per-class counts of a labelled training set and how to rebalance it (see the module docstring)."""

    labels: tuple[int, ...]
    counts: tuple[int, ...]
    fill: float = 1.0

    @property
    def gaps(self) -> list[int]:
        """Extra draws per class and epoch: `fill` of each class's gap to the largest class."""
        return rebalance_gaps(self.counts, self.fill)

    @property
    def class_p(self) -> list[float]:
        """Per class, the share of its draws to replace by synthetic images: gap_c / (n_c + gap_c)."""
        return [g / (n + g) if n + g else 0.0 for n, g in zip(self.counts, self.gaps)]

    def weights(self) -> torch.Tensor:
        """Per training row, its sampling weight: (n_c + gap_c) / n_c for a row of class c."""
        per_class = torch.tensor([(n + g) / n if n else 0.0 for n, g in zip(self.counts, self.gaps)],
                                 dtype=torch.double)
        return per_class[torch.tensor(self.labels, dtype=torch.long)]

    def sampler(self, num_samples: int | None = None, generator: torch.Generator | None = None):
        """A WeightedRandomSampler over the rows (with replacement) drawing every class at its filled rate;
        `num_samples` per epoch default to the filled set's size, sum(n_c + gap_c)."""
        from torch.utils.data import WeightedRandomSampler

        n = sum(self.counts) + sum(self.gaps) if num_samples is None else num_samples
        return WeightedRandomSampler(self.weights(), n, replacement=True, generator=generator)


def rebalance(labels, fill: float = 1.0, num_classes: int | None = None) -> Rebalance:
    """The rebalancing plan of a training set's labels (a sequence or tensor of class indices, e.g. an
    ImageData's `labels` or a torchvision dataset's `targets`). `fill` in (0, 1]: the share of each class's gap
    to the largest class that synthetic draws fill; `num_classes`: when a class may hold no image."""
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.ndim != 1 or len(y) == 0 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise DataError("rebalance takes the training labels: a non-empty sequence of class indices >= 0")
    if not (is_number(fill) and 0 < fill <= 1):
        raise DataError(f"fill must lie in (0, 1], got {fill!r}")
    counts = np.bincount(y, minlength=num_classes or 0)
    if num_classes is not None and len(counts) > num_classes:
        raise DataError(f"a label {int(y.max())} lies beyond num_classes={num_classes}")
    return Rebalance(tuple(int(v) for v in y), tuple(int(c) for c in counts), float(fill))
