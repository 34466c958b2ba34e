"""Parameter count and forward FLOPs of each UNet preset (the table in docs/design.md).

    python benchmarks/presets.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402
from diffaug.diffusion.unet import PRESETS, UNet, count_parameters  # noqa: E402

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64)]


def main() -> None:
    rows, payload = [], {}
    for name, (cfg, _) in PRESETS.items():
        payload[name] = {"config": cfg.to_dict()}
        flops = []
        for c, h, w in SHAPES:
            model = UNet(c, 10, cfg).eval()
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(torch.zeros(1, c, h, w), torch.zeros(1), torch.zeros(1, dtype=torch.long))
            flops.append(counter.get_total_flops())
            payload[name][f"{c}x{h}x{w}"] = {"parameters": count_parameters(model), "forward_flops": flops[-1]}
        params = count_parameters(UNet(1, 10, cfg))
        rows.append(f"| {name} | {params / 1e6:.2f} M | " + " | ".join(f"{f / 1e9:.3f}" for f in flops) + " |")
    table = "\n".join(["Command: `python benchmarks/presets.py` (10 classes; FLOPs = 2 x multiply-adds, one image)", "",
                       "| preset | parameters (1 channel) | "
                       + " | ".join(f"GFLOPs {c}x{h}x{w}" for c, h, w in SHAPES) + " |",
                       "| --- | --- | " + " | ".join("---" for _ in SHAPES) + " |", *rows])
    write_results("presets", payload, table)


if __name__ == "__main__":
    main()
