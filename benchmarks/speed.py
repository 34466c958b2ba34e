"""Training and sampling speed of diffaug against the loop users would write instead: a Hugging Face diffusers
`UNet2DModel` with class embeddings, `DDPMScheduler` training and `DDIMScheduler` sampling, at matched
parameter count (within 10%), same resolution, batch, precision and device, in the same process,
alternating, medians over repeats (benchmarks/README.md section 2).

    python benchmarks/speed.py                  # CPU: `tiny` at 1x8x8 and 1x28x28, fp32
    python benchmarks/speed.py --device cuda    # GPU: `small` and `base` at 3x32x32, bf16, batch 128 and 512
    python benchmarks/speed.py --section gpu --quick   # the GPU section at toy sizes on any device: a dry run

diffusers is a benchmark-only dependency (`pip install -e ".[bench]"`); the library never imports it.
Writes benchmarks/results/speed_<cpu|cuda>.{json,md} after every measured case (a killed run keeps them).
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
from _common import write_results  # noqa: E402
from diffaug import ImageData, fit  # noqa: E402
from diffaug.diffusion.step import autocast  # noqa: E402
from diffaug.diffusion.trainer import TrainConfig, Trainer  # noqa: E402
from diffaug.diffusion.unet import PRESETS, UNet, count_parameters  # noqa: E402

# diffusers layouts matched to each preset's parameter count (and its attention levels).
DIFFUSERS_LAYOUT = {"tiny": ((24, 48, 48), 1, 8), "small": ((64, 128, 128, 128), 2, 32),
                    "base": ((128, 256, 256, 256), 2, 32)}
# preset, C, HxW, train batch, sample batch (None: sampling was measured in the preset's first case), compiled
CPU_CASES = [("tiny", 1, 8, 128, 512, False), ("tiny", 1, 28, 64, 128, False)]
GPU_CASES = [("small", 3, 32, 128, 1024, False), ("small", 3, 32, 512, None, False), ("base", 3, 32, 128, 1024, False),
             ("base", 3, 32, 512, None, False),
             ("base", 3, 32, 512, None, True)]   # last: torch.compile's minutes must not cost the other cases


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def toy_data(c: int, hw: int, n: int = 512) -> ImageData:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, hw, hw, c), generator=g, dtype=torch.uint8).numpy()
    return ImageData.from_arrays(images, (torch.arange(n) % 10).numpy(), [str(i) for i in range(10)])


# --- diffusers baseline -------------------------------------------------------------------------------

def diffusers_model(preset: str, c: int, hw: int):
    from diffusers import UNet2DModel

    boc, lpb, groups = DIFFUSERS_LAYOUT[preset]
    attn = PRESETS[preset].unet.attn_levels
    down = tuple("AttnDownBlock2D" if i in attn else "DownBlock2D" for i in range(len(boc)))
    up = tuple("AttnUpBlock2D" if i in attn else "UpBlock2D" for i in reversed(range(len(boc))))
    return UNet2DModel(sample_size=hw, in_channels=c, out_channels=c, block_out_channels=boc, layers_per_block=lpb,
                       down_block_types=down, up_block_types=up, num_class_embeds=11, norm_num_groups=groups,
                       attention_head_dim=boc[0] // 2 if preset != "tiny" else 8)


class DiffusersLoop:
    """The training step and guided DDIM sampler a diffusers user writes (their tutorials' loop, plus CFG)."""

    def __init__(self, preset, c, hw, batch, device, channels_last):
        from diffusers import DDIMScheduler, DDPMScheduler

        torch.manual_seed(0)
        self.model = diffusers_model(preset, c, hw).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=device.type == "cuda" or None)
        self.train_sched, self.sample_sched = DDPMScheduler(1000), DDIMScheduler(1000)
        self.c, self.hw, self.batch, self.device, self.cl = c, hw, batch, device, channels_last
        self.images = torch.randn(512, c, hw, hw, device=device)

    def train_step(self):
        idx = torch.randint(len(self.images), (self.batch,), device=self.device)
        x = self.images[idx]
        if self.cl:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 11, (self.batch,), device=self.device)
        noise = torch.randn_like(x)
        t = torch.randint(0, 1000, (self.batch,), device=self.device)
        with autocast(self.device):
            pred = self.model(self.train_sched.add_noise(x, noise, t), t, class_labels=y).sample
        loss = F.mse_loss(pred.float(), noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()

    @torch.no_grad()
    def sample(self, n, steps=20, guidance=2.0):
        self.sample_sched.set_timesteps(steps)
        x = torch.randn(n, self.c, self.hw, self.hw, device=self.device)
        y = torch.cat([torch.arange(n, device=self.device) % 10, torch.full((n,), 10, device=self.device)])
        for t in self.sample_sched.timesteps:
            with autocast(self.device):
                out = self.model(torch.cat([x, x]), t, class_labels=y).sample.float()
            cond, uncond = out.chunk(2)
            x = self.sample_sched.step(uncond + guidance * (cond - uncond), t, x).prev_sample
        return x


# --- measurement --------------------------------------------------------------------------------------

def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def forward_flops(model, c, hw, call) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        call(model, torch.zeros(1, c, hw, hw), torch.zeros(1), torch.zeros(1, dtype=torch.long))
    return counter.get_total_flops()


def bf16_peak(device) -> float:
    """Dense bf16 matmul FLOP/s on this device, measured now (the honest anchor for utilization)."""
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    seconds = min(timed(lambda: [a @ b for _ in range(20)], device) for _ in range(3))
    return 20 * 2 * 8192 ** 3 / seconds


def diffaug_step(preset, data, batch, device, compiled: bool):
    cfg = TrainConfig(preset=preset, steps=10 ** 6, batch_size=batch, warmup=10, checkpoint_every=10 ** 6,
                      compile=compiled)
    trainer = Trainer(data, cfg, device=device, progress=False)
    from diffaug.diffusion.fastpath import FastStep
    return trainer, FastStep(trainer)


def measure_case(preset, c, hw, batch, sample_batch, compiled, device, repeats, train_steps, sample_steps, extra_cl):
    data = toy_data(c, hw)
    trainer, ours_step = diffaug_step(preset, data, batch, device, False)
    systems = {"diffaug": None, "diffusers": DiffusersLoop(preset, c, hw, batch, device, device.type == "cuda")}
    train_fn = {"diffaug": lambda: [ours_step() for _ in range(train_steps)]}
    if compiled:   # the same fast step with the network under torch.compile (GroupNorm + SiLU fused, etc.)
        _, compiled_step = diffaug_step(preset, data, batch, device, True)
        systems["diffaug + compile"] = None
        train_fn["diffaug + compile"] = lambda: [compiled_step() for _ in range(train_steps)]
    if extra_cl:   # on CPU diffusers runs NCHW as users would; also measure it in channels_last, for fairness
        systems["diffusers (channels_last)"] = DiffusersLoop(preset, c, hw, batch, device, True)
    sample_fn = {}
    if sample_batch:
        gen = fit(data, preset, 1, device=device, progress=False, batch_size=8)   # a real Generator for sampling
        gen.model.load_state_dict(trainer.model.state_dict())
        sample_fn["diffaug"] = lambda: gen.sample(torch.arange(sample_batch) % 10, steps=sample_steps, guidance=2.0,
                                                  batch_size=sample_batch, progress=False)
    for name, loop in systems.items():
        if loop is not None:
            train_fn[name] = lambda loop=loop: [loop.train_step() for _ in range(train_steps)]
            if sample_batch:
                sample_fn[name] = lambda loop=loop: loop.sample(sample_batch, sample_steps)
    for name in systems:   # warm-up: cuDNN autotuning, CUDA-graph capture, compilation, allocator
        train_fn[name]()
        if name in sample_fn:
            sample_fn[name]()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = {name: {"train": [], "sample": []} for name in systems}
    for _ in range(repeats):   # alternate the systems so drift in the machine hits all of them alike
        for name in systems:
            times[name]["train"].append(timed(train_fn[name], device))
            if name in sample_fn:
                times[name]["sample"].append(timed(sample_fn[name], device))
    params = {name: count_parameters(trainer.model) for name in systems if name.startswith("diffaug")}
    params.update({n: count_parameters(loop.model) for n, loop in systems.items() if loop is not None})
    ours_flops = forward_flops(UNet(c, 10, PRESETS[preset].unet), c, hw, lambda m, x, t, y: m(x, t, y))
    theirs_flops = forward_flops(diffusers_model(preset, c, hw), c, hw, lambda m, x, t, y: m(x, t * 999, class_labels=y))
    rows = {}
    for name in systems:
        sample_s = statistics.median(times[name]["sample"]) if times[name]["sample"] else None
        rows[name] = {"parameters": params[name],
                      "forward_flops": ours_flops if name.startswith("diffaug") else theirs_flops,
                      "train_img_s": train_steps * batch / statistics.median(times[name]["train"]),
                      "sample_img_s": sample_batch / sample_s if sample_s else None,
                      "train_seconds": times[name]["train"], "sample_seconds": times[name]["sample"]}
    if device.type == "cuda":
        rows["diffaug"]["peak_memory_gib_all_systems"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    base = rows["diffusers"]
    for r in rows.values():
        r["train_ratio_vs_diffusers"] = r["train_img_s"] / base["train_img_s"]
        if r["sample_img_s"] and base["sample_img_s"]:
            r["sample_ratio_vs_diffusers"] = r["sample_img_s"] / base["sample_img_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny step counts: checks the script, measures nothing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--section", choices=["cpu", "gpu"], help="which cases (default: by device); "
                                                                    "--section gpu --quick on a CPU dry-runs the GPU one")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    cases = GPU_CASES if (args.section or ("gpu" if gpu else "cpu")) == "gpu" else CPU_CASES
    if args.quick:   # same code paths at toy sizes (a CPU dry run of the GPU section)
        cases = [(p, c, 8, 8, sb and 16, cc) for p, c, hw, b, sb, cc in cases[:2]] + [("tiny", 1, 8, 16, None, True)]
    repeats = 1 if args.quick else args.repeats
    train_steps, sample_steps = (2, 2) if args.quick else ((30, 20) if gpu else (10, 20))
    payload = {"device": str(device), "repeats": repeats, "train_steps_per_repeat": train_steps,
               "sample_steps": sample_steps, "guidance": 2.0, "precision": "bf16 autocast" if gpu else "fp32",
               "cases": []}
    if gpu:
        payload["bf16_peak_flops"] = bf16_peak(device)
    lines = []
    for preset, c, hw, batch, sample_batch, compiled in cases:
        rows = measure_case(preset, c, hw, batch, sample_batch, compiled, device, repeats, train_steps, sample_steps,
                            extra_cl=not gpu)
        payload["cases"].append({"preset": preset, "shape": [c, hw, hw], "batch": batch, "sample_batch": sample_batch,
                                 "systems": rows})
        for name, r in rows.items():
            share = ""
            if gpu:
                share = f"{100 * 3 * r['forward_flops'] * r['train_img_s'] / payload['bf16_peak_flops']:.1f}% | "
            sampled = (f"{r['sample_img_s']:,.1f} ({r['sample_ratio_vs_diffusers']:.2f}x), batch {sample_batch}"
                       if r["sample_img_s"] else "")
            lines.append(f"| {preset} {c}x{hw}x{hw} | {batch} | {name} | {r['parameters'] / 1e6:.2f}M | "
                         f"{r['forward_flops'] / 1e9:.3f} | {r['train_img_s']:,.0f} ({r['train_ratio_vs_diffusers']:.2f}x) | "
                         f"{share}{sampled} |")
        head = ("| case | batch | system | params | fwd GFLOP/img | train img/s (vs diffusers) | "
                + ("share of bf16 peak | " if gpu else "")
                + f"sampling img/s, {sample_steps} steps + guidance (vs diffusers) |")
        sep = "|" + " --- |" * (head.count("|") - 1)
        where = (f"bf16 peak measured in this run: {payload['bf16_peak_flops'] / 1e12:.0f} TFLOP/s; share = 3 x forward "
                 "FLOPs x img/s / peak.\n\n" if gpu else "")
        table = (f"Command: `python benchmarks/speed.py --device {args.device}{' --quick' if args.quick else ''}` "
                 f"({payload['precision']}, medians of {repeats} alternating repeats of {train_steps} training steps and "
                 f"one {sample_steps}-step guided sampling run of the sample batch; diffaug: fast path, DPM-Solver++(2M); "
                 "diffusers: DDPMScheduler training, DDIMScheduler sampling, CFG batched)\n\n"
                 + where + "\n".join([head, sep, *lines]))
        name = "speed_" + ("cuda" if gpu else "cpu") + ("_quick" if args.quick else "")
        write_results(name, payload, table)   # after every case: a killed run keeps what it measured


if __name__ == "__main__":
    main()
