"""Images as they come: one PIL image to the array diffaug holds, whatever its mode, orientation or size.

torchvision's convention for a folder of photos is `Resize(N)` (the shorter side to N, antialiased) then
`CenterCrop(N)`; `image_size=N` does the same here, as each file is read, so a folder of large photos is held only at
N x N. Transparency is composited on a background (white by default), palette, CMYK, 16-bit and bilevel images are
converted, and the EXIF orientation is applied, as a photo viewer shows the image.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

WHITE = (255, 255, 255)


def parse_background(value) -> tuple[int, int, int]:
    """A background colour: (r, g, b) 0..255, a grey level, '#rrggbb', 'r,g,b', or a name PIL knows ('white')."""
    if value is None:
        return WHITE
    if isinstance(value, (int, np.integer)) and 0 <= value <= 255:
        return (int(value),) * 3
    if isinstance(value, (tuple, list)) and len(value) == 3 and all(isinstance(v, (int, np.integer)) and 0 <= v <= 255
                                                                    for v in value):
        return tuple(int(v) for v in value)
    if isinstance(value, str):
        from PIL import ImageColor

        text = value.strip()
        try:
            if "," in text:
                parts = tuple(int(p) for p in text.split(","))
                if len(parts) == 3 and all(0 <= p <= 255 for p in parts):
                    return parts
            else:
                return ImageColor.getrgb(text)[:3]
        except ValueError:
            pass
    raise DataError(f"background must be a colour: a name ('white'), '#rrggbb', 'r,g,b' or a grey level 0..255; "
                    f"got {value!r}")


def check_image_size(size) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 2 <= size <= 4096:
        raise DataError(f"image_size must be a whole number of pixels from 2 to 4096, got {size!r}")
    return int(size)


def to_array(im, size: int | None = None, background=WHITE) -> np.ndarray:
    """A PIL image as uint8 (H, W) (grayscale) or (H, W, 3): EXIF orientation applied, transparency composited on
    `background`, any other mode converted; with `size`, the shorter side resized to `size` (antialiased) and the
    centre cropped to size x size."""
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        grey = im.mode in ("LA", "La")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        im = Image.alpha_composite(canvas, rgba).convert("RGB")
        if grey and len(set(background)) == 1:   # a grey image on a grey background stays grey
            im = im.convert("L")
    elif im.mode in ("1", "I", "I;16", "I;16B", "I;16L", "F"):
        im = _to_grey(im)
    elif im.mode not in ("L", "RGB"):   # P, CMYK, YCbCr, LAB, HSV
        im = im.convert("RGB")
    if size is not None:
        w, h = im.size
        scale = size / min(w, h)
        new = (max(size, round(w * scale)), max(size, round(h * scale)))
        if new != im.size:
            im = im.resize(new, Image.Resampling.BICUBIC, reducing_gap=3.0)   # antialiased when shrinking
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
        im = im.crop((left, top, left + size, top + size))
    return np.asarray(im)


def _to_grey(im):
    """Bilevel and 16/32-bit grayscale to 8-bit grayscale, scaled by the mode's range."""
    if im.mode == "1":
        return im.convert("L")
    arr = np.asarray(im, dtype=np.float64)
    top = 65535.0 if im.mode.startswith("I;16") or (im.mode == "I" and arr.max() > 255) else (
        1.0 if im.mode == "F" and arr.max() <= 1.0 else 255.0)
    from PIL import Image

    return Image.fromarray(np.clip(np.round(arr / top * 255), 0, 255).astype(np.uint8), "L")


def read_image(path: Path, size: int | None = None, background=WHITE) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return to_array(im, size, background)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None


def read_images(paths: list, size: int | None = None, background=WHITE, progress: bool = False,
                desc: str = "images") -> list[np.ndarray]:
    """Decode `paths` in threads (PIL decodes and resizes outside the GIL), in order, with a progress bar; only
    the (resized) arrays are kept."""
    from tqdm.auto import tqdm

    workers = min(8, os.cpu_count() or 1, max(1, len(paths) // 64))
    out = []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress or len(paths) < 500) as bar, \
            ThreadPoolExecutor(workers) as pool:
        for arr in pool.map(lambda p: read_image(p, size, background), paths):
            out.append(arr)
            bar.update(1)
    return out


def stack(arrays: list[np.ndarray], where: str, size: int | None) -> np.ndarray:
    """One (N, H, W[, 3]) array: grayscale images beside colour ones are read as RGB; images of several sizes are
    refused with one line naming image_size (they were not resized)."""
    if any(a.ndim == 3 for a in arrays):
        arrays = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        if size is not None:   # cannot happen: every image was cropped to size x size
            raise DataError(f"internal: images of {where} did not come out {size}x{size}")
        sizes = ", ".join("x".join(map(str, shape)) for shape in shapes[:4]) + (" ..." if len(shapes) > 4 else "")
        raise DataError(f"images in {where} have mixed sizes ({sizes}); pass image_size=N (CLI: --image-size N) to "
                        "resize each one's shorter side to N and crop its centre to N x N")
    return np.stack(arrays)


def resize_tensor(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) images as (N, C, size, size): the shorter side resized to `size` (bicubic, antialiased),
    then the centre cropped, as `to_array` does for PIL images."""
    import torch.nn.functional as F

    h, w = images.shape[-2:]
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    out = images
    if new != (h, w):
        x = images.float()
        out = F.interpolate(x, size=new, mode="bicubic", antialias=True, align_corners=False)
        out = out.round().clamp(0, 255).to(torch.uint8)
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    return out[..., top:top + size, left:left + size].contiguous()
