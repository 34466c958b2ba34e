"""Non-leaking augmentation of the generator's training images (Karras et al. 2020, StyleGAN2-ADA; 2022, EDM
appendix): each training image is transformed at random and the network is told how, through a conditioning
vector; sampling passes no vector (all zeros: "not augmented"), so the samples follow the real images, not the
augmented ones. A few images seen under many transforms teach the network shapes and strokes without teaching it
that rotated or mirrored images exist: the augmentation does not leak into the samples.

Each transform is applied to an image with probability `p`, independently (EDM's `AugmentPipe` with its CIFAR-10
set, integer and continuous geometric transforms; no colour transforms). All draws come from the trainer's
generator in a fixed number of calls, with no host synchronisation, so the step stays graph-safe
(diffusion/fastpath.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENT_DIM = 9          # the conditioning vector: which transforms, how much (zeros: none)
TRANSLATE_MAX = 0.125    # integer translation, up to this fraction of the side (EDM's translate_int_max)
SCALE_STD = 0.2          # isotropic scale 2**N(0, 0.2) (EDM's scale_std)
ROTATE_MAX = 1.0         # rotation up to this fraction of a half turn (EDM's rotate_frac_max)


def augment(x: torch.Tensor, p: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(augmented images, conditioning (N, AUGMENT_DIM)) for float images (N, C, H, W) in [-1, 1].

    The vector: x-flip, y-flip, quarter turn (cos - 1, sin), integer translation (fractions of the side),
    log2 scale, rotation (cos - 1, sin). The identity transform gives zeros."""
    n, _, h, w = x.shape
    dev = x.device

    def chosen() -> torch.Tensor:   # (N,) float: 1 where this transform is applied
        return (torch.rand(n, generator=generator, device=dev) < p).float()

    def where(mask, a, b):
        return torch.where(mask[:, None, None, None] > 0, a, b)

    xflip, yflip = chosen(), chosen()
    x = where(xflip, x.flip(3), x)
    x = where(yflip, x.flip(2), x)
    # quarter turns: only square images keep their shape
    quarter = chosen() * torch.randint(0, 4, (n,), generator=generator, device=dev).float() * (h == w)
    if h == w:
        for k in (1, 2, 3):
            x = where((quarter == k).float(), torch.rot90(x, k, (2, 3)), x)
    angle90 = quarter * (math.pi / 2)
    # integer translation with reflected borders: exact, no resampling
    shift = chosen()[:, None] * (torch.rand(n, 2, generator=generator, device=dev) * 2 - 1) * TRANSLATE_MAX
    dx, dy = (shift[:, 0] * w).round(), (shift[:, 1] * h).round()
    x = _shift(x, dx, dy)
    # isotropic scale and rotation: one bilinear resampling, applied only where either was drawn
    log_scale = chosen() * torch.randn(n, generator=generator, device=dev) * SCALE_STD
    angle = chosen() * (torch.rand(n, generator=generator, device=dev) * 2 - 1) * (math.pi * ROTATE_MAX)
    x = where(((log_scale != 0) | (angle != 0)).float(), _resample(x, log_scale, angle), x)
    cond = torch.stack([xflip, yflip, torch.cos(angle90) - 1, torch.sin(angle90), dx / w, dy / h, log_scale,
                        torch.cos(angle) - 1, torch.sin(angle)], dim=1)
    return x, cond


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices outside 0..size-1 mirrored back inside (the border pixel is not repeated)."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.abs().remainder(period)
    return torch.where(index >= size, period - index, index)


def _shift(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Each image moved by its own (dx, dy) pixels, reflected at the borders."""
    n, c, h, w = x.shape
    cols = _reflect(torch.arange(w, device=x.device)[None] - dx[:, None].long(), w)   # (N, W) source columns
    rows = _reflect(torch.arange(h, device=x.device)[None] - dy[:, None].long(), h)
    x = x.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    return x.gather(2, rows[:, None, :, None].expand(n, c, h, w))


def _resample(x: torch.Tensor, log_scale: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Each image scaled by 2**log_scale and rotated by `angle` about its centre (bilinear, reflected borders)."""
    h, w = x.shape[-2:]
    inv = torch.exp2(-log_scale)   # affine_grid maps output to input coordinates: the inverse transform
    cos, sin = torch.cos(angle) * inv, torch.sin(angle) * inv
    zero = torch.zeros_like(cos)
    # in coordinates normalized to [-1, 1] per axis a rotation of a non-square image needs the aspect ratio
    theta = torch.stack([torch.stack([cos, sin * (h / w), zero], 1), torch.stack([-sin * (w / h), cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
