"""Continuous-time variance-preserving noise schedules, as pure functions of t in [0, 1].

Every schedule is a function t -> logSNR(t), decreasing in t; the VP identities
alpha^2 = sigmoid(logSNR), sigma^2 = sigmoid(-logSNR) give the signal and noise scales
(Kingma et al. 2021, "Variational Diffusion Models"). logSNR is clipped to [LOGSNR_MIN, LOGSNR_MAX]
so that t = 0 and t = 1 stay finite for samplers.
"""

from __future__ import annotations

import math

import torch

LOGSNR_MIN, LOGSNR_MAX = -15.0, 15.0   # sigma(0) ~ 5e-4 and alpha(1) ~ 5e-4: indistinguishable from clean/noise in uint8


def logsnr_cosine(t: torch.Tensor, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021) as logSNR = -2 log tan(pi t / 2), truncated (Hoogeboom et al. 2023)."""
    t_min = math.atan(math.exp(-0.5 * logsnr_max))
    t_max = math.atan(math.exp(-0.5 * logsnr_min))
    return -2.0 * torch.log(torch.tan(t_min + t * (t_max - t_min)))


def logsnr_linear(t: torch.Tensor, beta_min: float = 0.1, beta_max: float = 20.0) -> torch.Tensor:
    """The DDPM linear-beta schedule in continuous time (Song et al. 2021, VP-SDE): log alpha^2 = -int beta."""
    log_alpha2 = -(beta_min * t + 0.5 * (beta_max - beta_min) * t * t)
    return (-torch.log(torch.expm1(-log_alpha2))).clamp(LOGSNR_MIN, LOGSNR_MAX)


def logsnr_sigmoid(t: torch.Tensor, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> torch.Tensor:
    """Sigmoid schedule of Chen 2023, "On the importance of noise scheduling for diffusion models"."""
    v_start, v_end = math.tanh(start / tau / 2), math.tanh(end / tau / 2)   # sigmoid(x) = (tanh(x/2) + 1) / 2
    v = torch.tanh((start + t * (end - start)) / tau / 2)
    alpha2 = ((v_end - v) / (v_end - v_start)).clamp(1e-12, 1 - 1e-12)
    return torch.log(alpha2 / (1 - alpha2)).clamp(LOGSNR_MIN, LOGSNR_MAX)


SCHEDULES = {"cosine": logsnr_cosine, "linear": logsnr_linear, "sigmoid": logsnr_sigmoid}


def get_schedule(name: str):
    """The logSNR function called `name`."""
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}") from None


def alpha_sigma(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal and noise scales of a VP process at a given logSNR."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def timesteps(n: int, t_start: float = 1.0, t_end: float = 0.0, device=None) -> torch.Tensor:
    """n + 1 times from t_start down to t_end, evenly spaced (n sampler steps)."""
    if n < 1:
        raise ValueError(f"the number of sampler steps must be at least 1, got {n}")
    return torch.linspace(t_start, t_end, n + 1, device=device, dtype=torch.float64)
