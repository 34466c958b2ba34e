"""One training step in float32 and in bf16 autocast, side by side on this CPU: the SmallCNN the evaluation trains
(batch 128, channels_last, SGD with Nesterov momentum, label smoothing) and the `tiny` diffusion UNet (batch 64,
AdamW), at 8x8 and 28x28.

    python benchmarks/precision_step.py --out benchmarks/results/precision_step

bf16 pays only where the CPU multiplies bf16 in hardware (Intel AMX tiles); elsewhere it is emulated. Seconds per
step are the mean of `--steps` steps after two warm-up steps, on random images (the cost does not depend on them).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import write_results  # noqa: E402
from diffaug.classify.networks import SmallCNN  # noqa: E402
from diffaug.diffusion.unet import UNet, get_preset  # noqa: E402
from diffaug.evaluation.cache import cpu_model  # noqa: E402


def seconds_per_step(model, opt, loss_of, bf16: bool, steps: int) -> float:
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_of(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def smallcnn(width: int, size: int, bf16: bool, steps: int) -> float:
    torch.manual_seed(0)
    model = SmallCNN(1, 10, width).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(128, 1, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(10, (128,))
    return seconds_per_step(model, opt, lambda m: F.cross_entropy(m(x).float(), y, label_smoothing=0.1), bf16, steps)


def unet(size: int, bf16: bool, steps: int) -> float:
    torch.manual_seed(0)
    model = UNet(1, 10, get_preset("tiny").unet).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(64, 1, size, size).contiguous(memory_format=torch.channels_last)
    t, y = torch.rand(64), torch.randint(10, (64,))
    return seconds_per_step(model, opt, lambda m: (m(x, t, y).float() - x).pow(2).mean(), bf16, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/precision_step")
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    amx = bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        cases = [(f"smallcnn(width={w})", s, lambda b, w=w, s=s: smallcnn(w, s, b, args.steps))
                 for s in (8, 28) for w in (16, 32, 64)]
        cases += [("unet tiny", 28, lambda b: unet(28, b, args.steps))]
        for name, size, run in cases:
            f32, b16 = run(False), run(True)   # side by side, float32 first
            rows.append({"threads": threads, "network": name, "size": size, "float32_s": round(f32, 4),
                         "bf16_s": round(b16, 4), "speedup": round(f32 / b16, 2)})
            print(rows[-1], flush=True)
    lines = [f"# One training step, float32 and bf16 autocast: {cpu_model()} (AMX tiles: {amx})", "",
             f"`python benchmarks/precision_step.py --out {args.out}`; seconds per step, mean of {args.steps} after "
             "two warm-up steps; SmallCNN at batch 128, the tiny UNet at batch 64.", "",
             "| threads | network | size | float32 s | bf16 s | float32 / bf16 |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['threads']} | {r['network']} | {r['size']}x{r['size']} | {r['float32_s']:.4f} | {r['bf16_s']:.4f} "
              f"| {r['speedup']:.2f} |" for r in rows]
    write_results(Path(args.out).name, {"cpu": cpu_model(), "amx": amx, "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
