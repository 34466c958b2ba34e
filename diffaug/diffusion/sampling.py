"""How to draw from a generator, defined once: the sampling spec (steps, sampler, spacing, guidance), its
defaults and checks, and the perturbation strength. Every way to draw (Generator.sample/perturb,
DiffusionAugment, the albumentations transform, SampleBank, the HF adapters, the CLI) takes its defaults
and choices from here; the evaluation samples with its own measured values (EvalConfig)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..checks import check_strength, is_number, whole_number
from ..errors import DataError
from .samplers import SAMPLERS, get_sampler
from .schedules import SPACINGS

SAMPLER = "dpmpp_2m"
SAMPLE_STEPS, GUIDANCE = 20, 2.0
STRENGTH = 0.4         # perturb: noise to t = 0.4, then denoise given the class (SDEdit, Meng et al. 2022)
MAX_SAMPLER_STEPS = 10_000
# Default step placement per sampler, from benchmarks/sampler_steps.py (digits, own-feature FID against 250-step
# ancestral sampling): DPM-Solver++(2M) on EDM's rho=7 ramp is within noise of it at 10 steps and below it at 20
# (evenly in time: +39% at 20); DDIM and DDPM do best evenly in time.
SPACING = {"dpmpp_2m": "karras", "ddim": "time", "ddpm": "time"}
# Guidance only where it helps (Kynkaanniemi et al. 2024): an interval (low, high] of EDM's noise level
# sigma = sigma_t / alpha_t; outside it a step is conditional only, one network pass instead of two. None: every step.
# (0.5, 10] by benchmarks/sampler_steps.py --guidance-intervals on digits (CPU, 2 seeds; results/
# guidance_interval_digits.md), against a rule set before its 20-step rows were read (class fidelity within 0.5
# points of guidance at every step, own-feature FID at most 10% above it): at 20 steps 24 network rows per image
# instead of 40, FID 0.151 against 0.207, CAS 0.981 against 0.984. Kept by the same rule on Fashion-MNIST (CPU,
# `tiny`, 2 seeds; results/guidance_interval_fashion-mnist.md): FID 0.101 against 0.135, CAS 0.796 against 0.791.
GUIDANCE_INTERVAL = (0.5, 10.0)
SAMPLER_CHOICES = tuple(SAMPLERS)
SPACING_CHOICES = SPACINGS


@dataclass(frozen=True)
class SamplingSpec:
    """A checked way to sample: `steps` of `sampler`, placed by `spacing` (None: the sampler's measured default,
    SPACING), with classifier-free guidance `guidance` (1: none; x0 = x0_null + w (x0_cond - x0_null))."""

    steps: int = SAMPLE_STEPS
    sampler: str = SAMPLER
    spacing: str | None = None
    guidance: float = GUIDANCE
    guidance_interval: tuple | None = GUIDANCE_INTERVAL

    def __post_init__(self):
        whole_number(self.steps, "steps", low=1, high=MAX_SAMPLER_STEPS)
        get_sampler(self.sampler)
        if self.spacing is not None and self.spacing not in SPACINGS:
            raise DataError(f"unknown time spacing {self.spacing!r}; choose one of {SPACINGS}")
        if not is_number(self.guidance) or not 0 <= self.guidance < math.inf:
            raise DataError(f"guidance must be a finite number >= 0, got {self.guidance!r}")
        if self.guidance_interval is not None:
            interval = tuple(self.guidance_interval) if isinstance(self.guidance_interval, (tuple, list)) else ()
            if len(interval) != 2 or not all(is_number(v) for v in interval) \
                    or not 0 <= interval[0] < interval[1] or math.isnan(interval[1]):
                raise DataError(f"guidance_interval must be (low, high) noise levels with 0 <= low < high (high may "
                                f"be inf), got {self.guidance_interval!r}")
            object.__setattr__(self, "guidance_interval", (float(interval[0]), float(interval[1])))

    @property
    def grid(self) -> str:
        """The spacing the time grid uses."""
        return self.spacing or SPACING[self.sampler]

    def fields(self) -> dict:
        return asdict(self)


def trajectory_steps(steps: int, strength: float = 1.0) -> int:
    """Sampler steps a job runs: all `steps` from noise; for a perturbation to `strength`, ceil(steps * strength)
    of them, at least one (as diffusers' img2img)."""
    return steps if strength == 1.0 else max(1, math.ceil(steps * strength))


def guided_at(logsnr: float, guidance: float, interval: tuple | None) -> bool:
    """Whether a conditional step at `logsnr` runs guided (two network rows, conditional and null): guidance is
    not 1 and EDM's noise level sigma/alpha = exp(-logSNR / 2) lies in the interval (low, high] (None: always)."""
    if guidance == 1.0:
        return False
    return interval is None or interval[0] < math.exp(-0.5 * logsnr) <= interval[1]


def strengths_for(strength, copies: int) -> list[float]:
    """The strengths of `copies` perturbations of one image: a strength, or a (low, high) range spread evenly
    (the midpoints of `copies` equal parts)."""
    lo, hi = check_strength(strength)
    return [lo + (hi - lo) * (m + 0.5) / copies for m in range(copies)]
