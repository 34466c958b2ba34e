"""An MNIST-like set of 28x28 digits made offline from the fonts on this machine, for issue 37's 28x28 digits check
(the figure the issue reads comes from a set we do not have; MNIST itself is not installable offline here):

    python benchmarks/digits28.py --out /tmp/digits28.npz --per-class 1000
    python benchmarks/quality_per_minute.py --data /tmp/digits28.npz --minutes 4 --seeds 3 \\
        --variants flat-lr,default --per-class 200 --name quality_per_minute_digits28

Each image is one digit drawn in a font picked at random from the TrueType fonts found (DejaVu, STIX, Computer
Modern, ... : printed shapes, unlike handwriting, but with MNIST's framing and a spread of weights and slants), at
96x96, thickened by a random stroke weight, rotated (+-15 degrees), sheared (+-0.3), stretched (0.8-1.2
in width) and bent by a smooth random displacement field; then framed as MNIST frames its digits: the ink's bounding
box scaled to fit 20x20 (antialiased, aspect kept) and placed in 28x28 with its centre of mass at the centre. The
digit's ink is white on black. Deterministic in --seed. Written atomically as an .npz `diffaug.load_data` reads
(images N,28,28,1 uint8, labels, class_names "0".."9").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import diffaug  # noqa: E402

CANVAS, BOX, SIZE = 96, 20, 28
FONT_DIRS = ("/usr/share/fonts", Path(ImageFont.__file__).parent.parent / "matplotlib" / "mpl-data" / "fonts")
# Symbol and display faces draw no digits, or draw them as something else.
SKIP = ("Sym", "cmex", "cmsy", "Display", "Mono-Bold", "ExtraLight")


def fonts() -> list[Path]:
    """The TrueType fonts on this machine that draw the ten digits, each once (by file name), sorted."""
    found = {}
    for root in FONT_DIRS:
        for path in sorted(Path(root).rglob("*.ttf")) if Path(root).is_dir() else ():
            if not any(s in path.name for s in SKIP) and path.name not in found and draws_digits(path):
                found[path.name] = path
    if not found:
        raise SystemExit(f"no TrueType font that draws digits under {', '.join(map(str, FONT_DIRS))}")
    return sorted(found.values(), key=lambda p: p.name)


def draws_digits(path: Path) -> bool:
    """Whether every digit has ink in this font, and no two digits are drawn alike (a font without the glyphs
    draws one fallback box for all of them)."""
    try:
        font = ImageFont.truetype(str(path), 48)
    except OSError:
        return False
    glyphs = [np.asarray(render(font, str(d), 64)) for d in range(10)]
    return all(g.any() for g in glyphs) and len({g.tobytes() for g in glyphs}) == 10


def render(font, text: str, canvas: int) -> Image.Image:
    image = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(image).text((canvas / 2, canvas / 2), text, fill=255, font=font, anchor="mm")
    return image


def displaced(ink: np.ndarray, rng: np.random.Generator, alpha: float = 3.0, sigma: float = 6.0) -> np.ndarray:
    """Elastic distortion (Simard et al. 2003): a random displacement field, smoothed, `alpha` pixels at most-ish."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    h, w = ink.shape
    dx, dy = (gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma) for _ in range(2))
    scale = alpha / max(np.abs(dx).max(), np.abs(dy).max(), 1e-8)
    yy, xx = np.mgrid[0:h, 0:w]
    return map_coordinates(ink, [yy + scale * dy, xx + scale * dx], order=1, mode="constant")


def one_digit(digit: int, font_path: Path, rng: np.random.Generator) -> np.ndarray:
    font = ImageFont.truetype(str(font_path), int(rng.uniform(44, 56)))
    image = render(font, str(digit), CANVAS)
    for _ in range(int(rng.integers(0, 3))):   # stroke weight: 0-2 passes of a 3x3 max filter (thinning the light
        image = image.filter(ImageFilter.MaxFilter(3))   # faces broke their strokes: MNIST's pen is never that thin)
    shear, stretch = rng.uniform(-0.3, 0.3), rng.uniform(0.8, 1.2)
    c = CANVAS / 2   # x' = (x - c) * stretch + shear * (y - c) + c, as PIL's inverse affine
    image = image.transform(image.size, Image.AFFINE,
                            (1 / stretch, -shear / stretch, c - c / stretch + shear * c / stretch, 0, 1, 0),
                            resample=Image.BILINEAR)
    image = image.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR)
    ink = displaced(np.asarray(image, dtype=np.float32), rng)
    return framed(ink)


def framed(ink: np.ndarray) -> np.ndarray:
    """MNIST's framing: the bounding box into 20x20 (aspect kept), centre of mass at the centre of 28x28."""
    rows, cols = np.nonzero(ink > 8)
    if not len(rows):   # cannot happen with a font that draws digits; kept as a clear failure
        raise RuntimeError("a digit rendered without ink")
    crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    small = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    small = np.asarray(small, dtype=np.float32)
    out = np.zeros((SIZE, SIZE), np.float32)
    yy, xx = np.mgrid[0:small.shape[0], 0:small.shape[1]]
    mass = small.sum()
    cy, cx = (yy * small).sum() / mass, (xx * small).sum() / mass
    top = int(np.clip(round(SIZE / 2 - cy), 0, SIZE - small.shape[0]))
    left = int(np.clip(round(SIZE / 2 - cx), 0, SIZE - small.shape[1]))
    out[top:top + small.shape[0], left:left + small.shape[1]] = small
    return np.clip(out, 0, 255).astype(np.uint8)


def make(per_class: int, seed: int, faces: list[Path]) -> diffaug.ImageData:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    rng.shuffle(labels)
    images = np.stack([one_digit(int(d), faces[rng.integers(len(faces))], rng) for d in labels])
    return diffaug.ImageData.from_arrays(images[..., None], labels, [str(d) for d in range(10)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the .npz to write")
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    if out.suffix != ".npz":
        raise SystemExit(f"--out must end in .npz, got {out}")
    if out.exists() and not args.overwrite:
        raise SystemExit(f"{out} exists; pass --overwrite to replace it")
    faces = fonts()
    data = make(args.per_class, args.seed, faces)
    data.to_npz(out)
    print(f"{out}: {len(data)} images of 28x28 from {len(faces)} fonts: {', '.join(f.stem for f in faces)}")


if __name__ == "__main__":
    main()
