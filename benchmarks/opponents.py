"""The semi-supervised opponents' own knobs, each chosen by THAT learner's validation accuracy (never by a diffusion
arm's): self-training's confidence threshold and rounds, FixMatch's threshold and unlabelled ratio, and the
classifier budget (optimizer steps, as multiples of the evaluation's steps_for).

    python benchmarks/opponents.py --per-class 10 --seeds 5                          # knobs at the budget
    python benchmarks/opponents.py --per-class 10 --seeds 5 --knobs chosen --budgets 1,2,4   # the budget

With `--knobs chosen` each learner runs at EvalConfig's knobs only (the ones the knob sweep chose), crossed with the
budgets; that sweep writes results/opponents_budget_<dataset>.* (the knob sweep's files stay as they are).

A validation split (30% of the training pool, stratified, seed 1: as sweep.py) is scored; the rest of the pool is
the evaluation's pool: per seed, k labelled images per class drawn from it, the remainder unlabelled (labels never
read), the classical policy named with --classical (default: the one the earlier unlabelled sweep used), and every
variant trained with the evaluation's budget (steps for the labelled plus unlabelled rows) and the seed's streams.
Writes results/opponents_<dataset>.{json,md} (or --name's) after every seed: a killed run keeps what it has, and the
same command with --resume runs only the seeds it lacks. Self-training's rounds share their students (round r + 1
starts from round r's), so a grid with rounds 1 and 2 trains two students per threshold, not three.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffaug  # noqa: E402
from _common import RESULTS, write_results  # noqa: E402
from diffaug.classify import FixMatch, accuracy, fit_classifier, self_train  # noqa: E402
from diffaug.classify.policies import Policy  # noqa: E402
from diffaug.evaluation.config import EvalConfig  # noqa: E402
from diffaug.evaluation.unitplan import unit_streams  # noqa: E402
from diffaug.evaluation.verdict import t_given_split as paired_ci  # noqa: E402
from diffaug.evaluation.unit import _rest  # noqa: E402

VALIDATION_SHARE, SEED_START = 0.3, 500   # as sweep.py: validation seeds, no test split is scored
SELF_TRAINING = [{"threshold": t, "rounds": r} for t, r in itertools.product((0.5, 0.7, 0.9), (1, 2))]
FIXMATCH = [{"threshold": t, "ratio": m} for t, m in itertools.product((0.8, 0.95), (1, 2))]


def chosen_knobs() -> dict:
    """Each learner's knobs as EvalConfig has them (what the knob sweep chose)."""
    cfg = EvalConfig()
    return {"self-training": [{"threshold": cfg.self_training_threshold, "rounds": cfg.self_training_rounds}],
            "fixmatch": [{"threshold": cfg.fixmatch_threshold, "ratio": cfg.fixmatch_ratio}]}


def one_seed(pool, validation, k: int, seed: int, classical: str, grid: dict, budgets: tuple) -> dict:
    """One seed's subset: the classical teacher and every (knobs, budget) variant of each learner, each scored on
    the validation split. A budget b trains for b x the evaluation's steps (the teacher at budget 1, as in a unit:
    self-training's pseudo-labels come from the classical arm's classifier)."""
    import torch
    torch.set_num_threads(1)
    cfg = EvalConfig(per_class=(k,))
    streams = unit_streams(k, seed, 1)
    subset = pool.subset(per_class=k, seed=streams["subset"])
    unlabeled = _rest(pool, subset)
    steps = cfg.steps_for(len(subset) + len(unlabeled))
    seeds = streams["replicates"][0]
    aug = Policy.parse(classical).build(pool.size)
    score = lambda m: accuracy(m, validation.images, validation.labels)   # noqa: E731
    t0 = time.perf_counter()
    teacher = fit_classifier(subset, aug, seeds, steps, cfg.batch_size, "cpu")
    out = {"seed": seed, "steps": steps, "classical": score(teacher), "self-training": {}, "fixmatch": {}}
    for b in budgets:
        n = int(round(b * steps))
        for threshold in dict.fromkeys(v["threshold"] for v in grid["self-training"]):
            # round r's student is the teacher of round r + 1, with the same seeds: the students of one run of
            # max(rounds) rounds are exactly those of self_train(rounds=r) for each r (each round trained once)
            wanted = {v["rounds"] for v in grid["self-training"] if v["threshold"] == threshold}
            model, kept = teacher, []
            for r in range(1, max(wanted) + 1):
                model, _, history = self_train(subset, unlabeled, model, aug, seeds, n, cfg.batch_size, "cpu",
                                               threshold=threshold, rounds=1)
                kept.append(history[0]["kept"])
                if r in wanted:
                    out["self-training"][_name({"threshold": threshold, "rounds": r}, b)] = {
                        "accuracy": score(model), "kept": list(kept)}
        for v in grid["fixmatch"]:
            model, mask = FixMatch(**v).train(subset, unlabeled, seeds, n, cfg.batch_size, "cpu")
            out["fixmatch"][_name(v, b)] = {"accuracy": score(model), "mask_rate": mask}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _name(variant: dict, budget: float = 1) -> str:
    return ",".join(f"{k}={v}" for k, v in {**variant, **({"budget": f"{budget:g}"} if budget != 1 else {})}.items())


