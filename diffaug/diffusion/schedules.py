"""Continuous-time variance-preserving noise schedules, as pure functions of t in [0, 1].

Every schedule is a function t -> logSNR(t), decreasing in t; the VP identities
alpha^2 = sigmoid(logSNR), sigma^2 = sigmoid(-logSNR) give the signal and noise scales
(Kingma et al. 2021, "Variational Diffusion Models"). logSNR is clipped to [LOGSNR_MIN, LOGSNR_MAX]
so that t = 0 and t = 1 stay finite for samplers.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import DiffaugError

LOGSNR_MIN, LOGSNR_MAX = -15.0, 15.0   # sigma(0) ~ 5e-4, alpha(1) ~ 5e-4: indistinguishable from clean/noise in uint8


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
        raise DiffaugError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}") from None


def alpha_sigma(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal and noise scales of a VP process at a given logSNR."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


SPACINGS = ("time", "logsnr", "karras")


def timesteps(n: int, t_start: float = 1.0, t_end: float = 0.0, device=None, schedule=None,
              spacing: str = "time") -> torch.Tensor:
    """n + 1 times from t_start down to t_end (n sampler steps), float64.

    spacing "time": evenly in t; "logsnr": evenly in logSNR (the step DPM-Solver measures, Lu et al. 2022);
    "karras": EDM's rho = 7 ramp in sigma/alpha (Karras et al. 2022, eq. 5), dense near the data.
    The last two need the schedule; they invert it numerically on a dense grid (schedules are monotone)."""
    if n < 1:
        raise DiffaugError(f"the number of sampler steps must be at least 1, got {n}")
    if spacing not in SPACINGS:
        raise DiffaugError(f"unknown time spacing {spacing!r}; choose one of {SPACINGS}")
    if spacing == "time":
        return torch.linspace(t_start, t_end, n + 1, device=device, dtype=torch.float64)
    if schedule is None:
        raise DiffaugError(f"spacing {spacing!r} needs the schedule")
    lo, hi = (float(v) for v in schedule(torch.tensor([t_start, t_end], dtype=torch.float64)))
    i = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    if spacing == "logsnr":
        target = lo + i * (hi - lo)
    else:   # sigma/alpha = exp(-logSNR / 2), ramped in sigma ** (1 / rho)
        rho = 7.0
        s_max, s_min = math.exp(-lo / 2) ** (1 / rho), math.exp(-hi / 2) ** (1 / rho)
        target = -2 * rho * torch.log(s_max + i * (s_min - s_max))
    grid = torch.linspace(t_end, t_start, 20001, dtype=torch.float64)
    values = schedule(grid)   # decreasing in t: flip both for an increasing interpolation table
    t = np.interp(target.numpy(), values.flip(0).numpy(), grid.flip(0).numpy())
    t[0], t[-1] = t_start, t_end   # exact end points
    return torch.from_numpy(t).to(device)
