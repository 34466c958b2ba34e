"""The arms' classifier budget: do fewer optimizer steps change the accuracies and the gains an evaluation reports?
Side by side on a validation split of the training pool (the test split is never read).

    python benchmarks/arm_budget.py --out benchmarks/results/arm_budget_digits --data digits --per-class 10,50 \
        --seeds 3100-3107 --budgets 500,250,125
    python benchmarks/arm_budget.py --out benchmarks/results/arm_budget_fashion-mnist --data fashion-mnist \
        --per-class 10 --seeds 3100-3103 --budgets 500,250 --validation 5000
    python benchmarks/arm_budget.py --out benchmarks/results/precision_fashion-mnist --data fashion-mnist \
        --per-class 10,50 --seeds 3100-3102 --budgets 500:float32,500:bf16 --validation 5000
    # the network's width: where the gain stands as the classifier grows (one generator per unit for all of them)
    python benchmarks/arm_budget.py --out benchmarks/results/width_fashion-mnist --data fashion-mnist \
        --per-class 10 --seeds 500-504 --budgets 500 --validation 5000 --resume \
        --networks "smallcnn(width=16);smallcnn(width=32);smallcnn(width=64);smallcnn(width=128)"

A budget is optimizer steps, optionally with the precision the arms' classifiers train in (`500:bf16`, `500:float32`;
`DIFFAUG_CPU_BF16`, classify.training.bf16_training); without one, the library's choice for this CPU. With
`--networks` (`;`-separated classifier specs) every budget runs with every network, a setting `500@smallcnn(width=16)`
each; the first setting is the one the others are compared with.

At 10 and 50 images per class every arm trains `classify.training.STEPS_MIN` steps (500 at batch 128: 640 and 128
epochs of the subset); the floor, not the epochs, sets the cost of every arm. Each unit (k, seed) is an evaluation
unit's labelled-only work on a validation split: the stratified subset of the training pool, a generator fitted on it
with the evaluation's defaults (`EvalConfig.gen_steps_for`), its synthetic pool, and then, at every budget, the three
arms a claim compares -- the tuned classical arm, `classical+synthesize` (the primary) and its dose control -- with the
regime's policy and network (`--policy`/`--network`, default: what benchmarks/results/choice_cuts_DATA.json chose for
the regime). Validation images: the training pool's images outside the subset (a labelled-only run never sees them),
`--validation` of them drawn stratified when given. One replicate per arm and budget, the same seeds at every budget:
the budgets are paired.

Writes OUT.json and OUT.md after every unit (a killed run keeps what it finished; the same command with --resume
runs only the units OUT.json lacks): per setting, each arm's accuracy, the primary's gains over the classical arm and
over its control, each setting's gains minus the first's (paired over units, t interval), and the seconds each arm
took.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import diffaug  # noqa: E402
from diffaug.classify.networks import resolve_classifier  # noqa: E402
from diffaug.classify.policies import Policy  # noqa: E402
from diffaug.classify.training import CPU_BF16_ENV  # noqa: E402
from diffaug.evaluation.cache import cpu_model  # noqa: E402
from diffaug.evaluation.config import BASELINE, CONTROL, EvalConfig  # noqa: E402
from diffaug.evaluation.unit import _pools, train_arm  # noqa: E402
from diffaug.evaluation.verdict import t_given_split  # noqa: E402
from diffaug.io import atomic_path  # noqa: E402
from diffaug.workers import sigterm_as_interrupt  # noqa: E402

PRIMARY = "classical+synthesize"
ARMS = (BASELINE, PRIMARY, PRIMARY + CONTROL)


def seeds_of(text: str) -> list[int]:
    """'3100-3107' or '3100,3101' as a list of ints."""
    if "-" in text:
        first, last = map(int, text.split("-"))
        return list(range(first, last + 1))
    return [int(s) for s in text.split(",")]


def choices(data: str, k: int) -> tuple[str, str]:
    """The regime's (policy, network) as the full choice of benchmarks/choice_cuts.py made them."""
    path = Path(__file__).resolve().parent / "results" / f"choice_cuts_{data}.json"
    row = next(r for r in json.loads(path.read_text())["rows"] if r["k"] == k)
    return row["classical"]["full"], row["network"]["walk"]["winner"]


