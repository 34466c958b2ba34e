"""Which evaluation defaults make diffusion augmentation pay: guidance, synthetic share per batch and the
generator's fit budget, measured on a VALIDATION split carved out of the training pool (never the test split).

    python benchmarks/knobs.py --dataset digits --seeds 3

One generator is fitted per (real images per class, seed, fit budget) on the subset only and reused by every
sampling variant of that unit; the classical arm (crop + TrivialAugmentWide) is trained once per unit, and every
variant's `classical+synthesize` arm is compared with it on the same seed (paired). Sampling uses the
evaluation's defaults otherwise (DPM-Solver++(2M), `--sample-steps`). Results are written after every unit
(a killed run keeps them): results/knobs_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffaug  # noqa: E402
from _common import write_results  # noqa: E402
from diffaug.classify.batched import BatchAugment  # noqa: E402
from diffaug.classify.training import accuracy, train_classifier  # noqa: E402
from diffaug.evaluation.verdict import t_given_split as paired_ci  # noqa: E402
from diffaug.evaluation.config import EvalConfig  # noqa: E402
from diffaug.classify.training import mixed_batches  # noqa: E402
from diffaug.evaluation.reference import reference_for  # noqa: E402
from diffaug.evaluation.unit import _pools, _quality  # noqa: E402

VALIDATION_SHARE = 0.3   # of the training pool, stratified, seed 1 (as benchmarks/gen_budget.py)


def variants(k: int, budget: int) -> list[tuple[int, float, float]]:
    """(fit steps, guidance, synthetic share) cells for one regime; `budget` is the evaluation's default."""
    grid = [(budget, g, s) for g in (1.0, 2.0, 3.0) for s in (0.25, 0.5)]
    if k >= 50:   # the largest cost of a unit: does half the fit budget lose anything?
        grid += [(budget // 2, g, s) for g in (1.0, 2.0) for s in (0.25, 0.5)]
    return grid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--per-class", default="10,50")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sample-steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    pool, validation = diffaug.load_data(args.dataset, "train").split(1 - VALIDATION_SHARE, seed=1)
    base = EvalConfig(arms=("classical", "classical+synthesize"), sample_steps=args.sample_steps)
    reference = reference_for(pool, validation, base, args.device)
    cells: dict[str, list] = {}
    quality: dict[str, list] = {}
    for k in (int(x) for x in args.per_class.split(",")):
        for seed in range(args.seeds):
            subset = pool.subset(per_class=k, seed=seed)
            classical = BatchAugment("trivialaugment", pool.size)   # the classical arm these results were made with
            steps = base.steps_for(len(subset))
            common = dict(in_channels=pool.channels, num_classes=pool.num_classes, steps=steps, seed=seed,
                          device=args.device)

            def arm(pool_, share):
                model = train_classifier(mixed_batches(subset, pool_, share, base.batch_size, classical,
                                                       (seed, seed + 1), args.device),
                                         **common)
                return accuracy(model, reference.test_images, reference.test_labels, args.device)

            t0 = time.perf_counter()
            acc_classical = arm(None, 0.0)
            grid = variants(k, base.gen_steps_for(len(subset)))
            for budget in dict.fromkeys(b for b, _, _ in grid):
                t_fit = time.perf_counter()
                gen = diffaug.fit(subset, base.preset, budget, seed=seed, device=args.device, progress=False,
                                  batch_size=base.gen_batch_size)
                t_fit = time.perf_counter() - t_fit
                for guidance in dict.fromkeys(g for b, g, _ in grid if b == budget):
                    cfg = EvalConfig(arms=base.arms, sample_steps=args.sample_steps, guidance=guidance)
                    syn = _pools(gen, subset, cfg, seed, args.device)["synthesize"]
                    q = _quality(syn, subset, reference, cfg, seed, args.device)
                    quality.setdefault(f"{k}|{budget}|{guidance}", []).append(
                        {m: q[m] for m in ("cas", "fid_own", "recall", "memorization_rate")} | {"fit_s": t_fit})
                    for share in (s for b, g, s in grid if b == budget and g == guidance):
                        gain = arm(syn, share) - acc_classical
                        cells.setdefault(f"{k}|{budget}|{guidance}|{share}", []).append(gain)
            print(f"k={k} seed={seed}: {time.perf_counter() - t0:.0f} s", flush=True)
            report(args, cells, quality)


def report(args, cells: dict, quality: dict) -> None:
    rows = []
    for key, gains in cells.items():
        k, budget, guidance, share = key.split("|")
        q = quality[f"{k}|{budget}|{guidance}"]
        ci = paired_ci(gains)
        rows.append(f"| {k} | {budget} | {guidance} | {share} | {100 * ci['mean']:+.2f} [{100 * ci['ci_low']:+.2f}, "
                    f"{100 * ci['ci_high']:+.2f}] | {len(gains)} | {100 * np.mean([x['cas'] for x in q]):.1f} | "
                    f"{np.mean([x['fid_own'] for x in q]):.3f} | {np.mean([x['recall'] for x in q]):.2f} | "
                    f"{100 * np.mean([x['memorization_rate'] for x in q]):.1f}% | "
                    f"{np.mean([x['fit_s'] for x in q]):.0f} |")
    head = ("| real / class | fit steps | guidance | synthetic share | classical+synthesize vs classical (points) | "
            "seeds | CAS | FID (own) | recall | memorization | fit s |")
    table = (f"Command: `python benchmarks/knobs.py {' '.join(sys.argv[1:])}`. Validation split: "
             f"{VALIDATION_SHARE:.0%} of the {args.dataset} training pool (stratified, seed 1); generators and "
             f"classifiers see only the rest; the test split is never touched. {args.sample_steps} sampler steps "
             "(DPM-Solver++(2M)); gain = paired difference against the classical arm of the same seed, 95% CI.\n\n"
             + "\n".join([head, "|" + " --- |" * (head.count("|") - 1), *rows]))
    write_results(f"knobs_{args.dataset}", {"validation": f"{VALIDATION_SHARE:.0%} of the training pool, seed 1",
                                            "gains": cells, "quality": quality}, table)


if __name__ == "__main__":
    main()
