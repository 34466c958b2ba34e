"""Pseudo-labels for unlabelled images: a classifier trained on the labelled images (with classical augmentation)
labels the unlabelled images it is confident about (Lee 2013; FixMatch's confidence threshold). DPT (You et al.
2023) trains its class-conditional generator on such images; `fit(..., pseudo_labels=THRESHOLD)` does the same,
and the evaluation's self-training arm and its generators use the same rule."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..checks import is_number
from ..data import ImageData
from ..errors import DataError
from .policies import AUTO, FOLDS, Policy, select
from .training import confident, fit_classifier, steps_for

# The generator's pseudo-label threshold, one default for fit and the evaluation. The classifier's label smoothing
# (0.1) caps its confidence near 0.91, so 0.9 kept only ~1/3 of digits' unlabelled images; 0.7 keeps ~3/4, 99%
# right, and gave the diffusion arm +1.15 [+0.06, +2.24] over 0.9 on a validation split
# (benchmarks/results/sweep_digits_unlabeled.md)
THRESHOLD = 0.7
BATCH_SIZE = 128


@dataclass(frozen=True)
class PseudoLabels:
    """The unlabelled images a classifier was sure of, with its labels. Unlike ImageData, a class may have none:
    a high threshold can keep no image of a class, which is a result to report, not an error."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def pseudo_label(data: ImageData, unlabeled: torch.Tensor, threshold: float = THRESHOLD, policy: str | None = None,
                 seed: int = 0, device="cpu") -> tuple[PseudoLabels, dict]:
    """The unlabelled images a classifier trained on `data` labels with confidence >= `threshold`, with those
    labels, and a record of how they were made (`per_class` counts, `empty_classes` the classes none was kept of).

    The classifier is the evaluation's (SmallCNN, its steps for len(data) images, batch 128); `policy` is its
    classical augmentation, by name (e.g. "trivialaugment(m=0.5)"); None or "auto" picks it from the evaluation's
    menu by cross-validation within `data` (a few dozen small fits)."""
    if not (is_number(threshold) and 0 < threshold <= 1):
        raise DataError(f"the pseudo-label threshold must lie in (0, 1], got {threshold!r}")
    t0 = time.perf_counter()
    steps = steps_for(len(data), BATCH_SIZE)
    choice = None
    if policy in (None, AUTO):
        if min(data.class_counts()) < FOLDS:
            raise DataError(f"choosing the pseudo-labelling classifier's augmentation by {FOLDS}-fold cross-validation "
                            f"needs {FOLDS} labelled images per class (the fewest has {min(data.class_counts())}); "
                            "name a policy instead, e.g. 'trivialaugment(m=0.5)'")
        choice = select(data, 0, steps, BATCH_SIZE, False, device)
        policy = choice["winner"]
    rule = Policy.parse(policy)
    model = fit_classifier(data, rule.build(data.size), (seed, seed + 1), steps, BATCH_SIZE, device)
    keep, labels = confident(model, unlabeled, threshold, device)
    kept = PseudoLabels(unlabeled[keep], labels[keep])
    per_class = np.bincount(labels[keep].numpy(), minlength=data.num_classes).tolist()
    info = {"threshold": threshold, "policy": rule.label, "kept": int(keep.sum()), "of": len(unlabeled),
            "per_class": per_class, "empty_classes": [n for n, c in zip(data.class_names, per_class) if c == 0],
            "classifier_steps": steps, "seconds": round(time.perf_counter() - t0, 1)}
    if choice is not None:
        info["policy_selection"] = {"mean": choice["mean"], "rule": choice["rule"]}
    return kept, info
