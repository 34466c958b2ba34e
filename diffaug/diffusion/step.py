"""What both training-step paths share: the device and its precision, the model's layout, the optimizer, and the
LR and EMA math. The eager reference step (trainer.py) and the graph-safe step (fastpath.py) both import this
module, not each other; sampling (generator.py) takes the device, precision and layout from here too.

The LR and the EMA decay are torch ops on a float64 step counter in both paths, so the two compute the same
numbers in the same order (exact on CPU; float64 counts exactly far beyond any fit, float32 stopped at 2**24)."""

from __future__ import annotations

import math

import torch

from ..errors import DiffaugError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise DiffaugError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise DiffaugError(f"diffaug runs on cpu, cuda or mps, not {device.type!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DiffaugError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    return device


# torch.compile's break-even with cold caches, measured on an H200 (`small`, batch 128, on the CUDA-graph fast path):
# compiling and capturing took ~100 s and the compiled step 14.8 ms instead of 29.2 ms, so a fit pays it back from
# ~6,900 steps, or ~205 s of uncompiled training (benchmarks/results/speed_cuda_compile.md, 2026-11-27); a second run
# beside other compiles, so an upper bound, found 112 s and 14.1 ms instead of 28.5 ms: 7,800 steps
# (speed_cuda_cold.jsonl, 2026-11-28). With torch.compile's on-disk caches warm (a second fit of the same preset and
# batch on the machine) the compile takes ~2 s and pays from ~120 steps; the rule assumes cold caches.
COMPILE_PAYS_FROM_STEPS = 7000
COMPILE_PAYS_FROM_SECONDS = 210


def compile_pays(device: torch.device, steps: int | None, minutes: float | None) -> bool:
    """Whether torch.compile (`TrainConfig.compile=None`, the default) is worth its compile time for a fit of
    `steps` optimizer steps and/or a `minutes` budget on `device`: on CUDA only (where the break-even was
    measured; elsewhere compiling is the user's call, `compile=True`), and only for fits past the break-even."""
    if device.type != "cuda" or (steps is None and minutes is None):
        return False
    if steps is not None and steps < COMPILE_PAYS_FROM_STEPS:
        return False
    return minutes is None or minutes * 60 >= COMPILE_PAYS_FROM_SECONDS   # the fit ends at whichever budget is first


# Sampling's break-even: the network rows (images x network evaluations; guided steps count twice) a job must run
# for the compiled network's savings to repay its compile time. Measured on an H200 (`small`, 3x32x32, 1024 images,
# 20 guided steps; benchmarks/results/speed_cuda*.{md,jsonl}, 2026-11-28): 57.4 us a row graphed, 14.4 us graphed
# and compiled, ~23 s to compile with cold caches (beside other compiles: an upper bound): ~535,000 rows, about
# 13,000 images at 20 guided steps or 30 s of uncompiled sampling. With warm caches it paid from ~30,000 rows.
# Callers count a job's rows with Generator.network_rows: two at a guided step, one at a step the guidance interval
# leaves unguided (with the default interval, 24 of the 40 rows of 20 guided steps).
SAMPLING_COMPILE_PAYS_FROM_ROWS = 550_000


def sampling_compile_pays(device: torch.device, rows: int | None) -> bool:
    """Whether compiling the sampling network (Generator.compile=None, the default) pays for a job of `rows`
    network rows on `device`: on CUDA only, past the measured break-even."""
    return device.type == "cuda" and rows is not None and rows >= SAMPLING_COMPILE_PAYS_FROM_ROWS


def autocast(device: torch.device):
    """bf16 autocast on CUDA (no loss scaling needed, unlike fp16); a no-op elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move to `device` in channels_last: cuDNN's and oneDNN's convolutions are fastest in NHWC (chosen on the
    2-core CPU machine by timing the UNet both ways; benchmarks/speed.py gives the end-to-end figures)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True   # fixed shapes: autotune each convolution once, then reuse
    return model.to(device).to(memory_format=torch.channels_last)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float -1..1, the range the network sees."""
    return images.float().div_(127.5).sub_(1.0)


def make_optimizer(model: torch.nn.Module, cfg, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel for all parameters, CPU and CUDA); capturable on CUDA for the CUDA-graph step."""
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(model.parameters(), lr=torch.tensor(cfg.lr, device=device) if fused else cfg.lr,
                             weight_decay=cfg.weight_decay, betas=(0.9, 0.99), fused=fused or None,
                             capturable=device.type == "cuda")


def step_counter(step: int, device) -> torch.Tensor:
    """The optimizer step as the float64 tensor lr_at and ema_decay_at take."""
    return torch.tensor(float(step), dtype=torch.float64, device=device)


def lr_at(step: torch.Tensor, cfg, total: int | None, spent: torch.Tensor | None = None) -> torch.Tensor:
    """Linear warm-up over `cfg.warmup` steps, then cosine decay to 10% of `cfg.lr` as the budget runs out: by
    `total` steps, or by `spent` (the share of a wall-clock budget used, a 0-d tensor), whichever is further along;
    flat with neither. A fit budgeted in minutes thus ends at the decayed rate as a fit budgeted in steps does.

    Torch ops only, so the fast path evaluates it on the device from its step counter without a host sync."""
    warm = (step + 1) / cfg.warmup
    if total is None and spent is None:
        return cfg.lr * warm.clamp(max=1.0)
    frac = (((step - cfg.warmup) / max(1, total - cfg.warmup)).clamp(0.0, 1.0) if total is not None
            else torch.zeros_like(step))
    if spent is not None:
        frac = torch.maximum(frac, spent.to(frac.dtype).clamp(0.0, 1.0))
    return cfg.lr * torch.where(step < cfg.warmup, warm, 0.1 + 0.45 * (1 + torch.cos(math.pi * frac)))


def ema_decay_at(step: torch.Tensor, cfg) -> torch.Tensor:
    """EMA warm-up: decay (1 + step) / (10 + step), capped at `cfg.ema_decay`."""
    return ((1 + step) / (10 + step)).clamp(max=cfg.ema_decay)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: torch.Tensor) -> None:
    """ema <- ema + (1 - decay) (model - ema); `decay` is a device tensor (no host sync)."""
    ema_params = list(ema.parameters())
    delta = torch._foreach_sub(list(model.parameters()), ema_params)
    torch._foreach_mul_(delta, (1.0 - decay).float())
    torch._foreach_add_(ema_params, delta)
    for eb, b in zip(ema.buffers(), model.buffers()):
        eb.copy_(b)
