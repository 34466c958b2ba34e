"""albumentations: AlbumentationsDiffusionAugment in an A.Compose with a seed, feeding a PyTorch DataLoader.

Offline, under two minutes on 2 CPU cores:
    python examples/albumentations_pipeline.py [--gen digits.safetensors]
"""

import argparse
import tempfile

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import diffaug
from diffaug import SampleBank
from diffaug.adapters.albumentations import AlbumentationsDiffusionAugment

from torchvision_pipeline import train_and_test


class Digits(Dataset):
    """HWC uint8 images through an albumentations pipeline; the label rides along as `class_label`."""

    def __init__(self, data, pipeline):
        self.images = data.images.permute(0, 2, 3, 1).numpy()
        self.labels = data.labels.numpy()
        self.pipeline = pipeline

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        out = self.pipeline(image=self.images[i], class_label=int(self.labels[i]))["image"]
        return torch.from_numpy(out.transpose(2, 0, 1).astype(np.float32) / 255), int(self.labels[i])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gen", help="a generator file (default: fit one on the 100 training images)")
    parser.add_argument("--epochs", type=int, default=30, help="classifier epochs")
    parser.add_argument("--bank-per-class", type=int, default=100, help="synthetic images per class in the bank")
    args = parser.parse_args()
    train = diffaug.load_data("digits", "train").subset(per_class=10, seed=0)
    test = diffaug.load_data("digits", "test")
    gen = diffaug.Generator.load(args.gen) if args.gen else diffaug.fit(train, steps=600, batch_size=64)

    with tempfile.TemporaryDirectory() as tmp:
        bank = SampleBank.build(gen, f"{tmp}/bank", per_class=args.bank_per_class, data=train, copies=4,
                                strength=(0.3, 0.6))
        pipeline = A.Compose([AlbumentationsDiffusionAugment(bank, mode="mix", p=0.5),
                              A.Affine(translate_px=(-1, 1), p=0.5)], seed=0)
        loader = DataLoader(Digits(train, pipeline), batch_size=32, shuffle=True, num_workers=2)
        acc = train_and_test(loader, test, args.epochs)
    print(f"test accuracy, 10 real images per class, albumentations + AlbumentationsDiffusionAugment: {acc:.3f}")


if __name__ == "__main__":
    main()
