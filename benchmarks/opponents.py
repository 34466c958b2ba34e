"""The semi-supervised opponents' own knobs, each chosen by THAT learner's validation accuracy (never by a diffusion
arm's): self-training's confidence threshold and rounds, FixMatch's threshold and unlabelled ratio, and the
classifier budget (optimizer steps, as multiples of the evaluation's steps_for).

    python benchmarks/opponents.py --per-class 10 --seeds 5                          # knobs at the budget
    python benchmarks/opponents.py --per-class 10 --seeds 5 --knobs chosen --budgets 1,2,4   # the budget

With `--knobs chosen` each learner runs at EvalConfig's knobs only (the ones the digits knob sweep chose), with
`--knobs from:NAME` at the ones the knob sweep of results/NAME.json chose, crossed with the budgets; that sweep writes
results/opponents_budget_<dataset>.* (the knob sweep's files stay as they are).

A validation split (30% of the training pool, stratified, seed 1: as sweep.py) is scored; the rest of the pool is
the evaluation's pool: per seed, k labelled images per class drawn from it, the remainder unlabelled (labels never
read), the classical policy named with --classical (default: the one the earlier unlabelled sweep used), and every
variant trained with the evaluation's budget (steps for the labelled plus unlabelled rows) and the seed's streams.
Writes results/opponents_<dataset>.{json,md} (or --name's) after every seed: a killed run keeps what it has, and the
same command with --resume runs only what the file lacks (its missing seeds; a larger grid's new variants).
Self-training's rounds share their students (round r + 1 starts from round r's), so a grid with rounds 1 and 2
trains two students per threshold, not three.
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
ST_THRESHOLDS, ST_ROUNDS, FM_THRESHOLDS, FM_RATIOS = (0.5, 0.7, 0.9), (1, 2), (0.8, 0.95), (1, 2)   # the grid


def knob_grid(args) -> dict:
    """The knob sweep's variants of each learner (--st-thresholds x --st-rounds, --fm-thresholds x --fm-ratios)."""
    return {"self-training": [{"threshold": t, "rounds": r} for t, r in itertools.product(args.st_thresholds,
                                                                                          args.st_rounds)],
            "fixmatch": [{"threshold": t, "ratio": m} for t, m in itertools.product(args.fm_thresholds,
                                                                                    args.fm_ratios)]}


def chosen_knobs(source: str = "chosen") -> dict:
    """Each learner's knobs as EvalConfig has them (what the digits knob sweep chose), or with `from:NAME` as the
    knob sweep in results/NAME.json chose them (its `chosen`, e.g. `threshold=0.7,rounds=1`)."""
    if source.startswith("from:"):
        chosen = _results(source[5:])["chosen"]
        return {learner: [{key: v for key, v in _knobs(name).items() if key != "budget"}]
                for learner, name in chosen.items()}
    cfg = EvalConfig()
    return {"self-training": [{"threshold": cfg.self_training_threshold, "rounds": cfg.self_training_rounds}],
            "fixmatch": [{"threshold": cfg.fixmatch_threshold, "ratio": cfg.fixmatch_ratio}]}


