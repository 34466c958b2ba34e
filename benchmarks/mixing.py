"""How the `classical+synthesize` arm should mix classical augmentation with synthetic images, and how much
of a unit's noise repeated classifier trainings remove, by cross-validation WITHIN the training pool
(the test split is never touched).

    python benchmarks/mixing.py --dataset digits --folds 3 --seeds 2 --repeats 2

The training pool is cut into `--folds` stratified folds; each fold in turn is the validation set and the real
subsets (k per class, seed) are drawn from the other folds, so every training image is validated on once and
the validation set is as large as the pool (a single 30% split of digits holds 270 images, too few to rank
accuracy knobs: benchmarks/results/knobs_digits.md). Per (fold, k, seed) one generator is fitted on the subset;
every variant trains `--repeats` classifiers (replicate r: same init and batch stream in every variant), paired
against the classical arm. Variants:

- `classical+synthesize (augment all)`: the classical augmentation on every row of the batch (the old default);
- `classical+synthesize (augment real)`: on the real rows only, synthetic rows as sampled;
- `synthesize`: no classical augmentation at all.

Units run in parallel processes, one thread each (`--n-jobs`); results are rewritten after every unit (a killed
run keeps them): results/mixing_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffaug  # noqa: E402
from _common import write_results  # noqa: E402
from diffaug.classify.batched import BatchAugment  # noqa: E402
from diffaug.evaluation.verdict import t_given_split as paired_ci  # noqa: E402
from diffaug.evaluation.config import EvalConfig  # noqa: E402
from diffaug.evaluation.unit import _pools, train_arm  # noqa: E402
from diffaug.workers import sigterm_as_interrupt  # noqa: E402

VARIANTS = {"classical": (False, True, True), "classical+synthesize (augment all)": (True, True, True),
            "classical+synthesize (augment real)": (True, True, False), "synthesize": (True, False, False)}
#            name: (synthetic pool, classical augmentation, augment the synthetic rows)


def folds(data, n: int) -> list:
    """(training part, validation fold) pairs: stratified, seed 1."""
    from sklearn.model_selection import StratifiedKFold
    cv = StratifiedKFold(n, shuffle=True, random_state=1)
    return [(data.select(tr), data.select(va)) for tr, va in cv.split(np.zeros(len(data)), data.labels.numpy())]


def unit(pool, validation, fold: int, k: int, seed: int, repeats: int, device: str) -> dict:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = EvalConfig(arms=("classical", "classical+synthesize"), classifier_repeats=repeats)
    subset = pool.subset(per_class=k, seed=seed)
    gen = diffaug.fit(subset, cfg.preset, cfg.gen_steps_for(len(subset)), seed=seed, device=device, progress=False,
                      batch_size=cfg.gen_batch_size)
    syn = _pools(gen, subset, cfg, seed, device)["synthesize"]
    aug = BatchAugment("trivialaugment", pool.size)   # the classical arm these results were made with
    seeds = [(seed + 10_000 * r, seed + 10_000 * r + 1) for r in range(repeats)]   # the streams they were made with
    accs = {}
    for name, (use_pool, classical, augment_synthetic) in VARIANTS.items():
        _, records = train_arm("classical+synthesize", subset, syn if use_pool else None, aug if classical else None,
                               replace(cfg, augment_synthetic=augment_synthetic), seeds, cfg.steps_for(len(subset)),
                               validation.images, validation.labels, device)
        accs[name] = [r["accuracy"] for r in records]
    return {"fold": fold, "k": k, "seed": seed, "accuracy": accs, "seconds": round(time.perf_counter() - t0, 1)}


@sigterm_as_interrupt()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--per-class", default="10,50")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    from joblib import delayed
    from diffaug.workers import in_processes

    data = diffaug.load_data(args.dataset, "train")
    jobs = [delayed(unit)(tr, va, f, int(k), seed, args.repeats, args.device)
            for f, (tr, va) in enumerate(folds(data, args.folds))
            for k in args.per_class.split(",") for seed in range(args.seeds)]
    units = []
    for u in in_processes(args.n_jobs, jobs, ordered=False):
        units.append(u)
        print(f"fold {u['fold']} k={u['k']} seed={u['seed']}: {u['seconds']:.0f} s", flush=True)
        report(args, units, len(data))


def report(args, units: list, n: int) -> None:
    rows = []
    for k in sorted({u["k"] for u in units}):
        mine = [u for u in units if u["k"] == k]
        for name in VARIANTS:
            if name == "classical":
                continue
            # per unit: the replicate-mean paired difference; spread: replicate-to-replicate vs unit-to-unit
            diffs = np.array([np.subtract(u["accuracy"][name], u["accuracy"]["classical"]) for u in mine])
            ci = paired_ci(list(diffs.mean(1)))
            within = np.sqrt(np.mean(diffs.var(1, ddof=1))) if diffs.shape[1] > 1 else float("nan")
            rows.append(f"| {k} | {name} | {100 * ci['mean']:+.2f} [{100 * ci['ci_low']:+.2f}, "
                        f"{100 * ci['ci_high']:+.2f}] | {len(mine)} | {100 * diffs.mean(1).std(ddof=1):.2f} | "
                        f"{100 * within:.2f} |")
    head = ("| real / class | variant | gain vs classical (points) [95% CI] | units | sd across units | "
            "sd across classifier replicates |")
    table = (f"Command: `python benchmarks/mixing.py {' '.join(sys.argv[1:])}`. {args.folds}-fold stratified "
             f"cross-validation within the {args.dataset} training pool ({n} images; every image validated on "
             "once); real subsets drawn from the other folds; the test split is never touched. Each unit: one "
             f"generator fit on its subset, {args.repeats} classifier replicates per variant (paired by replicate), "
             "evaluation defaults otherwise. Gain = replicate-mean accuracy minus the classical arm's, per unit.\n\n"
             + "\n".join([head, "|" + " --- |" * (head.count("|") - 1), *rows]))
    write_results(f"mixing_{args.dataset}", {"folds": args.folds, "repeats": args.repeats, "units": units}, table)


if __name__ == "__main__":
    main()
