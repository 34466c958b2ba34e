"""A classifier trained on 10 real digits per class, with DiffusionAugment in its DataLoader.

Offline, under two minutes on 2 CPU cores:
    python examples/torchvision_pipeline.py                      # fits a small generator on the 100 images
    python examples/torchvision_pipeline.py --gen digits.safetensors
"""

import argparse
import tempfile

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2

import diffaug
from diffaug import DiffusionAugment, Generator, SampleBank, augment_dataset


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 4 * 4, 10))


def train_and_test(loader, test, epochs=30, seed=0, make_model=small_cnn) -> float:
    torch.manual_seed(seed)
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(test.images.float() / 255).argmax(1)
    return (pred == test.labels).float().mean().item()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gen", help="a generator file (default: fit one on the 100 training images)")
    parser.add_argument("--epochs", type=int, default=30, help="classifier epochs")
    parser.add_argument("--bank-per-class", type=int, default=100, help="synthetic images per class in the bank")
    args = parser.parse_args()
    train = diffaug.load_data("digits", "train").subset(per_class=10, seed=0)
    test = diffaug.load_data("digits", "test")
    gen = Generator.load(args.gen) if args.gen else diffaug.fit(train, steps=600, batch_size=64)

    with tempfile.TemporaryDirectory() as tmp:
        # Generate once, in big batches; the workers then only look images up.
        bank = SampleBank.build(gen, f"{tmp}/bank", per_class=args.bank_per_class, data=train, copies=4,
                                strength=(0.3, 0.6))
        to_float = v2.ToDtype(torch.float32, scale=True)
        plain = TensorDataset(train.images.float() / 255, train.labels)
        augmented = augment_dataset(TensorDataset(train.images, train.labels),
                                    DiffusionAugment(bank, p=0.5, mode="mix"), transform=to_float)
        loader = lambda ds: DataLoader(ds, batch_size=32, shuffle=True, num_workers=2,
                                       generator=torch.Generator().manual_seed(0))
        base = train_and_test(loader(plain), test, args.epochs)
        ours = train_and_test(loader(augmented), test, args.epochs)
    print(f"test accuracy, 10 real images per class: plain {base:.3f}, with DiffusionAugment {ours:.3f}")


if __name__ == "__main__":
    main()
