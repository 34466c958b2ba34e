"""Training and sampling speed of diffaug against the loop users would write instead: a Hugging Face diffusers
`UNet2DModel` with class embeddings, `DDPMScheduler` training and `DDIMScheduler` sampling, at matched
parameter count (within 10%), same resolution, batch, precision and device, in the same process,
alternating, medians over repeats (benchmarks/README.md section 2).

    python benchmarks/speed.py                  # CPU: `tiny` at 1x8x8 and 1x28x28, fp32
    python benchmarks/speed.py --device cuda    # GPU: `small` and `base` at 3x32x32, bf16, batch 128 and 512
    python benchmarks/speed.py --section gpu --quick   # the GPU section at toy sizes on any device: a dry run
    python benchmarks/speed.py --compiled       # CPU: also both systems under torch.compile, with its break-even

Two diffusers baselines, and every ratio names its own: "diffusers" is the eager loop of their tutorials, and
"diffusers + compile" the same loop with the UNet under torch.compile (mode reduce-overhead on CUDA: inductor's
kernels replayed as CUDA graphs, the fairest anchor for diffaug's graphed fast path; default mode elsewhere).
Sampling is guided at every step in both systems (the ratios compare that); diffaug's sampling is also timed
as `Generator.sample` runs by default, guided only in its default noise interval (fewer network rows).
On CUDA the share of the bf16 peak is given against the matmul peak measured in the run and the card's spec.
A case with diffaug compiled also records compile's break-even: the extra warm-up seconds over the seconds each
compiled step saves, i.e. the fit length (in steps) from which `--compile` pays, and for sampling the network rows
(images x steps x 2, guided) from which `Generator.compile` pays. Those are warm-cache figures when `--warm` ran
first (benchmarks/gpu_session.sh does): the cold ones are in results/speed_<device>_cold.jsonl.

diffusers is a benchmark-only dependency (`pip install -e ".[bench]"`); the library never imports it.
Writes benchmarks/results/speed_<cpu|cuda>.{json,md} after every measured case (a killed run keeps them); `--name`
names them otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_results  # noqa: E402
from diffaug import ImageData, fit  # noqa: E402
from diffaug.diffusion.sampling import GUIDANCE_INTERVAL  # noqa: E402
from diffaug.diffusion.step import autocast  # noqa: E402
from diffaug.diffusion.trainer import TrainConfig, Trainer  # noqa: E402
from diffaug.diffusion.unet import PRESETS, UNet, count_parameters  # noqa: E402

# diffusers layouts matched to each preset's parameter count (and its attention levels).
DIFFUSERS_LAYOUT = {"tiny": ((24, 48, 48), 1, 8), "small": ((64, 128, 128, 128), 2, 32),
                    "base": ((128, 256, 256, 256), 2, 32)}
# Dense bf16 tensor-core peak from the vendor's spec sheet (no sparsity), by a substring of the device name.
SPEC_BF16_PEAK = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12}


class Case(NamedTuple):
    preset: str
    c: int
    hw: int
    batch: int
    sample_batch: int | None   # None: this preset's sampling was measured in an earlier case
    compiled: bool = False     # also diffaug with the network under torch.compile
    anchor: bool = False       # also diffusers under torch.compile (the compiled baseline)


CPU_CASES = [Case("tiny", 1, 8, 128, 512), Case("tiny", 1, 28, 64, 128)]
# The cases the bars read come first, each with both systems compiled (small: batch 128 training and batch 1024
# sampling; base: batch 512 utilization); torch.compile takes minutes, so the uncompiled rest comes after them.
GPU_CASES = [Case("small", 3, 32, 128, 1024, compiled=True, anchor=True),
             Case("base", 3, 32, 512, None, compiled=True, anchor=True),
             Case("small", 3, 32, 512, None), Case("base", 3, 32, 128, 1024)]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def toy_data(c: int, hw: int, n: int = 512) -> ImageData:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, hw, hw, c), generator=g, dtype=torch.uint8).numpy()
    return ImageData.from_arrays(images, (torch.arange(n) % 10).numpy(), [str(i) for i in range(10)])


# --- diffusers baseline -------------------------------------------------------------------------------

def diffusers_model(preset: str, c: int, hw: int, classes: int = 10):
    """diffusers' UNet2DModel in the layout matched to `preset`, with `classes` + 1 class embeddings (the last is
    the null class that classifier-free guidance drops labels to)."""
    from diffusers import UNet2DModel

    boc, lpb, groups = DIFFUSERS_LAYOUT[preset]
    attn = PRESETS[preset].unet.attn_levels
    down = tuple("AttnDownBlock2D" if i in attn else "DownBlock2D" for i in range(len(boc)))
    up = tuple("AttnUpBlock2D" if i in attn else "UpBlock2D" for i in reversed(range(len(boc))))
    return UNet2DModel(sample_size=hw, in_channels=c, out_channels=c, block_out_channels=boc, layers_per_block=lpb,
                       down_block_types=down, up_block_types=up, num_class_embeds=classes + 1, norm_num_groups=groups,
                       attention_head_dim=boc[0] // 2 if preset != "tiny" else 8)


class DiffusersLoop:
    """The training step and guided DDIM sampler a diffusers user writes (their tutorials' loop, plus CFG)."""

    def __init__(self, preset, c, hw, batch, device, channels_last, compiled: bool = False):
        from diffusers import DDIMScheduler, DDPMScheduler

        torch.manual_seed(0)
        self.model = diffusers_model(preset, c, hw).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = self.model
        self.graphed = compiled and device.type == "cuda"
        if compiled:   # fullgraph: a graph break would hide eager work inside the "compiled" figure
            self.forward = torch.compile(self.model, fullgraph=True, mode="reduce-overhead" if self.graphed else None)
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
        self._step_begins()
        with autocast(self.device):
            pred = self.forward(self.train_sched.add_noise(x, noise, t), t, class_labels=y).sample
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
            self._step_begins()
            with autocast(self.device):
                out = self.forward(torch.cat([x, x]), t.to(self.device), class_labels=y).sample.float()
            cond, uncond = out.chunk(2)
            x = self.sample_sched.step(uncond + guidance * (cond - uncond), t, x).prev_sample
        return x

    def _step_begins(self):
        """Tell inductor's CUDA-graph trees a new iteration begins (its outputs of the last one are dead)."""
        if self.graphed:
            torch.compiler.cudagraph_mark_step_begin()


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


def build_systems(case: Case, device, train_steps, sample_steps, extra_cl, only: str | None = None):
    """The case's systems (or only the one named `only`): {name: its diffusers loop or None}, their training calls
    (`train_steps` steps each) and, where the case samples, their sampling calls (diffaug's also in its default
    guidance interval); and the diffaug network."""
    preset, c, hw, batch, sample_batch, compiled, anchor = case
    data = toy_data(c, hw)
    names = (["diffaug", "diffusers"] + ["diffaug + compile"] * compiled + ["diffusers + compile"] * anchor
             + ["diffusers (channels_last)"] * extra_cl)
    systems, train_fn, sample_fn, default_fn = {}, {}, {}, {}
    network = UNet(c, 10, PRESETS[preset].unet)
    for name in names if only is None else [only]:
        if name.startswith("diffaug"):   # the fast step, + compile: its network under torch.compile
            trainer, step = diffaug_step(preset, data, batch, device, name == "diffaug + compile")
            systems[name], network = None, trainer.model
            train_fn[name] = lambda step=step: [step() for _ in range(train_steps)]
        else:   # on CPU diffusers runs NCHW as users would; "(channels_last)" measures it that way too, for fairness
            systems[name] = loop = DiffusersLoop(preset, c, hw, batch, device,
                                                 device.type == "cuda" or "channels_last" in name, "compile" in name)
            train_fn[name] = lambda loop=loop: [loop.train_step() for _ in range(train_steps)]
            if sample_batch:
                sample_fn[name] = lambda loop=loop: loop.sample(sample_batch, sample_steps)
    if sample_batch and any(name.startswith("diffaug") for name in systems):
        gen = fit(data, preset, 1, device=device, progress=False, batch_size=8)   # a real Generator for sampling
        gen.model.load_state_dict(network.state_dict())

        def sample(compiled, interval=None):
            """Guided at every step (interval None), as the diffusers loop is, or in the library's default
            interval (what `Generator.sample` does unless told otherwise: fewer network rows); Generator.compile
            picks the sampling network on CUDA's fast path."""
            gen.compile = compiled
            return gen.sample(torch.arange(sample_batch) % 10, steps=sample_steps, guidance=2.0,
                              guidance_interval=interval, batch_size=sample_batch, progress=False)
        for name in systems:
            if name.startswith("diffaug"):
                compiled = name == "diffaug + compile"
                sample_fn[name] = lambda compiled=compiled: sample(compiled)
                default_fn[name] = lambda compiled=compiled: sample(compiled, GUIDANCE_INTERVAL)
    return systems, train_fn, sample_fn, default_fn, network


def warm(case: Case, system: str, device, train_steps, sample_steps) -> dict:
    """Run one system of `case` once, timed, from a cold start: fills torch.compile's on-disk caches (FX graph,
    AOTAutograd, Triton kernels) for a timed run in another process, and gives the cold warm-up seconds."""
    _, train_fn, sample_fn, default_fn, _ = build_systems(case, device, train_steps, sample_steps, False, only=system)
    seconds = {"train_warmup_seconds_cold": timed(train_fn[system], device)}
    if system in sample_fn:
        seconds["sample_warmup_seconds_cold"] = timed(sample_fn[system], device)
    if system in default_fn:   # the same graphs: fewer rows per call, the same shapes
        timed(default_fn[system], device)
    return seconds


def measure_case(case: Case, device, repeats, train_steps, sample_steps, extra_cl):
    preset, c, hw, batch, sample_batch, compiled, _ = case
    systems, train_fn, sample_fn, default_fn, network = build_systems(case, device, train_steps, sample_steps,
                                                                       extra_cl)
    warmup, sample_warmup = {}, {}
    for name in systems:   # warm-up: cuDNN autotuning, CUDA-graph capture, compilation, allocator
        warmup[name] = timed(train_fn[name], device)
        if name in sample_fn:
            sample_warmup[name] = timed(sample_fn[name], device)
        if name in default_fn:
            timed(default_fn[name], device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = {name: {"train": [], "sample": [], "default": []} for name in systems}
    for _ in range(repeats):   # alternate the systems so drift in the machine hits all of them alike
        for name in systems:
            times[name]["train"].append(timed(train_fn[name], device))
            if name in sample_fn:
                times[name]["sample"].append(timed(sample_fn[name], device))
            if name in default_fn:
                times[name]["default"].append(timed(default_fn[name], device))
    params = {name: count_parameters(network) for name in systems if name.startswith("diffaug")}
    params.update({n: count_parameters(loop.model) for n, loop in systems.items() if loop is not None})
    ours_flops = forward_flops(UNet(c, 10, PRESETS[preset].unet), c, hw, lambda m, x, t, y: m(x, t, y))
    theirs_flops = forward_flops(diffusers_model(preset, c, hw), c, hw,
                                 lambda m, x, t, y: m(x, t * 999, class_labels=y))
    rows = {}
    for name in systems:
        sample_s = statistics.median(times[name]["sample"]) if times[name]["sample"] else None
        rows[name] = {"parameters": params[name],
                      "forward_flops": ours_flops if name.startswith("diffaug") else theirs_flops,
                      "train_img_s": train_steps * batch / statistics.median(times[name]["train"]),
                      "warmup_seconds": warmup[name], "sample_warmup_seconds": sample_warmup.get(name),
                      "sample_img_s": sample_batch / sample_s if sample_s else None,
                      "sample_default_interval_img_s": (sample_batch / statistics.median(times[name]["default"])
                                                        if times[name]["default"] else None),
                      "train_seconds": times[name]["train"], "sample_seconds": times[name]["sample"]}
    if device.type == "cuda":
        rows["diffaug"]["peak_memory_gib_all_systems"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    for baseline in ("diffusers", "diffusers + compile"):
        if baseline not in rows:
            continue
        base, key = rows[baseline], baseline.replace(" + ", "_")
        for r in rows.values():
            r[f"train_ratio_vs_{key}"] = r["train_img_s"] / base["train_img_s"]
            if r["sample_img_s"] and base["sample_img_s"]:
                r[f"sample_ratio_vs_{key}"] = r["sample_img_s"] / base["sample_img_s"]
    if compiled:
        ours, theirs = rows["diffaug"], rows["diffaug + compile"]
        theirs["compile_break_even_steps"] = break_even(ours["warmup_seconds"], theirs["warmup_seconds"],
                                                        batch / ours["train_img_s"], batch / theirs["train_img_s"],
                                                        train_steps)
        if sample_batch:   # in network rows (images x steps, x 2 guided), the unit Generator.compile=None reads
            rows_per_call = sample_batch * sample_steps * 2
            theirs["sample_compile_break_even_rows"] = break_even(
                ours["sample_warmup_seconds"], theirs["sample_warmup_seconds"],
                *[sample_batch / r["sample_img_s"] / rows_per_call for r in (ours, theirs)], rows_per_call)
    return rows


def break_even(eager_warmup: float, compiled_warmup: float, eager_unit: float, compiled_unit: float,
               units: float) -> float | None:
    """Units of work (training steps, network rows) from which compiling repays its extra warm-up: each system's
    warm-up ran `units` units at `*_unit` seconds each once warm, so the compile time is the compiled warm-up's
    excess over the eager one's beyond that work. None when the compiled unit is not faster."""
    saved = eager_unit - compiled_unit
    extra = (compiled_warmup - eager_warmup) + units * saved   # compile time alone
    return max(0.0, extra) / saved if saved > 0 else None


def spec_peak(device) -> tuple[str, float | None]:
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in SPEC_BF16_PEAK.items() if key in name), None)


def ratios(r: dict, what: str) -> str:
    """'(2.10x eager, 1.20x compiled)' against each diffusers baseline of the case."""
    named = [(f"{what}_ratio_vs_diffusers", "eager"), (f"{what}_ratio_vs_diffusers_compile", "compiled")]
    parts = [f"{r[k]:.2f}x {label}" for k, label in named if r.get(k) is not None]
    return f"({', '.join(parts)})" if parts else ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny step counts: checks the script, measures nothing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--section", choices=["cpu", "gpu"], help="which cases (default: by device); "
                        "--section gpu --quick on a CPU dry-runs the GPU one")
    parser.add_argument("--cases", help="comma-separated indices of the section's cases to run (default: all); "
                        "gpu_session.sh times the two cases with bars first, in a run of their own")
    parser.add_argument("--warm", metavar="CASE:SYSTEM", help="run one system of one case (its index in the section) "
                        "once and exit: fills torch.compile's on-disk caches for a later timed run, and appends the "
                        "cold warm-up seconds to results/speed_<device>_cold.jsonl")
    parser.add_argument("--compiled", action="store_true", help="every case also with both systems under "
                        "torch.compile, and compile's break-even (the CPU cases have none by default); writes "
                        "results/speed_<device>_compiled.*")
    parser.add_argument("--name", help="results file name (default: speed_<device>[_compiled][_quick]), e.g. "
                        "speed_cpu_epyc for another CPU's run beside this project's Xeon's")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    cases = GPU_CASES if (args.section or ("gpu" if gpu else "cpu")) == "gpu" else CPU_CASES
    if args.cases and not args.warm:   # (--warm names its case by its index in the whole section)
        cases = [cases[int(i)] for i in args.cases.split(",")]
    if args.compiled:
        cases = [case._replace(compiled=True, anchor=True) for case in cases]
    if args.quick:   # same code paths at toy sizes (a CPU dry run of the GPU section)
        cases = [case._replace(hw=8, batch=8, sample_batch=case.sample_batch and 16, compiled=False, anchor=False)
                 for case in cases[:2]]
        cases.append(Case("tiny", 1, 8, 16, 16, compiled=True, anchor=True))
    repeats = 1 if args.quick else args.repeats
    train_steps, sample_steps = (2, 2) if args.quick else ((30, 20) if gpu else (10, 20))
    if args.warm:
        index, system = args.warm.split(":", 1)
        case = cases[int(index)]
        record = {**case._asdict(), "system": system, **warm(case, system, device, train_steps, sample_steps)}
        with open(RESULTS / f"speed_{device.type}{'_quick' if args.quick else ''}_cold.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        print(record)
        return
    payload = {"device": str(device), "repeats": repeats, "train_steps_per_repeat": train_steps,
               "sample_steps": sample_steps, "guidance": 2.0, "precision": "bf16 autocast" if gpu else "fp32",
               "cases": []}
    if gpu:
        payload["bf16_peak_flops"] = bf16_peak(device)
        payload["card"], payload["spec_bf16_peak_flops"] = spec_peak(device)
    lines = []
    for case in cases:
        rows = measure_case(case, device, repeats, train_steps, sample_steps, extra_cl=not gpu)
        payload["cases"].append({**case._asdict(), "shape": [case.c, case.hw, case.hw], "systems": rows})
        for name, r in rows.items():
            share = ""
            if gpu:
                flops = 3 * r["forward_flops"] * r["train_img_s"]
                spec = payload["spec_bf16_peak_flops"]
                share = (f"{100 * flops / payload['bf16_peak_flops']:.1f}% / "
                         + (f"{100 * flops / spec:.1f}%" if spec else "n/a") + " | ")
            paid = (f"; compile pays from {r['compile_break_even_steps']:,.0f} steps"
                    if r.get("compile_break_even_steps") else "")
            sample_paid = (f"; compile pays from {r['sample_compile_break_even_rows']:,.0f} network rows"
                           if r.get("sample_compile_break_even_rows") else "")
            sample_share = (", {:.1f}% of the measured peak".format(
                100 * 2 * sample_steps * r["forward_flops"] * r["sample_img_s"] / payload["bf16_peak_flops"])
                if gpu and r["sample_img_s"] else "")
            default = (f"; {r['sample_default_interval_img_s']:,.1f} guided in the default interval "
                       f"{GUIDANCE_INTERVAL}" if r.get("sample_default_interval_img_s") else "")
            sampled = (f"{r['sample_img_s']:,.1f} {ratios(r, 'sample')}, batch {case.sample_batch}{sample_share}"
                       f"{sample_paid}{default}" if r["sample_img_s"] else "")
            lines.append(f"| {case.preset} {case.c}x{case.hw}x{case.hw} | {case.batch} | {name} | "
                         f"{r['parameters'] / 1e6:.2f}M | {r['forward_flops'] / 1e9:.3f} | "
                         f"{r['train_img_s']:,.0f} {ratios(r, 'train')}{paid} | {share}{sampled} |")
        head = ("| case | batch | system | params | fwd GFLOP/img | train img/s (vs diffusers eager, compiled) | "
                + ("share of bf16 peak (measured / spec) | " if gpu else "")
                + f"sampling img/s, {sample_steps} steps + guidance (vs diffusers eager, compiled) |")
        sep = "|" + " --- |" * (head.count("|") - 1)
        spec = payload.get("spec_bf16_peak_flops")
        where = (f"bf16 peak: {payload['bf16_peak_flops'] / 1e12:.0f} TFLOP/s measured in this run (8192^3 matmuls); "
                 + (f"{spec / 1e12:.0f} TFLOP/s dense" if spec else "no spec figure") + f" on the spec sheet of "
                 f"{payload['card']}; share = 3 x forward FLOPs x img/s / peak.\n\n" if gpu else "")
        flags = " --quick" * args.quick + " --compiled" * args.compiled
        table = (f"Command: `python benchmarks/speed.py --device {args.device}{flags}` "
                 f"({payload['precision']}, medians of {repeats} alternating repeats of {train_steps} training steps "
                 "and "
                 f"one {sample_steps}-step guided sampling run of the sample batch, guided at every step in both "
                 "systems (ratios compare these); diffaug: fast path, DPM-Solver++(2M), also timed guided only in its "
                 "default interval, as `Generator.sample` runs; diffusers: DDPMScheduler training, DDIMScheduler "
                 "sampling, CFG batched)\n\n"
                 + where + "\n".join([head, sep, *lines]))
        name = args.name or f"speed_{'cuda' if gpu else 'cpu'}{'_compiled' * args.compiled}{'_quick' * args.quick}"
        write_results(name, payload, table)   # after every case: a killed run keeps what it measured


if __name__ == "__main__":
    main()
