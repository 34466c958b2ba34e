"""A class-conditional UNet (ADM-style, Dhariwal & Nichol 2021) with a null class for classifier-free guidance."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DiffaugError


@dataclass(frozen=True)
class UNetConfig:
    """Architecture hyperparameters; `PRESETS` holds the named ones."""

    channels: int = 24                       # width of the first level
    mults: tuple[int, ...] = (1, 2, 2)       # width multiplier per level; each level after the first halves H, W
    blocks: int = 1                          # residual blocks per level
    attn_levels: tuple[int, ...] = (2,)      # levels (0 = full resolution) with self-attention
    heads: int = 4
    dropout: float = 0.0
    emb_dim: int = 96
    groups: int = 8                          # GroupNorm groups (channels are multiples of it)
    upsample_conv: str = "after"             # "after": nearest x2 then 3x3 conv (ADM); "before": the conv at the
                                             # low resolution, then nearest x2 (a quarter of the FLOPs)
    augment_dim: int = 0                     # length of the non-leaking augmentation's conditioning vector
                                             # (diffusion/augment.py); 0: none

    def to_dict(self) -> dict:
        """JSON-ready; `augment_dim` only where set, so files without it read as before (and in older diffaug)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                if k != "augment_dim" or v}

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class Preset(NamedTuple):
    """A named network and the optimizer steps a fit takes by default (`diffaug fit` without --steps)."""

    unet: UNetConfig
    steps: int


