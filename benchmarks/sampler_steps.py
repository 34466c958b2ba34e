"""Quality per sampler step: own-feature FID against the number of network evaluations, for every sampler and
time spacing, against 250-step ancestral sampling (benchmarks/README.md section 2, "Quality per step").

    python benchmarks/sampler_steps.py                        # digits, CPU: ~15 minutes on 2 cores
    python benchmarks/sampler_steps.py --dataset fashion-mnist --preset small --device cuda

The generator is fitted on the training split (or loaded with --gen; --gen PATH that does not exist yet is
written after fitting); the feature network is the evaluation's reference classifier trained on the same
training split; FID is measured against the test split's features. A guided step is one network call
(conditional and unconditional halves in one batch). Two 250-step ancestral runs with different seeds give
the reference and its seed-to-seed noise. Writes benchmarks/results/sampler_steps_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffaug  # noqa: E402
from _common import write_results  # noqa: E402
from diffaug.diffusion.samplers import SAMPLERS  # noqa: E402
from diffaug.diffusion.schedules import SPACINGS  # noqa: E402
from diffaug.classify.training import embed, random_batches, train_classifier  # noqa: E402
from diffaug.evaluation.metrics import cas, fid_own  # noqa: E402

STEPS = (5, 10, 20, 50)
REFERENCE = ("ddpm", "time", 250)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--per-class", type=int, default=100, help="synthetic images per class for each FID")
    parser.add_argument("--gen", type=Path, default=None, help="generator file to use (or to write after fitting)")
    parser.add_argument("--steps", default=",".join(map(str, STEPS)))
    parser.add_argument("--guidance-intervals", default=None,
                        help="instead of the sampler grid: DPM-Solver++(2M) on the default spacing at --steps with "
                             "guidance 2 in each noise-level interval LOW:HIGH (comma-separated; 'inf' allowed), "
                             "beside guidance at every step and none; each cell also reports its class fidelity "
                             "(CAS: a classifier trained on the cell's samples, tested on the real test split)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    train, test = diffaug.load_data(args.dataset, "train"), diffaug.load_data(args.dataset, "test")
    if args.gen is not None and args.gen.exists():
        gen = diffaug.Generator.load(args.gen, device=args.device)
    else:
        gen = diffaug.fit(train, args.preset, seed=0, device=args.device, progress=False)
        if args.gen is not None:
            gen.save(args.gen)
    device = gen.device
    features = train_classifier(random_batches(train.images, train.labels, 128, seed=0), train.channels,
                                train.num_classes, steps=800, seed=0, device=device)
    real = embed(features, test.images, device)
    labels = torch.arange(train.num_classes).repeat_interleave(args.per_class)

    rows_seen = [0]
    gen.model.register_forward_pre_hook(lambda module, inputs: rows_seen.__setitem__(0, rows_seen[0] + len(inputs[0])))

    def fid(sampler, spacing, steps, seed=0, with_cas=False, **options):
        t = time.perf_counter()
        rows_seen[0] = 0
        x = gen.sample(labels, steps=steps, sampler=sampler, spacing=spacing, seed=seed, batch_size=1000,
                       progress=False, **options)
        row = {"sampler": sampler, "spacing": spacing, "steps": steps, "seed": seed, **options,
               "network_rows_per_image": rows_seen[0] / len(labels),
               "fid_own": fid_own(real, embed(features, x, device))}
        if with_cas:   # the evaluation's CAS (its classifier, 400 steps), seeded with the cell's seed
            row["cas"] = cas(x, labels, test.images, test.labels, num_classes=train.num_classes, steps=400, seed=seed,
                             device=device)
        return {**row, "seconds": round(time.perf_counter() - t, 2)}

    rows = [fid(*REFERENCE, seed=0), fid(*REFERENCE, seed=1)]
    ref = rows[0]["fid_own"]
    noise = abs(rows[1]["fid_own"] - ref) / ref
    if args.guidance_intervals:
        intervals = [None] + [tuple(float(v) for v in item.split(":")) for item in args.guidance_intervals.split(",")]
        for steps in (int(s) for s in args.steps.split(",")):
            for seed in (0, 1):
                rows.append(fid("dpmpp_2m", None, steps, seed, True, guidance=1.0))
                for interval in intervals:
                    rows.append(fid("dpmpp_2m", None, steps, seed, True, guidance=2.0, guidance_interval=interval))
                payload = {"dataset": args.dataset, "preset": args.preset, "generator": gen.fingerprint,
                           "per_class": args.per_class, "reference": ref, "reference_seed_noise": noise,
                           "rows": rows, "seconds": round(time.perf_counter() - t0, 1)}
                write_results(f"guidance_interval_{args.dataset}", payload, _interval_table(payload, args))
        return
    for steps in (int(s) for s in args.steps.split(",")):
        for sampler in SAMPLERS:
            for spacing in SPACINGS:
                rows.append(fid(sampler, spacing, steps))
                payload = {"dataset": args.dataset, "preset": args.preset, "generator": gen.fingerprint,
                           "per_class": args.per_class, "reference": ref, "reference_seed_noise": noise, "rows": rows,
                           "seconds": round(time.perf_counter() - t0, 1)}
                write_results(f"sampler_steps_{args.dataset}", payload, _table(payload, args))


def _interval_table(payload, args) -> str:
    ref = payload["reference"]
    lines = ["| steps | guidance | interval (sigma) | network rows per image | FID (own), seed 0 | seed 1 | mean vs "
             "250-step ancestral | CAS, seed 0 | seed 1 |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    cells = {}
    for r in payload["rows"][2:]:
        cells.setdefault((r["steps"], r["guidance"], str(r.get("guidance_interval"))), []).append(r)
    for (steps, guidance, interval), rs in cells.items():
        fids = [r["fid_own"] for r in rs]
        lines.append(f"| {steps} | {guidance:g} | {interval if guidance != 1 else ''} | "
                     f"{rs[0]['network_rows_per_image']:.0f} | " + " | ".join(f"{v:.3f}" for v in fids)
                     + (" |" if len(fids) == 2 else " | |") + f" {100 * (sum(fids) / len(fids) / ref - 1):+.0f}% | "
                     + " | ".join(f"{r['cas']:.3f}" if "cas" in r else "" for r in rs)
                     + (" |" if len(rs) == 2 else " | |"))
    return (f"Command: `python benchmarks/sampler_steps.py {' '.join(sys.argv[1:])}` ({payload['per_class']} images "
            "per class per cell; DPM-Solver++(2M) on its default spacing). Guidance 2 applied only where EDM's noise "
            "level sigma_t/alpha_t lies in the interval (Kynkaanniemi et al. 2024), beside every step (None) and no "
            "guidance (1). A guided step runs the network on 2 rows per image. Own-feature FID as in "
            f"sampler_steps_{payload['dataset']}.md; 250-step ancestral: {ref:.3f}, its second seed differs by "
            f"{100 * payload['reference_seed_noise']:.1f}%.\n\n" + "\n".join(lines))


def _table(payload, args) -> str:
    ref = payload["reference"]
    cells = {(r["sampler"], r["spacing"], r["steps"]): r["fid_own"] for r in payload["rows"][2:]}
    steps = sorted({k[2] for k in cells})
    head = "| sampler | spacing | " + " | ".join(f"{s} steps" for s in steps) + " |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for sampler in SAMPLERS:
        for spacing in SPACINGS:
            vals = [cells.get((sampler, spacing, s)) for s in steps]
            lines.append(f"| {sampler} | {spacing} | " + " | ".join(
                "" if v is None else f"{v:.3f} ({100 * (v / ref - 1):+.0f}%)" for v in vals) + " |")
    return (f"Command: `python benchmarks/sampler_steps.py {' '.join(sys.argv[1:])}` "
            f"({payload['per_class']} images per class per cell, guidance 2, seed 0)\n\n"
            f"Own-feature FID (the evaluation's reference classifier, trained on the {payload['dataset']} training "
            "split; "
            f"test split as the real set), and its change against 250-step ancestral sampling (ddpm, even in time): "
            f"{ref:.3f}; a second seed of that reference differs by {100 * payload['reference_seed_noise']:.1f}% "
            "(the noise floor of these comparisons).\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
