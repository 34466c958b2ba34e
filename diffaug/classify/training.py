"""Training the downstream classifier: the batches an arm trains on, the short one-cycle loop every arm, the
policy selection and pseudo-labelling share (supervised here; semi.py adds self-training and FixMatch on the same
loop), its budget in optimizer steps, and prediction.

Ideas from fast small-data training (e.g. Keller Jordan's CIFAR-10 speedruns): BatchNorm, label smoothing,
SGD with Nesterov momentum and a one-cycle LR, augmentation applied to whole batches on the device.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ImageData
from ..diffusion.step import to_unit
from ..errors import DataError
from .batched import BatchAugment
from .classical import augment_batch
from .networks import Factory, default_classifier


BatchFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def random_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int = 0) -> BatchFn:
    """A `next_batch` for train_classifier: `batch_size` rows drawn at random (with replacement), seeded."""
    g = torch.Generator().manual_seed(seed)

    def next_batch(step):
        idx = torch.randint(len(images), (batch_size,), generator=g)
        return images[idx], labels[idx]
    return next_batch


def mixed_batches(real: ImageData, pool, share: float, batch_size: int, aug, seeds: tuple[int, int], device,
                  augment_synthetic: bool = True, balanced: bool = False):
    """Batch maker for one arm: (1 - share) real images and share rows of `pool` (synthetic images, or for a
    dose control the real images again), all on `device`, plus the classical augmentation `aug` (batched: one
    call per batch; per-image: the CPU reference) on the real rows, and on the pool's rows too when
    `augment_synthetic`. seeds: (batch indices, augmentation draws), two streams, so the arms stay paired.
    `balanced`: the real rows are drawn class-balanced (each class equally often, then an image of it), the
    re-sampling a practitioner runs on long-tailed data."""
    g = torch.Generator().manual_seed(seeds[0])
    g_aug = torch.Generator().manual_seed(seeds[1])
    n_syn = int(round(share * batch_size)) if pool is not None else 0
    if n_syn and len(pool[0]) == 0:
        raise DataError(f"the batches ask for {n_syn} generated rows each but the pool they come from is empty")
    n_aug = batch_size if augment_synthetic else batch_size - n_syn
    images, labels = real.images.to(device), real.labels.to(device)
    weights = (1.0 / torch.bincount(real.labels).float())[real.labels] if balanced else None

    def next_batch(step):
        if weights is None:
            idx = torch.randint(len(images), (batch_size - n_syn,), generator=g).to(device)
        else:
            idx = torch.multinomial(weights, batch_size - n_syn, replacement=True, generator=g).to(device)
        x, y = images[idx], labels[idx]
        if n_syn:
            j = torch.randint(len(pool[0]), (n_syn,), generator=g).to(device)
            x, y = torch.cat([x, pool[0][j]]), torch.cat([y, pool[1][j]])
        if aug is not None and n_aug:
            head = aug(x[:n_aug], g_aug) if isinstance(aug, BatchAugment) else augment_batch(aug, x[:n_aug].cpu())
            x = torch.cat([head.to(device), x[n_aug:]])
        return x, y
    return next_batch


# Optimizer steps when not given: 50 epochs of the rows an arm learns from, at least 500 and at most 5000 (~11 epochs
# of Fashion-MNIST's 60k at batch 128). At 10 and 50 images per class the floor sets every arm's cost; half of it was
# tried on validation splits (benchmarks/results/arm_budget_*.md): no change on digits, but on Fashion-MNIST the
# tuned classical arm lost 1.08 points [-1.88, -0.28] at 50/class and 0.74 [-1.73, +0.25] at 10/class at 250 steps.
STEPS_PER_EPOCHS, STEPS_MIN, STEPS_MAX = 50, 500, 5000


def steps_for(n_rows: int, batch_size: int) -> int:
    """Classifier optimizer steps for n_rows training rows: STEPS_PER_EPOCHS epochs, clipped to [STEPS_MIN,
    STEPS_MAX]. With unlabelled images the rows are the labelled and the unlabelled ones together, so a
    semi-supervised learner is not starved of passes over its pool."""
    return int(min(STEPS_MAX, max(STEPS_MIN, round(STEPS_PER_EPOCHS * n_rows / batch_size))))


def fit_classifier(real: ImageData, aug, seeds: tuple[int, int], steps: int, batch_size: int, device, *,
                   pool=None, share: float = 0.0, augment_synthetic: bool = True, factory: Factory | None = None,
                   balanced: bool = False, logit_adjustment: float = 0.0) -> nn.Module:
    """A fresh classifier trained on `real` (plus `pool`'s rows at `share`) with the classical augmentation `aug`:
    mixed_batches and train_classifier with one seed pair (weights and batch indices from seeds[0], augmentation
    draws from seeds[1]). The one way the evaluation's supervised arms, its policy selection and pseudo-labelling
    train. `balanced`: class-balanced re-sampling of the real rows; `logit_adjustment`: tau of the logit-adjusted
    loss against the label prior of the batches drawn (`batch_prior`), 0 for plain cross-entropy."""
    batches = mixed_batches(real, pool, share, batch_size, aug, seeds, device, augment_synthetic, balanced)
    offset = None
    if logit_adjustment:
        offset = logit_adjustment * batch_prior(real, pool, share, batch_size, balanced).log()
    return train_classifier(batches, real.channels, real.num_classes, steps=steps, seed=seeds[0], device=device,
                            factory=factory, logit_offset=offset)


def batch_prior(real: ImageData, pool, share: float, batch_size: int, balanced: bool = False) -> torch.Tensor:
    """The label distribution of mixed_batches' rows in expectation: the real rows' class shares (uniform when
    `balanced`) at 1 - share, the pool's at share. The prior a logit-adjusted loss corrects for."""
    c = real.num_classes
    real_prior = torch.full((c,), 1.0 / c) if balanced else torch.bincount(real.labels, minlength=c).float()
    real_prior = real_prior / real_prior.sum()
    n_syn = int(round(share * batch_size)) if pool is not None else 0
    if not n_syn:
        return real_prior
    pool_prior = torch.bincount(pool[1].cpu(), minlength=c).float()
    w = n_syn / batch_size
    return (1 - w) * real_prior + w * pool_prior / pool_prior.sum()


def new_classifier(factory: Factory | None, in_channels: int, num_classes: int, seed: int, device) -> nn.Module:
    """A freshly initialised network from `factory` (SmallCNN by default), weights seeded: every arm of one seed
    starts from the same weights."""
    torch.manual_seed(seed)
    model = (factory or default_classifier)(in_channels, num_classes).to(device)
    # channels_last: oneDNN's and cuDNN's convolutions are faster in NHWC (SmallCNN on 2 CPU cores, batch 128:
    # 1.5x per step at 8x8, 1.3x at 28x28); a model without 4-D weights is unchanged by it
    return model.to(memory_format=torch.channels_last)


# bf16 on the CPU, for training only, when asked: where the CPU multiplies bf16 matrices in hardware (Intel AMX tiles)
# a SmallCNN step at 28x28 on one thread, batch 128, is 2.5x faster at width 64 (0.378 -> 0.150 s), 2.0x at 32, 1.8x
# at 16, and 1.1-1.3x at 8x8 (2-core Xeon with AMX, 2026-12-05, benchmarks/results/precision_step.md); without AMX
# bf16 is emulated and slower. The
# weights, the optimizer and the loss stay float32 (autocast), predictions are float32. Side by side on validation
# splits (benchmarks/results/precision_*.md) the arms' accuracies and gains did not move, but two of eight regime
# choices did (choices at a tie: digits' 10/class policy, Fashion-MNIST's 50/class network), so float32 stays the
# default: a user opts in with DIFFAUG_CPU_BF16=1 (bf16 on any CPU) or =auto (bf16 where the CPU has AMX).
CPU_BF16_ENV = "DIFFAUG_CPU_BF16"
CPU_BF16_SETTINGS = ("0", "1", "auto")


def bf16_training(device) -> bool:
    """Whether classifiers train under bf16 autocast on `device`: on the CPU when `DIFFAUG_CPU_BF16` is 1, or auto
    and the CPU has AMX tiles; never on CUDA (float32 as before: not measured there). Unset or 0: float32."""
    if torch.device(device).type != "cpu":
        return False
    setting = os.environ.get(CPU_BF16_ENV, "").strip().lower() or "0"
    if setting not in CPU_BF16_SETTINGS:
        raise DataError(f"{CPU_BF16_ENV} must be 0 (float32, the default), 1 (bf16) or auto (bf16 where the CPU "
                        f"has AMX), got {setting!r}")
    return setting == "1" or (setting == "auto" and _cpu_has_amx())


@functools.cache
def _cpu_has_amx() -> bool:
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def training_precision(device) -> str:
    """'bf16' or 'float32': what classifiers train in on `device` (recorded with every evaluation unit)."""
    return "bf16" if bf16_training(device) else "float32"


def training_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The training forward pass: under bf16 autocast where `bf16_training` says so; float32 logits out."""
    use = bf16_training(x.device)
    with torch.autocast("cpu", dtype=torch.bfloat16) if use else contextlib.nullcontext():
        return model(x).float()


def as_input(x: torch.Tensor, device) -> torch.Tensor:
    """uint8 images as the network's input: [-1, 1] floats on the device, channels_last."""
    x = to_unit(x.to(device, non_blocking=True))
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def optimize(model: nn.Module, loss_at: Callable[[int], torch.Tensor], steps: int, lr: float = 0.05,
             weight_decay: float = 5e-4) -> nn.Module:
    """Exactly `steps` SGD steps (Nesterov, one-cycle LR) on `loss_at(step)`; the count of steps taken is kept on
    the model as `optimizer_steps`, so a caller can check what ran rather than what was asked."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    # One-cycle: linear warm-up over the first 20% of steps, then linear decay to zero.
    warm = max(1, steps // 5)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm)))
    model.train()
    taken = 0
    for step in range(steps):
        loss = loss_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        taken += 1
    model.optimizer_steps = taken
    return model.eval()


def train_classifier(next_batch: BatchFn, in_channels: int, num_classes: int, *, steps: int = 800,
                     lr: float = 0.05, weight_decay: float = 5e-4, label_smoothing: float = 0.1, seed: int = 0,
                     device="cpu", factory: Factory | None = None,
                     logit_offset: torch.Tensor | None = None) -> nn.Module:
    """Train a fresh classifier for exactly `steps` optimizer steps on batches from `next_batch(step)`.

    `next_batch` returns (uint8 images (B,C,H,W), labels (B,)); images are scaled to [-1, 1] on the device.
    `logit_offset` (num_classes,): added to the logits in the training loss only, as the logit-adjusted loss
    (Menon et al., ICLR 2021) adds tau * log(prior): predictions use the plain logits.
    """
    model = new_classifier(factory, in_channels, num_classes, seed, device)
    offset = logit_offset.to(device) if logit_offset is not None else 0.0

    def loss_at(step):
        x, y = next_batch(step)
        logits = training_logits(model, as_input(x, device))
        return F.cross_entropy(logits + offset, y.to(device, non_blocking=True), label_smoothing=label_smoothing)
    return optimize(model, loss_at, steps, lr, weight_decay)


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, device="cpu", batch_size: int = 1000) -> torch.Tensor:
    """Class probabilities (N, classes) for uint8 images."""
    out = [F.softmax(model(to_unit(images[i:i + batch_size].to(device))), dim=1).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, device="cpu", batch_size: int = 1000) -> torch.Tensor:
    """Penultimate features (N, D) of uint8 images; needs a model with an `embed` method (e.g. SmallCNN)."""
    return torch.cat([model.embed(to_unit(images[i:i + batch_size].to(device))).cpu()
                      for i in range(0, len(images), batch_size)])


def confident(model: torch.nn.Module, images: torch.Tensor, threshold: float, device) -> tuple[torch.Tensor, ...]:
    """(which images to keep, their predicted labels) for uint8 images. Keeping none, or none of some class, is a
    valid outcome (a high threshold on a label-smoothed classifier): callers report it."""
    confidence, labels = predict_proba(model, images, device).max(1)
    return confidence >= threshold, labels


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device="cpu") -> float:
    return (predict_proba(model, images, device).argmax(1) == labels.cpu()).float().mean().item()


def class_recalls(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                  device="cpu") -> list[float]:
    """Per class, the share of its images the model labels right; their mean is balanced accuracy."""
    right = predict_proba(model, images, device).argmax(1) == labels.cpu()
    return [right[labels.cpu() == c].float().mean().item() for c in range(num_classes)]
