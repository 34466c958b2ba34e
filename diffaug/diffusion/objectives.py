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


def drop_labels(labels: torch.Tensor, null_class: int, p: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by the null class with probability p (Ho & Salimans 2022, classifier-free guidance)."""
    if p <= 0:
        return labels
    drop = torch.rand(labels.shape, generator=generator, device=labels.device) < p
    return torch.where(drop, torch.full_like(labels, null_class), labels)


# How a batch's noise levels are drawn (TrainConfig.noise_sampling):
# - "weighted": t uniform (stratified), each image's error weighted by min-SNR-gamma;
# - "importance": t drawn from the density that weight implies, the errors unweighted and scaled by the weight's
#   mean: the same objective in expectation with less variance (Hang et al. 2024, "Improved Noise Schedule for
#   Diffusion Training"; ~40% of the batch's effective size goes to the weights' spread at min-SNR-5);
# - "lognormal": logSNR ~ N(2.4, 2.4^2), EDM's ln(sigma) ~ N(-1.2, 1.2^2) (Karras et al. 2022) on this VP
#   parameterization (sigma_EDM = exp(-logSNR / 2)), the v error unweighted: more of the batch at low noise.
NOISE_SAMPLING = ("weighted", "importance", "lognormal")
LOGNORMAL_LOGSNR = (2.4, 2.4)
GRID = 4096   # cells of the table the drawn density is inverted on


def check_noise_sampling(name: str) -> str:
    if name not in NOISE_SAMPLING:
        raise DiffaugError(f"unknown noise sampling {name!r}; choose one of {NOISE_SAMPLING}")
    return name


def noise_density(schedule: Callable, sampling: str, prediction: str, gamma: float | None,
                  cells: int = GRID) -> tuple[torch.Tensor, float]:
    """(the density of t over `cells` equal cells of [0, 1], normalised to sum 1; the factor on the mean error that
    keeps the objective's scale) for "importance" or "lognormal" ("weighted" draws t uniformly, needing no table)."""
    edges = torch.linspace(0, 1, cells + 1, dtype=torch.float64)
    mid = (edges[:-1] + edges[1:]) / 2
    if sampling == "importance":
        density = min_snr_weight(schedule(mid), prediction, gamma)
        return density / density.sum(), float(density.mean())
    mean, sd = LOGNORMAL_LOGSNR   # the density of logSNR times |d logSNR / dt|, per cell
    jacobian = schedule(edges).diff().abs() * cells
    density = torch.exp(-0.5 * ((schedule(mid) - mean) / sd) ** 2) * jacobian
    return density / density.sum(), 1.0


def warp(u: torch.Tensor, cdf: torch.Tensor) -> torch.Tensor:
    """t in [0, 1] for uniforms u, by the inverse of the piecewise-linear CDF whose `cdf` (cells + 1 knots, 0 to 1)
    sits on equal cells: stratified u stay stratified in the drawn density."""
    cells = len(cdf) - 1
    i = (torch.searchsorted(cdf, u.to(cdf.dtype), right=True) - 1).clamp(0, cells - 1)
    low, high = cdf[i], cdf[i + 1]
    frac = ((u.to(cdf.dtype) - low) / (high - low).clamp_min(1e-12)).clamp(0, 1)
    return ((i.to(cdf.dtype) + frac) / cells).to(u.dtype)


@dataclass
class DiffusionLoss:
    """The denoising loss: sample t and noise, noise x0, and score the network's prediction."""

    schedule: Callable[[torch.Tensor], torch.Tensor]
    prediction: str = "v"
    min_snr_gamma: float | None = 5.0
    noise_sampling: str = "weighted"

    def __post_init__(self):
        self.scale, self._cdf = 1.0, None
        if check_noise_sampling(self.noise_sampling) != "weighted":
            density, self.scale = noise_density(self.schedule, self.noise_sampling, self.prediction,
                                                self.min_snr_gamma)
            self._cdf = torch.cat([torch.zeros(1, dtype=torch.float64), density.cumsum(0)]).clamp(max=1.0).float()
            self._cdf[-1] = 1.0
        self._on = {}   # the table per device, moved once (before a CUDA graph's capture: the warm-up steps)

    def draw_t(self, u: torch.Tensor) -> torch.Tensor:
        """Noise times for uniforms u under this loss's noise sampling."""
        if self.noise_sampling == "weighted":
            return u
        if u.device not in self._on:
            self._on[u.device] = self._cdf.to(u.device)
        return warp(u, self._on[u.device])

    def weight(self, logsnr: torch.Tensor) -> torch.Tensor:
        """Each image's weight on its error: min-SNR for "weighted", else the constant that keeps the scale."""
        if self.noise_sampling == "weighted":
            return min_snr_weight(logsnr, self.prediction, self.min_snr_gamma)
        return torch.full_like(logsnr, self.scale)

    def __call__(self, net, x0: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None,
                 part: slice = slice(None), augment: torch.Tensor | None = None):
        """The mean loss over x0[part]: t and noise are drawn for all of x0 (a data-parallel rank holds the global
        batch and trains on its part of it, so N ranks draw what one process would). `augment`: the images'
        augmentation conditioning (diffusion/augment.py), passed on to the network."""
        n = x0.shape[0]
        # Stratified t (one sample per 1/n interval) lowers the variance of the loss estimate (VDM, Kingma 2021).
        # No shuffle needed: the trainer draws the batch's images at random, so positions are exchangeable.
        u = torch.rand((), generator=generator, device=x0.device)
        t = self.draw_t((u + torch.arange(n, device=x0.device) / n) % 1.0)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x0, labels, t, eps = x0[part], labels[part], t[part], eps[part]
        logsnr = self.schedule(t)
        alpha, sigma = alpha_sigma(logsnr)
        z = _bc(alpha, x0) * x0 + _bc(sigma, x0) * eps
        out = (net(z, t, labels) if augment is None else net(z, t, labels, augment[part])).float()
        err = (out - target(x0, eps, logsnr, self.prediction)).square().flatten(1).mean(1)
        return (self.weight(logsnr) * err).mean()
