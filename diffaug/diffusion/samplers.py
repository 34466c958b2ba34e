"""Samplers: free functions with one signature, in the spirit of k-diffusion.

    sample_xxx(denoise, x, ts, schedule, generator=None, callback=None, **options) -> x

`denoise(z, t) -> x0_hat` is any callable (the network, its parameterization and guidance are the
caller's business); `x` is the start, noise at ts[0] = 1 or a noised image for SDEdit; `ts` is a
decreasing time grid ending at 0, kept on the CPU (the step coefficients are host floats, so a sampler
step never waits on the device); `schedule` maps t to logSNR. Randomness only comes from `generator`: a
torch.Generator, which may live on another device than x (noise is drawn there and moved), or per-image
streams (noise.ImageNoise), which make every image's noise independent of the batch it is in.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..errors import DiffaugError

from .noise import ImageNoise
from .schedules import alpha_sigma

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _coeffs(schedule, t: torch.Tensor):
    logsnr = schedule(t.reshape(1).double())
    alpha, sigma = alpha_sigma(logsnr)
    return float(alpha), float(sigma), float(logsnr)


def _randn_like(x: torch.Tensor, generator) -> torch.Tensor:
    """Noise drawn where `generator` lives (a CPU generator gives the same noise on every device), moved to x."""
    if isinstance(generator, ImageNoise):
        return generator.randn_like(x)
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device, non_blocking=True)


def sample_ddim(denoise: Denoiser, x, ts, schedule, generator=None, callback=None, eta: float = 0.0):
    """DDIM (Song et al. 2021, eq. 12); eta=0 is the deterministic ODE sampler, eta=1 matches DDPM's variance."""
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        alpha_t, sigma_t, _ = _coeffs(schedule, t)
        alpha_s, sigma_s, _ = _coeffs(schedule, s)
        x0 = denoise(x, t)
        eps = (x - alpha_t * x0) / sigma_t
        c = eta * (sigma_s / sigma_t) * max(0.0, 1.0 - (alpha_t / alpha_s) ** 2) ** 0.5
        x = alpha_s * x0 + max(0.0, sigma_s ** 2 - c ** 2) ** 0.5 * eps
        if c > 0:
            x = x + c * _randn_like(x, generator)
        if callback is not None:
            callback(i, x, x0)
    return x


def sample_ddpm(denoise: Denoiser, x, ts, schedule, generator=None, callback=None):
    """Ancestral sampling from the true posterior q(z_s | z_t, x0_hat) (Ho et al. 2020; VDM appendix A)."""
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        alpha_t, sigma_t, _ = _coeffs(schedule, t)
        alpha_s, sigma_s, _ = _coeffs(schedule, s)
        x0 = denoise(x, t)
        alpha_ts = alpha_t / alpha_s
        var_ts = max(0.0, sigma_t ** 2 - alpha_ts ** 2 * sigma_s ** 2)
        mean = (alpha_ts * sigma_s ** 2 / sigma_t ** 2) * x + (alpha_s * var_ts / sigma_t ** 2) * x0
        std = (var_ts * sigma_s ** 2 / sigma_t ** 2) ** 0.5
        x = mean + std * _randn_like(x, generator) if i < len(ts) - 2 else mean
        if callback is not None:
            callback(i, x, x0)
    return x


def sample_dpmpp_2m(denoise: Denoiser, x, ts, schedule, generator=None, callback=None):
    """DPM-Solver++(2M), the multistep second-order data-prediction solver (Lu et al. 2022, Alg. 2)."""
    x0_prev, h_prev = None, None
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        alpha_t, sigma_t, logsnr_t = _coeffs(schedule, t)
        alpha_s, sigma_s, logsnr_s = _coeffs(schedule, s)
        h = 0.5 * (logsnr_s - logsnr_t)   # step in lambda = log(alpha / sigma)
        x0 = denoise(x, t)
        d = x0
        # The final step is first order (DPM-Solver's "lower_order_final"): it spans the largest logSNR range
        # of the grid, where the second-order extrapolation from the previous, much shorter step overshoots.
        if x0_prev is not None and i < len(ts) - 2:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = (sigma_s / sigma_t) * x - alpha_s * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
        if callback is not None:
            callback(i, x, x0)
    return x


SAMPLERS = {"dpmpp_2m": sample_dpmpp_2m, "ddim": sample_ddim, "ddpm": sample_ddpm}


def get_sampler(name: str):
    """The sampler called `name`."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise DiffaugError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}") from None