def one_seed(pool, validation, k: int, seed: int, classical: str, grid: dict, budgets: tuple,
             done: dict | None = None) -> dict:
    """One seed's subset: the classical teacher and every (knobs, budget) variant of each learner, each scored on
    the validation split. A budget b trains for b x the evaluation's steps (the teacher at budget 1, as in a unit:
    self-training's pseudo-labels come from the classical arm's classifier). `done`: this seed's row of an earlier
    run of the sweep; its variants are kept, not trained again (its teacher must score the same)."""
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
    if done is not None:
        if done["classical"] != out["classical"] or done["steps"] != steps:
            raise SystemExit(f"--resume, seed {seed}: the teacher scored {out['classical']} here and "
                             f"{done['classical']} before: not the same classifiers, so the run cannot be extended")
        out.update({learner: dict(done[learner]) for learner in ("self-training", "fixmatch")})
    for b in budgets:
        n = int(round(b * steps))
        for threshold in dict.fromkeys(v["threshold"] for v in grid["self-training"]):
            # round r's student is the teacher of round r + 1, with the same seeds: the students of one run of
            # max(rounds) rounds are exactly those of self_train(rounds=r) for each r (each round trained once)
            wanted = {v["rounds"] for v in grid["self-training"] if v["threshold"] == threshold
                      and _name(v, b) not in out["self-training"]}
            if not wanted:
                continue
            model, kept = teacher, []
            for r in range(1, max(wanted) + 1):
                model, _, history = self_train(subset, unlabeled, model, aug, seeds, n, cfg.batch_size, "cpu",
                                               threshold=threshold, rounds=1)
                kept.append(history[0]["kept"])
                if r in wanted:
                    out["self-training"][_name({"threshold": threshold, "rounds": r}, b)] = {
                        "accuracy": score(model), "kept": list(kept)}
        for v in (v for v in grid["fixmatch"] if _name(v, b) not in out["fixmatch"]):
            model, mask = FixMatch(**v).train(subset, unlabeled, seeds, n, cfg.batch_size, "cpu")
            out["fixmatch"][_name(v, b)] = {"accuracy": score(model), "mask_rate": mask}
    out["seconds"] = round(time.perf_counter() - t0 + (done or {}).get("seconds", 0), 1)   # with the earlier run's
    return out


def _name(variant: dict, budget: float = 1) -> str:
    return ",".join(f"{k}={v}" for k, v in {**variant, **({"budget": f"{budget:g}"} if budget != 1 else {})}.items())


def _knobs(name: str) -> dict:
    """_name's inverse: `threshold=0.7,rounds=2,budget=2` -> {"threshold": 0.7, "rounds": 2, "budget": 2.0}."""
    pairs = (item.partition("=") for item in name.split(","))
    return {key: (int(v) if v.isdigit() else float(v)) for key, _, v in pairs}


def _ordered(names) -> list:
    """The variants by their knobs' values, then budget, as the table lists them."""
    def key(name):
        knobs = _knobs(name)
        budget = knobs.pop("budget", 1)
        return tuple(knobs.values()), budget
    return sorted(names, key=key)


def _results(name: str) -> dict:
    """results/NAME.json of an earlier sweep."""
    return json.loads((RESULTS / f"{name}.json").read_text())


def report(args, rows: list, classical: str) -> None:
    lines, chosen = [], {}
    base = np.array([r["classical"] for r in rows])
    for learner in ("self-training", "fixmatch"):
        means = {}
        shared = set.intersection(*(set(r[learner]) for r in rows))   # what every seed has (a grid extended)
        for name in _ordered(shared):
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
             f"`{chosen['self-training']}`, FixMatch `{chosen['fixmatch']}`."
             + (f" Budget 1 is read from the knob sweep `{args.knobs[5:]}` (the same seeds, teacher and steps: the "
                "same classifiers; each seed's teacher accuracy checked equal)." if args.knob_sweep else "") + "\n\n"
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
    parser.add_argument("--knobs", default="grid", help="grid: the knob sweep; chosen: EvalConfig's knobs only; "
                        "from:NAME: the knobs results/NAME.json chose (chosen and from: are for a budget sweep)")
    parser.add_argument("--budgets", type=lambda s: tuple(float(b) for b in s.split(",")), default=(1.0,),
                        help="classifier budgets as multiples of the evaluation's steps, e.g. 1,2,4")
    numbers = lambda kind: lambda text: tuple(kind(x) for x in text.split(","))   # noqa: E731
    parser.add_argument("--st-thresholds", type=numbers(float), default=ST_THRESHOLDS)
    parser.add_argument("--st-rounds", type=numbers(int), default=ST_ROUNDS)
    parser.add_argument("--fm-thresholds", type=numbers(float), default=FM_THRESHOLDS)
    parser.add_argument("--fm-ratios", type=numbers(int), default=FM_RATIOS)
    parser.add_argument("--name", help="results/NAME.{json,md} (default: opponents_[budget_]DATASET)")
    parser.add_argument("--resume", action="store_true",
                        help="keep what results/NAME.json already holds (same teacher and budgets) and run the rest: "
                        "the seeds it lacks, and in the seeds it has the variants it lacks (a grid made larger)")
    args = parser.parse_args()
    if args.knobs not in ("grid", "chosen") and not args.knobs.startswith("from:"):
        parser.error(f"--knobs {args.knobs!r}: expected grid, chosen or from:NAME")
    args.name = args.name or f"opponents_{'budget_' if args.knobs != 'grid' else ''}{args.dataset}"
    grid = knob_grid(args) if args.knobs == "grid" else chosen_knobs(args.knobs)
    args.grid = grid
    pool, validation = diffaug.load_data(args.dataset, "train").split(1 - VALIDATION_SHARE, seed=1)
    from joblib import Parallel, delayed
    seeds = range(args.seed_start, args.seed_start + args.seeds)
    earlier = {r["seed"]: r for r in _done(args)} if args.resume else {}
    names = {learner: {_name(v, b) for v in grid[learner] for b in args.budgets} for learner in grid}
    complete = {s for s, r in earlier.items() if all(names[learner] <= set(r[learner]) for learner in names)}
    rows = [earlier[s] for s in sorted(complete)]
    seeds = [s for s in seeds if s not in complete]
    args.knob_sweep = _knob_sweep_rows(args, seeds)
    jobs = (delayed(one_seed)(pool, validation, args.per_class, s, args.classical, grid, args.budgets, earlier.get(s))
            for s in seeds)
    for row in Parallel(n_jobs=args.n_jobs, return_as="generator_unordered")(jobs):
        rows.append(_with_reused(row, args))
        rows.sort(key=lambda r: r["seed"])
        print(f"seed {row['seed']}: {row['seconds']} s", flush=True)
        report(args, rows, args.classical)


