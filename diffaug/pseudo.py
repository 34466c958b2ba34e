"""Pseudo-labels for unlabelled images: a classifier trained on the labelled images (with classical augmentation)
labels the unlabelled images it is confident about (Lee 2013; FixMatch's confidence threshold). DPT (You et al.
2023) trains its class-conditional generator on such images; `fit(..., pseudo_labels=THRESHOLD)` does the same,
and the evaluation's self-training arm and its generators use the same rule."""

from __future__ import annotations

import time

import numpy as np
import torch

from .checks import is_number
from .data import ImageData
from .errors import DataError
from .evaluation.classifier import confident, fit_classifier
from .evaluation.config import EvalConfig
from .evaluation.policies import AUTO, FOLDS, Policy, select

THRESHOLD = EvalConfig.pseudo_label_threshold   # one default for fit and the evaluation (its measurement there)


def pseudo_label(data: ImageData, unlabeled: torch.Tensor, threshold: float = THRESHOLD, policy: str | None = None,
                 seed: int = 0, device="cpu") -> tuple[ImageData, dict]:
    """The unlabelled images a classifier trained on `data` labels with confidence >= `threshold`, as ImageData
    with those labels, and a record of how they were made.

    The classifier is the evaluation's (SmallCNN, its steps for len(data) images, batch 128); `policy` is its
    classical augmentation, by name (e.g. "trivialaugment(m=0.5)"); None or "auto" picks it from the evaluation's
    menu by cross-validation within `data` (a few dozen small fits)."""
    if not (is_number(threshold) and 0 < threshold <= 1):
        raise DataError(f"the pseudo-label threshold must lie in (0, 1], got {threshold!r}")
    t0 = time.perf_counter()
    cfg = EvalConfig(per_class=(0,))
    steps = cfg.steps_for(len(data))
    choice = None
    if policy in (None, AUTO):
        if min(data.class_counts()) < FOLDS:
            raise DataError(f"choosing the pseudo-labelling classifier's augmentation by {FOLDS}-fold cross-validation "
                            f"needs {FOLDS} labelled images per class (the fewest has {min(data.class_counts())}); "
                            "name a policy instead, e.g. 'trivialaugment(m=0.5)'")
        choice = select(data, 0, steps, cfg.batch_size, False, device)
        policy = choice["winner"]
    rule = Policy.parse(policy)
    model = fit_classifier(data, rule.build(data.size), (seed, seed + 1), steps, cfg.batch_size, device)
    keep, labels = confident(model, unlabeled, threshold, device)
    kept = ImageData(unlabeled[keep], labels[keep], data.class_names)
    info = {"threshold": threshold, "policy": rule.label, "kept": int(keep.sum()), "of": len(unlabeled),
            "per_class": np.bincount(labels[keep].numpy(), minlength=data.num_classes).tolist(),
            "classifier_steps": steps, "seconds": round(time.perf_counter() - t0, 1)}
    if choice is not None:
        info["policy_selection"] = {"mean": choice["mean"], "rule": choice["rule"]}
    return kept, info
