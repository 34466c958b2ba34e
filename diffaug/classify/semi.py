"""Semi-supervised learners on the classifier's loop: iterated self-training (Lee 2013; relabelling with the
student, as Noisy Student does) and FixMatch (Sohn et al. 2020), both batched on the device. They are the
opponents a generator must beat when unlabelled images are at hand, and what the stacked arms (DPT, You et al.
2023) build on: `pool` mixes generated rows into the labelled part of each batch, as for every mixing arm."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ImageData
from .batched import BatchAugment
from .networks import Factory
from .training import as_input, confident, fit_classifier, mixed_batches, new_classifier, optimize, training_logits


def with_rows(data: ImageData, images: torch.Tensor, labels: torch.Tensor) -> ImageData:
    """`data` plus extra labelled rows (e.g. pseudo-labels; none of some class is fine, `data` has every class)."""
    return ImageData(torch.cat([data.images, images.cpu()]), torch.cat([data.labels, labels.cpu()]), data.class_names)


def self_train(labelled: ImageData, unlabeled: torch.Tensor, teacher: nn.Module, aug, seeds: tuple[int, int],
               steps: int, batch_size: int, device, *, threshold: float, rounds: int = 1, pool=None,
               share: float = 0.0, augment_synthetic: bool = False, factory: Factory | None = None):
    """Iterated self-training: `rounds` times, the current teacher labels the unlabelled images it gives
    confidence >= `threshold`, and a fresh student trains on the labelled images plus those (all with the
    classical `aug`; `pool` rows at `share` on top, for the stacked arm); the student is the next teacher.
    Returns the last student, its training rows and, per round, how many images it kept."""
    rows, history = labelled, []
    for _ in range(rounds):
        keep, labels = confident(teacher, unlabeled, threshold, device)
        rows = with_rows(labelled, unlabeled[keep], labels[keep])
        history.append({"kept": int(keep.sum())})
        teacher = fit_classifier(rows, aug, seeds, steps, batch_size, device, pool=pool, share=share,
                                 augment_synthetic=augment_synthetic, factory=factory)
    return teacher, rows, history


@dataclass(frozen=True)
class FixMatch:
    """FixMatch's knobs (Sohn et al. 2020): a weakly augmented view (crop) labels each unlabelled image when the
    prediction's confidence is >= `threshold`; the strongly augmented view (`strong`, batched RandAugment) is
    trained toward that label, with weight `weight`; `ratio` unlabelled images per labelled one in every step.
    The paper's supervised loss has no label smoothing (with 0.1, confidence could not pass 0.91)."""

    threshold: float = 0.95
    ratio: int = 7
    weight: float = 1.0
    strong: str = "randaugment"
    label_smoothing: float = 0.0

    def train(self, labelled: ImageData, unlabeled: torch.Tensor, seeds: tuple[int, int], steps: int,
              batch_size: int, device, *, pool=None, share: float = 0.0, factory: Factory | None = None):
        """A fresh classifier trained with FixMatch for exactly `steps` steps; labelled batches come from
        mixed_batches (weak view; `pool` rows at `share`, weak view too), unlabelled ones from their own stream.
        Returns the model and the mean share of unlabelled images that passed the confidence mask."""
        weak = BatchAugment("crop", labelled.size)
        strong = BatchAugment(self.strong, labelled.size, magnitude=1.0)
        labelled_batch = mixed_batches(labelled, pool, share, batch_size, weak, seeds, device, True)
        g = torch.Generator().manual_seed(seeds[0] + 2)   # the unlabelled stream: apart from the labelled one's
        g_aug = torch.Generator().manual_seed(seeds[1] + 2)
        images = unlabeled.to(device)
        model = new_classifier(factory, labelled.channels, labelled.num_classes, seeds[0], device)
        n_u, masked = self.ratio * batch_size, []

        def loss_at(step):
            x, y = labelled_batch(step)
            u = images[torch.randint(len(images), (n_u,), generator=g).to(device)]
            rows = torch.cat([x, weak(u, g_aug), strong(u, g_aug)])   # one BatchNorm batch
            logits = training_logits(model, as_input(rows, device))
            sup = F.cross_entropy(logits[:len(x)], y.to(device), label_smoothing=self.label_smoothing)
            weak_logits, strong_logits = logits[len(x):].chunk(2)
            confidence, target = F.softmax(weak_logits.detach(), dim=1).max(1)
            mask = (confidence >= self.threshold).float()
            masked.append(mask.mean())
            return sup + self.weight * (F.cross_entropy(strong_logits, target, reduction="none") * mask).mean()

        model = optimize(model, loss_at, steps)
        return model, float(torch.stack(masked).mean()) if masked else 0.0
