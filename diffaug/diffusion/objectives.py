"""Training objectives: prediction targets, their conversions, min-SNR weighting, label dropout.

Notation: z = alpha x0 + sigma eps; v = alpha eps - sigma x0 (Salimans & Ho 2022, "Progressive Distillation").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import DiffaugError

from .schedules import alpha_sigma

PREDICTIONS = ("v", "eps", "x0")


def check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise DiffaugError(f"unknown prediction type {prediction!r}; choose one of {PREDICTIONS}")
    return prediction


def _bc(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-sample (N,) tensor against images (N, ...)."""
    return a.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def to_x0(out: torch.Tensor, z: torch.Tensor, logsnr: torch.Tensor | float, prediction: str) -> torch.Tensor:
    """The clean-image estimate implied by a network output of the given parameterization. `logsnr`: one per image,
    or one float for the whole batch (sampling: the scales are computed once on the host, so no device work, and
    every image gets the same numbers at any batch size)."""
    if isinstance(logsnr, float):
        alpha, sigma = (float(a) for a in alpha_sigma(torch.tensor(logsnr, dtype=torch.float64)))
    else:
        alpha, sigma = (_bc(a, z) for a in alpha_sigma(logsnr))
    if prediction == "v":
        return alpha * z - sigma * out
    if prediction == "eps":
        return (z - sigma * out) / alpha
    return out


def target(x0: torch.Tensor, eps: torch.Tensor, logsnr: torch.Tensor, prediction: str) -> torch.Tensor:
    """What the network should output for a clean image x0 noised with eps."""
    if prediction == "v":
        alpha, sigma = (_bc(a, x0) for a in alpha_sigma(logsnr))
        return alpha * eps - sigma * x0
    return eps if prediction == "eps" else x0


def min_snr_weight(logsnr: torch.Tensor, prediction: str, gamma: float | None = 5.0) -> torch.Tensor:
    """Min-SNR-gamma loss weight (Hang et al. 2023), expressed for the chosen prediction target.

    The weight is min(SNR, gamma) on the x0 error. Since |x0 err|^2 = |v err|^2 / (SNR + 1) = |eps err|^2 / SNR,
    it becomes min(SNR, gamma) / (SNR + 1) on the v error and min(SNR, gamma) / SNR on the eps error.
    gamma=None gives the unweighted loss.
    """
    if gamma is None:
        return torch.ones_like(logsnr)
    snr = logsnr.exp()
    clipped = snr.clamp(max=gamma)
    if prediction == "v":
        return clipped / (snr + 1)
    if prediction == "eps":
        return clipped / snr
    return clipped


def drop_labels(labels: torch.Tensor, null_class: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by the null class with probability p (Ho & Salimans 2022, classifier-free guidance)."""
    if p <= 0:
        return labels
    drop = torch.rand(labels.shape, generator=generator, device=labels.device) < p
    return torch.where(drop, torch.full_like(labels, null_class), labels)


@dataclass
class DiffusionLoss:
    """The denoising loss: sample t and noise, noise x0, and score the network's prediction."""

    schedule: Callable[[torch.Tensor], torch.Tensor]
    prediction: str = "v"
    min_snr_gamma: float | None = 5.0

    def __call__(self, net, x0: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None,
                 part: slice = slice(None), augment: torch.Tensor | None = None):
        """The mean loss over x0[part]: t and noise are drawn for all of x0 (a data-parallel rank holds the global
        batch and trains on its part of it, so N ranks draw what one process would). `augment`: the images'
        augmentation conditioning (diffusion/augment.py), passed on to the network."""
        n = x0.shape[0]
        # Stratified t (one sample per 1/n interval) lowers the variance of the loss estimate (VDM, Kingma 2021).
        # No shuffle needed: the trainer draws the batch's images at random, so positions are exchangeable.
        u = torch.rand((), generator=generator, device=x0.device)
        t = (u + torch.arange(n, device=x0.device) / n) % 1.0
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x0, labels, t, eps = x0[part], labels[part], t[part], eps[part]
        logsnr = self.schedule(t)
        alpha, sigma = alpha_sigma(logsnr)
        z = _bc(alpha, x0) * x0 + _bc(sigma, x0) * eps
        out = (net(z, t, labels) if augment is None else net(z, t, labels, augment[part])).float()
        err = (out - target(x0, eps, logsnr, self.prediction)).square().flatten(1).mean(1)
        return (min_snr_weight(logsnr, self.prediction, self.min_snr_gamma) * err).mean()