# Parameter counts and forward FLOPs (multiply-adds x 2, one 28x28x1 image) are measured by
# benchmarks/presets.py; the table in docs/design.md comes from it.
PRESETS = {
    # tiny is the CPU preset: narrow at full resolution, where the FLOPs are, wide below, where the parameters
    # are; 0.63M parameters at 65% of the FLOPs of (24, 48, 48) with the upsampling conv after (benchmarks/speed.py)
    "tiny": Preset(UNetConfig(channels=16, mults=(1, 3, 3), blocks=1, attn_levels=(2,), emb_dim=96, dropout=0.0,
                              upsample_conv="before"), steps=2000),
    "small": Preset(UNetConfig(channels=64, mults=(1, 2, 2, 2), blocks=2, attn_levels=(2, 3), emb_dim=256,
                               dropout=0.1), steps=20000),
    "base": Preset(UNetConfig(channels=128, mults=(1, 2, 2, 2), blocks=2, attn_levels=(2, 3), emb_dim=512,
                              dropout=0.1, groups=32), steps=50000),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise DiffaugError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


# Batch-invariant layers. An augmentation must not change with the batch it was made in (tests/test_generator.py:
# batch sizes 1, 7 and 64 give identical images). On the CPU two layers of this network broke that, by ~1e-6:
# a Linear (one GEMM whose blocking depends on the number of rows) and a 1-channel channels_last convolution
# (oneDNN takes a batch-dependent path for it; NCHW does not, and convolutions of 2+ channels do not in NHWC,
# except for a batch of one image, which Generator._forward runs as a pair). Measured on the 2-core CPU machine
# (batches of 1, 2, 7, 33 against 64); the layers below keep the weights (state_dict keys) of nn.Linear/Conv2d.
# Left as is: channels_last GroupNorm also rounds batch-dependently (~1e-6) from about 32x32 on; running it in
# NCHW fixes that but made 28x28 sampling 1.65x slower, so large images may differ by one level in rare pixels.

class Linear(nn.Linear):
    """nn.Linear; on the CPU without autograd (sampling) one matrix-vector product per row (baddbmm over a broadcast
    weight), so a row's result does not depend on the others. The layers using it are the small embedding
    projections. Training keeps the one GEMM: batch invariance is a sampling contract, and the per-row products
    cost 16% of a `tiny` 8x8 training step on the CPU (profiled on the 2-core machine, 2026-11-28)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.ndim != 2 or torch.is_grad_enabled():
            return super().forward(x)
        weight = self.weight.t().expand(len(x), -1, -1)
        if self.bias is None:
            return torch.bmm(x[:, None], weight)[:, 0]
        return torch.baddbmm(self.bias[None, None], x[:, None], weight)[:, 0]


class Stem(nn.Conv2d):
    """The first convolution; for 1-channel images on the CPU it runs in NCHW (see above), then hands the
    network its usual channels_last layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or self.in_channels != 1:
            return super().forward(x)
        nchw = torch.contiguous_format   # (a clone: a 1-channel tensor can pass as contiguous with NHWC strides)
        out = F.conv2d(x.clone(memory_format=nchw), self.weight.clone(memory_format=nchw), self.bias, self.stride,
                       self.padding)
        return out.contiguous(memory_format=torch.channels_last)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of continuous t in [0, 1], scaled to the familiar 0..1000 range."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, conditioned by a scale-shift of the second norm (ADM's AdaGN)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)   # each block starts as the identity: stable early training
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map."""

    def __init__(self, ch: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.out = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        a = F.scaled_dot_product_attention(q, k, v)   # flash/memory-efficient kernels where available
        return x + self.out(a.transpose(-1, -2).reshape(n, c, h, w))


class UNet(nn.Module):
    """eps/v/x0-predicting UNet; `labels == num_classes` is the null (unconditional) class."""

    def __init__(self, in_channels: int, num_classes: int, config: UNetConfig = PRESETS["tiny"].unet):
        super().__init__()
        cfg = self.config = config
        self.num_classes = num_classes
        self.in_channels = in_channels
        widths = [cfg.channels * m for m in cfg.mults]
        self.time_mlp = nn.Sequential(Linear(cfg.channels, cfg.emb_dim), nn.SiLU(), Linear(cfg.emb_dim, cfg.emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, cfg.emb_dim)   # +1: the null class
        if cfg.augment_dim:   # zero-initialised: a network fine-tuned with augmentation starts as it was
            self.augment_emb = Linear(cfg.augment_dim, cfg.emb_dim, bias=False)
            nn.init.zeros_(self.augment_emb.weight)
        self.stem = Stem(in_channels, widths[0], 3, padding=1)

        def block(cin, cout, level):
            layers = [ResBlock(cin, cout, cfg.emb_dim, cfg.groups, cfg.dropout)]
            if level in cfg.attn_levels:
                layers.append(Attention(cout, cfg.heads, cfg.groups))
            return nn.ModuleList(layers)

        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, ch = [widths[0]], widths[0]
        for level, w in enumerate(widths):
            for _ in range(cfg.blocks):
                self.down.append(block(ch, w, level))
                ch = w
                skips.append(ch)
            if level < len(widths) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        deepest = len(widths) - 1
        self.mid = nn.ModuleList([ResBlock(ch, ch, cfg.emb_dim, cfg.groups, cfg.dropout),
                                  Attention(ch, cfg.heads, cfg.groups),
                                  ResBlock(ch, ch, cfg.emb_dim, cfg.groups, cfg.dropout)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(widths))):
            for _ in range(cfg.blocks + 1):
                self.up.append(block(ch + skips.pop(), widths[level], level))
                ch = widths[level]
            if level > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.head = nn.Sequential(nn.GroupNorm(cfg.groups, ch), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self._depth = deepest

    @property
    def multiple(self) -> int:
        """Height and width are padded up to a multiple of this (one halving per level)."""
        return 2 ** self._depth

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                augment: torch.Tensor | None = None) -> torch.Tensor:
        """`augment`: how each training image was augmented (diffusion/augment.py); None when sampling (none)."""
        h0, w0 = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h0) % m, (-w0) % m
        if ph or pw:   # any size works: pad to what the depth needs, crop the output back
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        emb = self.time_mlp(timestep_embedding(t, self.config.channels)) + self.class_emb(labels)
        if augment is not None:
            if not self.config.augment_dim:
                raise DiffaugError("this network was built without augmentation conditioning (augment_dim=0)")
            emb = emb + self.augment_emb(augment.to(emb.dtype))
        emb = F.silu(emb)

        h = self.stem(x)
        hs = [h]
        blocks = iter(self.down)
        for level in range(self._depth + 1):
            for _ in range(self.config.blocks):
                h = _run(next(blocks), h, emb)
                hs.append(h)
            if level < self._depth:
                h = self.downsample[level](h)
                hs.append(h)
        h = self.mid[0](h, emb)
        h = self.mid[1](h)
        h = self.mid[2](h, emb)
        blocks = iter(self.up)
        for i, level in enumerate(reversed(range(self._depth + 1))):
            for _ in range(self.config.blocks + 1):
                h = _run(next(blocks), torch.cat([h, hs.pop()], dim=1), emb)
            if level > 0:
                if self.config.upsample_conv == "before":
                    h = F.interpolate(self.upsample[i](h), scale_factor=2.0, mode="nearest")
                else:
                    h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.head(h)
        return out[..., :h0, :w0]


def _run(layers: nn.ModuleList, h, emb):
    h = layers[0](h, emb)
    for layer in layers[1:]:
        h = layer(h)
    return h


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
