"""Your own folder of images, end to end: a small RGB folder as it comes (mixed sizes, PNG and JPEG, some RGBA),
read at 32x32, a generator fitted on it, and a classifier trained with the measured recipe (a classical policy on
the real images, half of them replaced by synthetic images of their class) against the classical policy alone.

Offline; the folder is written by the example itself (five classes of coloured shapes):
    python examples/own_folder.py                  # a 3-minute fit on 2 CPU cores
    python examples/own_folder.py --steps 200      # quicker, rougher
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2

import diffaug
from diffaug import DiffusionAugment, SampleBank, augment_dataset
from torchvision_pipeline import train_and_test

SHAPES = ("disc", "square", "ring", "cross", "bars")


def write_folder(root: Path, per_class: int, seed: int = 0) -> None:
    """One sub-folder per class; each image a shape of random colour, position and scale on a random background,
    at a random size from 40 to 90 pixels, saved as RGB PNG, RGBA PNG or JPEG."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(SHAPES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.integers(40, 90, size=2)
            yy, xx = np.mgrid[0:h, 0:w]
            r = rng.uniform(0.25, 0.4) * min(h, w)
            dy, dx = (yy - rng.uniform(0.4, 0.6) * h) / r, (xx - rng.uniform(0.4, 0.6) * w) / r
            mask = [dy ** 2 + dx ** 2 < 1, np.maximum(abs(dy), abs(dx)) < 0.8,
                    abs(np.sqrt(dy ** 2 + dx ** 2) - 0.75) < 0.25,
                    (np.minimum(abs(dy), abs(dx)) < 0.25) & (np.maximum(abs(dy), abs(dx)) < 1),
                    (np.sin(dy * 6) > 0) & (abs(dx) < 1) & (abs(dy) < 1)][k]
            img = np.zeros((h, w, 3)) + rng.uniform(0, 90, size=3)
            img[mask] = rng.uniform(120, 255, size=3)
            img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
            kind = i % 3
            if kind == 0:
                Image.fromarray(img).save(root / name / f"{i}.png")
            elif kind == 1:
                Image.fromarray(np.dstack([img, np.full((h, w), 255, np.uint8)]), "RGBA").save(root / name / f"{i}.png")
            else:
                Image.fromarray(img).save(root / name / f"{i}.jpg", quality=92)


def small_cnn(classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(64, classes))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1500, help="generator fit steps")
    parser.add_argument("--per-class", type=int, default=40, help="images per class the example writes")
    parser.add_argument("--epochs", type=int, default=15, help="classifier epochs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "my_folder"
        write_folder(folder, args.per_class)
        data = diffaug.load_data(folder, image_size=32)          # mixed sizes, RGBA and JPEG, read at 32x32 RGB
        train, test = data.split(0.5, seed=0)
        print(f"read {folder}: {data}")
        gen = diffaug.fit(train, steps=args.steps, batch_size=64, seed=0)
        bank = SampleBank.build(gen, f"{tmp}/bank", per_class=2 * args.per_class, data=train, progress=False)
        classical = v2.RandomResizedCrop(32, scale=(0.7, 1.0), antialias=True)   # a classical policy
        to_float = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
        real = TensorDataset(train.images, train.labels)
        plain = augment_dataset(real, classical, transform=to_float)
        ours = augment_dataset(real, v2.Compose([classical, DiffusionAugment(bank, p=0.5, mode="synthesize")]),
                               transform=to_float)
        loader = lambda ds: DataLoader(ds, batch_size=32, shuffle=True, num_workers=2,  # noqa: E731
                                       generator=torch.Generator().manual_seed(0))
        network = lambda: small_cnn(data.num_classes)  # noqa: E731
        base = train_and_test(loader(plain), test, args.epochs, make_model=network)
        mixed = train_and_test(loader(ours), test, args.epochs, make_model=network)
    print(f"test accuracy, {len(train)} real 32x32 RGB images: classical {base:.3f}, classical + synthesize "
          f"{mixed:.3f} (one seed: a demonstration, not a measurement; `diffaug evaluate` measures)")


if __name__ == "__main__":
    main()
