"""Image grids written as PNG: one row per class, small images scaled up so they can be seen."""

from __future__ import annotations

from pathlib import Path
import numpy as np
import torch

from .io import atomic_path


def grid_array(images: torch.Tensor, columns: int, min_cell: int = 32, pad: int = 2) -> np.ndarray:
    """uint8 (N,C,H,W) -> one HxWx3 uint8 array with `columns` images a row (nearest-neighbour upscaled)."""
    n, c, h, w = images.shape
    scale = max(1, -(-min_cell // max(h, w)))   # ceil: an 8x8 digit becomes a 32x32 cell
    x = images.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    x = x[:, :3]
    rows = -(-n // columns)
    ch, cw = h * scale + pad, w * scale + pad
    out = np.full((rows * ch + pad, columns * cw + pad, 3), 255, np.uint8)
    for i, im in enumerate(x.permute(0, 2, 3, 1).numpy()):
        r, col = divmod(i, columns)
        out[pad + r * ch: pad + r * ch + h * scale, pad + col * cw: pad + col * cw + w * scale] = im
    return out


def save_grid(images: torch.Tensor, columns: int, path, overwrite: bool = True) -> Path:
    """Save `images` (row-major, `columns` a row) as a PNG grid, atomically."""
    from PIL import Image

    with atomic_path(path, overwrite=overwrite) as tmp:
        Image.fromarray(grid_array(images, columns)).save(tmp, format="PNG")
    return Path(path)
