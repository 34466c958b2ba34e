"""What the classical baseline costs inside the evaluation's classifier loop: real-only batches, torchvision's
per-image TrivialAugmentWide (the CPU reference) and the batched on-device version, side by side, alternating.

    python benchmarks/classical_cost.py                      # digits (8x8) and digits upscaled to 28x28, CPU
    python benchmarks/classical_cost.py --device cuda

Writes benchmarks/results/classical_cost_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffaug  # noqa: E402
from _common import write_results  # noqa: E402
from diffaug.classify.batched import BatchAugment  # noqa: E402
from diffaug.classify.classical import augment_batch, classical_augment  # noqa: E402
from diffaug.classify.training import train_classifier  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    digits = diffaug.load_data("digits", "train").subset(per_class=10, seed=0)
    rows, payload = [], {"steps": args.steps, "repeats": args.repeats, "batch": 128, "cases": {}}
    for size in (8, 28):
        images = digits.images if size == 8 else F.interpolate(
            digits.images.float(), size=(size, size), mode="bilinear").round().clamp(0, 255).to(torch.uint8)
        x, y = images.to(device), digits.labels.to(device)
        per_image = classical_augment("trivialaugment", (size, size))
        batched = BatchAugment("trivialaugment", (size, size))
        g = torch.Generator().manual_seed(0)

        def batches(aug):
            def next_batch(step):
                idx = torch.randint(len(x), (128,), generator=g).to(device)
                xb = x[idx]
                if aug == "per-image":
                    xb = augment_batch(per_image, xb.cpu()).to(device)
                elif aug == "batched":
                    xb = batched(xb, g)
                return xb, y[idx]
            return next_batch
        arms = ("real only", "per-image", "batched")
        times = {a: [] for a in arms}
        for _ in range(args.repeats):
            for arm in arms:
                t0 = time.perf_counter()
                train_classifier(batches(arm), 1, 10, steps=args.steps, seed=0, device=device)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times[arm].append(time.perf_counter() - t0)
        med = {a: statistics.median(times[a]) for a in arms}
        payload["cases"][f"{size}x{size}"] = {"seconds": times, "median": med}
        rows.append(f"| {size}x{size} | {args.steps / med['real only']:.0f} | {args.steps / med['per-image']:.0f} "
                    f"({med['per-image'] / med['real only']:.1f}x the real-only time) | "
                    f"{args.steps / med['batched']:.0f} "
                    f"({med['batched'] / med['real only']:.1f}x) |")
    table = (f"Command: `python benchmarks/classical_cost.py --device {args.device}` (classifier steps/s, batch 128, "
             f"medians of {args.repeats} alternating runs of {args.steps} steps; TrivialAugmentWide + padded crop)\n\n"
             "| images | real only | torchvision per image (CPU reference) | "
             "batched (kornia ops, torchvision policy) |\n"
             "| --- | --- | --- | --- |\n" + "\n".join(rows))
    write_results(f"classical_cost_{device.type}", payload, table)


if __name__ == "__main__":
    main()