def validation_of(train, subset, n: int | None, seed: int):
    """The training pool's images outside `subset` (compared by content), `n` of them stratified if given."""
    known = {bytes(x.numpy()) for x in subset.images}
    rest = train.select(np.array([i for i, x in enumerate(train.images) if bytes(x.numpy()) not in known]))
    if n is None or n >= len(rest):
        return rest
    return rest.subset(per_class=n // rest.num_classes, seed=seed + 1)


@contextlib.contextmanager
def precision_of(name: str):
    """Classifiers train in `name` ('bf16', 'float32'; '': the library's choice for this CPU) inside the block."""
    if name not in ("", "bf16", "float32"):
        raise SystemExit(f"unknown precision {name!r} (bf16 or float32)")
    before = os.environ.pop(CPU_BF16_ENV, None)
    if name:
        os.environ[CPU_BF16_ENV] = "1" if name == "bf16" else "0"
    try:
        yield
    finally:
        os.environ.pop(CPU_BF16_ENV, None)
        if before is not None:
            os.environ[CPU_BF16_ENV] = before


def settings_of(budgets: list[str], networks: list[str] | None) -> list[str]:
    """The settings a unit runs: the budgets, or with networks every budget at every network (`STEPS@NETWORK`)."""
    return [f"{b}@{n}" for b in budgets for n in networks] if networks else list(budgets)


def unit(train, k: int, seed: int, policy: str, network: str, settings: list[str], n_val: int | None,
         device: str) -> dict:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = replace(EvalConfig(), arms=ARMS)
    subset = train.subset(per_class=k, seed=seed)
    validation = validation_of(train, subset, n_val, seed)
    gen = diffaug.fit(subset, cfg.preset, cfg.gen_steps_for(len(subset)), seed=seed, device=device, progress=False,
                      batch_size=cfg.gen_batch_size)
    t_gen = time.perf_counter() - t0
    pools = {**_pools(gen, subset, cfg, seed, device), "real": (subset.images, subset.labels)}
    aug = Policy.parse(policy).build(train.size, cfg.hflip)
    replicate = [(seed + 20_000, seed + 20_001)]
    accuracy, seconds = {}, {}
    for budget in settings:
        budget_part, _, net = budget.partition("@")
        steps, _, precision = budget_part.partition(":")
        factory = resolve_classifier(net or network)
        for arm in ARMS:
            pool = {PRIMARY: pools["synthesize"], PRIMARY + CONTROL: pools["real"]}.get(arm)
            t1 = time.perf_counter()
            with precision_of(precision):
                _, records = train_arm(arm, subset, pool, aug, cfg, replicate, int(steps), validation.images,
                                       validation.labels, device, factory)
            accuracy[f"{budget}/{arm}"] = records[0]["accuracy"]
            seconds[f"{budget}/{arm}"] = round(time.perf_counter() - t1, 1)
    return {"k": k, "seed": seed, "policy": policy, "network": network, "validation_images": len(validation),
            "cpu": cpu_model(),
            "gen_steps": cfg.gen_steps_for(len(subset)), "gen_seconds": round(t_gen, 1), "accuracy": accuracy,
            "seconds": seconds, "unit_seconds": round(time.perf_counter() - t0, 1)}


def interval(x) -> str:
    ci = t_given_split(list(x))
    return f"{100 * ci['mean']:+.2f} [{100 * ci['ci_low']:+.2f}, {100 * ci['ci_high']:+.2f}]"


def table(record: dict) -> str:
    budgets = record["budgets"]
    full = budgets[0]
    rows = []
    for k in sorted({u["k"] for u in record["units"]}):
        mine = [u for u in record["units"] if u["k"] == k]

        def acc(u, steps, arm):
            return u["accuracy"][f"{steps}/{arm}"]

        def gains(steps, over):
            return np.array([acc(u, steps, PRIMARY) - acc(u, steps, over) for u in mine])
        for steps in budgets:
            means = " | ".join(f"{100 * np.mean([acc(u, steps, a) for u in mine]):.2f}" for a in ARMS)
            moved = ("—" if steps == full else
                     f"{interval(gains(steps, BASELINE) - gains(full, BASELINE))} / "
                     f"{interval(gains(steps, PRIMARY + CONTROL) - gains(full, PRIMARY + CONTROL))}")
            moved_classical = ("—" if steps == full else
                               interval([acc(u, steps, BASELINE) - acc(u, full, BASELINE) for u in mine]))
            secs = np.mean([sum(u["seconds"][f"{steps}/{a}"] for a in ARMS) / len(ARMS) for u in mine])
            rows.append(f"| {k} | {steps} | {len(mine)} | {means} | {interval(gains(steps, BASELINE))} | "
                        f"{interval(gains(steps, PRIMARY + CONTROL))} | {moved_classical} | {moved} | {secs:.1f} |")
    head = ("| real / class | setting | units | classical % | primary % | control % | gain vs classical | "
            "gain vs control | classical minus at " + str(full) + " | gains minus at " + str(full) +
            " (vs classical / vs control) | s per arm |")
    policy = "; ".join(sorted({f"{u['k']}/class: {u['policy']}, {u['network']}" for u in record["units"]}))
    machines = " and ".join(sorted({u.get("cpu", record["cpu"]) for u in record["units"]}))
    if any("@" in str(b) for b in budgets):
        policy += " (the network where a setting names none)"
    return (f"Command: `{record['command']}`\n\nValidation split of the {record['data']} training pool (the images "
            f"outside each unit's subset; the test split is never read). Each unit: the subset, a generator fitted "
            f"with the evaluation's defaults, then at every setting (optimizer steps[:precision][@network]) the tuned "
            f"classical arm, `{PRIMARY}` and its dose control, one classifier each, paired across settings. Policy "
            f"and network per regime: {policy}. "
            "Points; 95% t intervals over units.\n\n" + head + "\n|" + " --- |" * (head.count("|") - 1) + "\n"
            + "\n".join(rows) + f"\n\nMachine: {machines}, {record['cores']} cores, torch {torch.__version__}; "
            f"one thread per unit, {record['n_jobs']} units at a time. Wall: {record['wall_seconds'] / 60:.1f} min "
            "(summed over the sessions a resumed run took).\n")


@sigterm_as_interrupt()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--per-class", default="10,50")
    parser.add_argument("--seeds", default="3100-3107")
    parser.add_argument("--budgets", default="500,250,125", help="optimizer steps, the current default first; "
                        "STEPS:bf16 or STEPS:float32 fixes the arms' precision")
    parser.add_argument("--validation", type=int, default=None, help="validation images (default: every other one)")
    parser.add_argument("--policy", default=None)
    parser.add_argument("--network", default=None)
    parser.add_argument("--networks", default=None, help="classifier specs separated by ';': every budget runs with "
                        "each (default: --network, or the regime's choice, alone)")
    parser.add_argument("--resume", action="store_true", help="keep OUT.json's units, run only the missing ones")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    from joblib import delayed
    from diffaug.workers import in_processes

    t0 = time.perf_counter()
    train = diffaug.load_data(args.data, "train")
    budgets = settings_of(args.budgets.split(","), args.networks.split(";") if args.networks else None)
    command = "python benchmarks/arm_budget.py " + shlex.join(a for a in sys.argv[1:] if a != "--resume")
    record = {"command": command, "data": args.data, "budgets": budgets, "cpu": cpu_model(),
              "cores": os.cpu_count(), "n_jobs": args.n_jobs, "units": [], "wall_seconds": 0.0}
    if args.resume and args.out.with_suffix(".json").exists():
        record = resumed(args.out.with_suffix(".json"), record)
    elif args.out.with_suffix(".json").exists():
        raise SystemExit(f"{args.out.with_suffix('.json')} exists: --resume to finish it, or another --out")
    done, before = {(u["k"], u["seed"]) for u in record["units"]}, record["wall_seconds"]
    jobs = []
    for k in (int(k) for k in args.per_class.split(",")):
        policy, network = choices(args.data, k)
        policy, network = args.policy or policy, args.network or network
        jobs += [delayed(unit)(train, k, seed, policy, network, budgets, args.validation, args.device)
                 for seed in seeds_of(args.seeds) if (k, seed) not in done]
    print(f"{len(jobs)} unit(s) to run, {len(done)} kept", flush=True)
    for u in in_processes(args.n_jobs, jobs, ordered=False):
        record["units"].append(u)
        record["wall_seconds"] = round(before + time.perf_counter() - t0, 1)   # summed over the sessions
        print(f"k={u['k']} seed={u['seed']}: {u['unit_seconds']:.0f} s", flush=True)
        for suffix, text in ((".json", json.dumps(record, indent=1) + "\n"), (".md", table(record))):
            with atomic_path(args.out.with_suffix(suffix)) as tmp:
                Path(tmp).write_text(text)
    print(table(record))


def resumed(path: Path, fresh: dict) -> dict:
    """The record at `path`, to be extended; refused where another command wrote it (other settings, data, seeds or
    validation; --n-jobs may differ). A unit is paired within itself, so units from other machines may join (each
    names its CPU)."""
    record = json.loads(path.read_text())
    if _what(record["command"]) != _what(fresh["command"]):
        raise SystemExit(f"--resume: {path} was written by `{record['command']}`, not `{fresh['command']}`")
    return {**record, "n_jobs": fresh["n_jobs"]}


def _what(command: str) -> list[str]:
    """A command's words less --n-jobs (how many units at a time changes no number)."""
    words = shlex.split(command)
    return [w for i, w in enumerate(words) if w != "--n-jobs" and (i == 0 or words[i - 1] != "--n-jobs")]


if __name__ == "__main__":
    main()