def _knob_sweep_rows(args, seeds) -> dict:
    """With `--knobs from:NAME` and budget 1 not asked for: {seed: NAME's row}, whose budget-1 scores of the chosen
    knobs are this sweep's budget 1 (the same seeds, subsets, teacher and steps: the same classifiers, so they are
    read, not trained again). Empty otherwise."""
    if not args.knobs.startswith("from:") or 1.0 in args.budgets:
        return {}
    source = _results(args.knobs[5:])
    rows = {r["seed"]: r for r in source["seeds"]}
    missing = sorted(set(seeds) - set(rows))
    if missing or source["classical"] != args.classical or source.get("per_class", args.per_class) != args.per_class:
        sys.exit(f"--knobs {args.knobs}: its sweep lacks seeds {missing} or ran another teacher or k; add budget 1 "
                 "to --budgets to train it here")
    return rows


def _with_reused(row: dict, args) -> dict:
    """`row` with the knob sweep's budget-1 scores of the chosen knobs (checked: the same teacher's accuracy)."""
    source = args.knob_sweep.get(row["seed"])
    if source is None:
        return row
    if source["classical"] != row["classical"]:
        sys.exit(f"seed {row['seed']}: the teacher scored {row['classical']} here and {source['classical']} in "
                 f"{args.knobs[5:]}: not the same classifiers, so its budget-1 scores cannot be reused")
    for learner, variants in args.grid.items():
        for v in variants:
            row[learner][_name(v)] = source[learner][_name(v)]
    return row


def _done(args) -> list:
    """The seeds an earlier run of this sweep finished (its results file), checked against this command."""
    path = RESULTS / f"{args.name}.json"
    if not path.exists():
        return []
    old = _results(args.name)
    same = {"classical": args.classical, "budgets": list(args.budgets)}
    found = {"classical": old.get("classical"), "budgets": old.get("budgets")}
    if found != same or old.get("per_class", args.per_class) != args.per_class:
        sys.exit(f"--resume: {path} was written by another command ({found}, not {same}); give another --name")
    rows = [r for r in old["seeds"] if args.seed_start <= r["seed"] < args.seed_start + args.seeds]
    print(f"--resume: {len(rows)} seed(s) from {path}", flush=True)
    return rows


if __name__ == "__main__":
    main()