def _ordered(names, learner: str, args) -> list:
    """The variants in the grid's order (then budget), as the table lists them."""
    order = [_name(v, b) for v in args.grid[learner] for b in args.budgets]
    return sorted(names, key=lambda n: order.index(n) if n in order else len(order))


def report(args, rows: list, classical: str) -> None:
    lines, chosen = [], {}
    base = np.array([r["classical"] for r in rows])
    for learner in ("self-training", "fixmatch"):
        means = {}
        for name in _ordered(rows[0][learner], learner, args):
            acc = np.array([r[learner][name]["accuracy"] for r in rows])
            means[name] = acc.mean()
            ci = paired_ci(acc - base)
            lines.append(f"| {learner} | `{name}` | {100 * acc.mean():.2f} | {100 * ci['mean']:+.2f} "
                         f"[{100 * ci['ci_low']:+.2f}, {100 * ci['ci_high']:+.2f}] |")
        chosen[learner] = max(means, key=lambda n: (means[n], -list(means).index(n)))
    seeds = [r["seed"] for r in rows]
    table = (f"Command: `python benchmarks/opponents.py {' '.join(sys.argv[1:])}`. {args.dataset}, {args.per_class} "
             f"labelled images per class, the rest of the pool unlabelled; seeds {seeds}; validation split: "
             f"{VALIDATION_SHARE:.0%} of the training pool (stratified, seed 1), never the test split; classical "
             f"policy `{classical}` (validation accuracy {100 * base.mean():.2f}%); one classifier per variant and "
             f"seed, {rows[0]['steps']} steps (`budget=b`: b x that many). Each learner's knobs are chosen by its "
             f"own mean validation accuracy (ties: the earlier row). Chosen: self-training "
             f"`{chosen['self-training']}`, FixMatch `{chosen['fixmatch']}`.\n\n"
             "| learner | knobs | validation accuracy (%) | vs classical (points, 95% CI) |\n"
             "| --- | --- | --- | --- |\n" + "\n".join(lines))
    write_results(args.name, {"per_class": args.per_class, "budgets": args.budgets,
                              "validation": f"{VALIDATION_SHARE:.0%} of the training pool, seed 1",
                              "classical": classical, "chosen": chosen, "seeds": rows}, table)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed-start", type=int, default=SEED_START)
    parser.add_argument("--classical", default="trivialaugment(m=1,p=0.5)")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--knobs", choices=("grid", "chosen"), default="grid",
                        help="grid: the knob sweep; chosen: EvalConfig's knobs only (for a budget sweep)")
    parser.add_argument("--budgets", type=lambda s: tuple(float(b) for b in s.split(",")), default=(1.0,),
                        help="classifier budgets as multiples of the evaluation's steps, e.g. 1,2,4")
    parser.add_argument("--name", help="results/NAME.{json,md} (default: opponents_[budget_]DATASET)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the seeds results/NAME.json already holds (same command) and run the others")
    args = parser.parse_args()
    args.name = args.name or f"opponents_{'budget_' if args.knobs == 'chosen' else ''}{args.dataset}"
    grid = chosen_knobs() if args.knobs == "chosen" else {"self-training": SELF_TRAINING, "fixmatch": FIXMATCH}
    args.grid = grid
    pool, validation = diffaug.load_data(args.dataset, "train").split(1 - VALIDATION_SHARE, seed=1)
    from joblib import Parallel, delayed
    seeds = range(args.seed_start, args.seed_start + args.seeds)
    rows = _done(args) if args.resume else []
    seeds = [s for s in seeds if s not in {r["seed"] for r in rows}]
    jobs = (delayed(one_seed)(pool, validation, args.per_class, s, args.classical, grid, args.budgets) for s in seeds)
    for row in Parallel(n_jobs=args.n_jobs, return_as="generator_unordered")(jobs):
        rows.append(row)
        rows.sort(key=lambda r: r["seed"])
        print(f"seed {row['seed']}: {row['seconds']} s", flush=True)
        report(args, rows, args.classical)


def _done(args) -> list:
    """The seeds a killed run of the same command finished (its results file), checked against this command."""
    path = RESULTS / f"{args.name}.json"
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    same = {"classical": args.classical, "budgets": list(args.budgets)}
    found = {"classical": old.get("classical"), "budgets": old.get("budgets")}
    if found != same or old.get("per_class", args.per_class) != args.per_class:
        sys.exit(f"--resume: {path} was written by another command ({found}, not {same}); give another --name")
    names = {learner: {_name(v, b) for v in args.grid[learner] for b in args.budgets} for learner in args.grid}
    rows = [r for r in old["seeds"] if args.seed_start <= r["seed"] < args.seed_start + args.seeds
            and all(set(r[learner]) == names[learner] for learner in names)]
    print(f"--resume: {len(rows)} seed(s) from {path}", flush=True)
    return rows


if __name__ == "__main__":
    main()
