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
The work is cut into tasks, each written to results/opponents_<dataset>.{json,md} (or --name's) as it ends: one per
seed, budget and FixMatch variant, and one per seed, budget and self-training threshold (its rounds share their
students: round r + 1 starts from round r's, so rounds 1 to 3 are one task of three students, not six). A killed run
keeps every task it finished, and the same command with --resume runs only what the file lacks (missing seeds, a
larger grid's new variants), on this machine or another. (On Fashion-MNIST a seed of the 3 x 3 and 2 x 3 grids is
about 40 fits of ~340 s on one core of a 2-core CPU: four hours, longer than a session; its largest task, FixMatch at
ratio 3, is seven fits.) The table covers the seeds with a teacher and the variants all of them have; while some
of the grid is still to run it says so, and its choice is interim. Each seed's teacher is trained again by every
self-training task (it is deterministic on one machine: a different score there means different classifiers, and the
run refuses to mix them; another machine's arithmetic may score it differently, and the row keeps every machine's
score).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffaug  # noqa: E402
from _common import RESULTS, write_results  # noqa: E402
from diffaug.classify import FixMatch, accuracy, fit_classifier, self_train  # noqa: E402
from diffaug.classify.policies import Policy  # noqa: E402
from diffaug.evaluation.cache import cpu_model  # noqa: E402
from diffaug.evaluation.config import EvalConfig  # noqa: E402
from diffaug.evaluation.cost import step_passes  # noqa: E402
from diffaug.evaluation.unitplan import unit_streams  # noqa: E402
from diffaug.evaluation.verdict import t_given_split as paired_ci  # noqa: E402
from diffaug.evaluation.unit import _rest  # noqa: E402
from diffaug.workers import sigterm_as_interrupt  # noqa: E402

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
        sweep = _results(source[5:])
        if sweep.get("interim"):
            raise SystemExit(f"--knobs {source}: that sweep is not finished (its table says what it lacks); run it "
                             "again with --resume first")
        chosen = sweep["chosen"]
        return {learner: [{key: v for key, v in _knobs(name).items() if key != "budget"}]
                for learner, name in chosen.items()}
    cfg = EvalConfig()
    return {"self-training": [{"threshold": cfg.self_training_threshold, "rounds": cfg.self_training_rounds}],
            "fixmatch": [{"threshold": cfg.fixmatch_threshold, "ratio": cfg.fixmatch_ratio}]}


def seed_tasks(seed: int, grid: dict, budgets: tuple, row: dict | None) -> list[dict]:
    """What `seed` still lacks (`row`: what earlier tasks recorded for it, or None): one task per budget and
    self-training threshold with rounds to score, one per budget and FixMatch variant, and a teacher-only task where
    nothing else would score the teacher."""
    have = {learner: set((row or {}).get(learner, {})) for learner in ("self-training", "fixmatch")}
    tasks = []
    for b in budgets:
        for threshold in dict.fromkeys(v["threshold"] for v in grid["self-training"]):
            rounds = sorted(v["rounds"] for v in grid["self-training"] if v["threshold"] == threshold
                            and _name(v, b) not in have["self-training"])
            if rounds:
                tasks.append({"seed": seed, "learner": "self-training", "threshold": threshold, "rounds": rounds,
                              "budget": b})
        tasks += [{"seed": seed, "learner": "fixmatch", "variant": v, "budget": b} for v in grid["fixmatch"]
                  if _name(v, b) not in have["fixmatch"]]
    if "classical" not in (row or {}) and not any(t["learner"] == "self-training" for t in tasks):
        tasks.insert(0, {"seed": seed, "learner": None})
    return tasks


def work(task: dict, pool_size: int, k: int, classes: int) -> float:
    """A task's cost in supervised fits of the evaluation's steps (cost.step_passes: a FixMatch step is 1 + 2 x ratio
    batches; the self-training task fits its teacher and max(rounds) students, labelling the pool before each)."""
    cfg = EvalConfig(per_class=(k,))
    steps, unlabeled = cfg.steps_for(pool_size), pool_size - k * classes
    if task["learner"] == "fixmatch":
        return task["budget"] * step_passes(replace(cfg, fixmatch_ratio=task["variant"]["ratio"]), "fixmatch",
                                            steps, unlabeled)
    if task["learner"] == "self-training":
        students = replace(cfg, self_training_rounds=max(task["rounds"]))
        return 1 + task["budget"] * step_passes(students, "self-training", steps, unlabeled)
    return 1.0


def run_task(pool, validation, k: int, classical: str, task: dict) -> tuple[dict, dict]:
    """One task on the seed's subset, every classifier scored on the validation split: the classical teacher (what
    self-training's pseudo-labels come from), then the task's self-training rounds or FixMatch variant. A budget b
    trains for b x the evaluation's steps (the teacher at budget 1, as in a unit). Returns the task and its scores."""
    import torch
    torch.set_num_threads(1)
    cfg = EvalConfig(per_class=(k,))
    seed, learner, b = task["seed"], task["learner"], task.get("budget", 1)
    streams = unit_streams(k, seed, 1)
    subset = pool.subset(per_class=k, seed=streams["subset"])
    unlabeled = _rest(pool, subset)
    steps = cfg.steps_for(len(subset) + len(unlabeled))
    n, seeds = int(round(b * steps)), streams["replicates"][0]
    aug = Policy.parse(classical).build(pool.size)
    score = lambda m: accuracy(m, validation.images, validation.labels)   # noqa: E731
    t0 = time.perf_counter()
    out = {"seed": seed, "steps": steps, "cpu": cpu_model(), "self-training": {}, "fixmatch": {}}
    if learner != "fixmatch":
        teacher = fit_classifier(subset, aug, seeds, steps, cfg.batch_size, "cpu")
        out["classical"] = score(teacher)
    if learner == "self-training":
        # round r's student is the teacher of round r + 1, with the same seeds: the students of one run of
        # max(rounds) rounds are exactly those of self_train(rounds=r) for each r (each round trained once)
        model, kept = teacher, []
        for r in range(1, max(task["rounds"]) + 1):
            model, _, history = self_train(subset, unlabeled, model, aug, seeds, n, cfg.batch_size, "cpu",
                                           threshold=task["threshold"], rounds=1)
            kept.append(history[0]["kept"])
            if r in task["rounds"]:
                out[learner][_name({"threshold": task["threshold"], "rounds": r}, b)] = {
                    "accuracy": score(model), "kept": list(kept), "cpu": out["cpu"]}
    elif learner == "fixmatch":
        model, mask = FixMatch(**task["variant"]).train(subset, unlabeled, seeds, n, cfg.batch_size, "cpu")
        out[learner][_name(task["variant"], b)] = {"accuracy": score(model), "mask_rate": mask, "cpu": out["cpu"]}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return task, out


def merge(row: dict | None, result: dict) -> dict:
    """`row` (a seed's record so far, or None) with one task's `result` added; its teacher checked against the
    scores earlier tasks recorded on the same machine."""
    row = row or {"seed": result["seed"], "steps": result["steps"], "self-training": {}, "fixmatch": {},
                  "seconds": 0.0}
    if row["steps"] != result["steps"]:
        raise SystemExit(f"seed {row['seed']}: {result['steps']} steps here, {row['steps']} before: another "
                         "evaluation budget, so the run cannot be extended")
    if "classical" in result:
        teachers = row.setdefault("teachers", {})
        earlier = teachers.get(result["cpu"])
        if earlier is not None and earlier != result["classical"]:
            raise SystemExit(f"--resume, seed {row['seed']}: the teacher scored {result['classical']} here and "
                             f"{earlier} before on this CPU: not the same classifiers, so the run cannot be extended")
        teachers[result["cpu"]] = result["classical"]
        row.setdefault("classical", result["classical"])   # the first machine's: every variant is paired with it
    for learner in ("self-training", "fixmatch"):
        row[learner].update(result[learner])
    row["seconds"] = round(row["seconds"] + result["seconds"], 1)
    return row


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
    """The table over the command's seeds whose teacher is scored and the variants all of them have; `chosen` by
    those. The JSON keeps every row the file had, a row without its teacher's score yet or outside --seeds included."""
    every = sorted(rows, key=lambda r: r["seed"])
    rows = [r for r in every if "classical" in r and r["seed"] in args.seed_list]
    lines, chosen = [], {}
    base = np.array([r["classical"] for r in rows])
    for learner in ("self-training", "fixmatch"):
        means = {}
        shared = set.intersection(*(set(r[learner]) for r in rows)) if rows else set()   # a grid being extended
        for name in _ordered(shared):
            acc = np.array([r[learner][name]["accuracy"] for r in rows])
            means[name] = acc.mean()
            ci = paired_ci(acc - base)
            lines.append(f"| {learner} | `{name}` | {100 * acc.mean():.2f} | {100 * ci['mean']:+.2f} "
                         f"[{100 * ci['ci_low']:+.2f}, {100 * ci['ci_high']:+.2f}] |")
        chosen[learner] = max(means, key=lambda n: (means[n], -list(means).index(n))) if means else None
    todo = {r["seed"]: len(seed_tasks(r["seed"], args.grid, args.budgets, r)) for r in rows}
    todo = {seed: n for seed, n in todo.items() if n}
    missing = sorted(set(args.seed_list) - {r["seed"] for r in rows})
    notes = ([f"tasks still to run on seeds {sorted(todo)} ({sum(todo.values())} in all)"] if todo else []) + (
        [f"seeds {missing} without a teacher yet"] if missing else [])
    interim = (f" **Interim**: {'; '.join(notes)}; the table has only what every listed seed has, and the choice "
               "may move." if notes else "")
    machines = sorted({cpu for r in rows for cpu in r.get("teachers", {})})
    teachers = "; ".join(f"seed {r['seed']}: " + ", ".join(f"{100 * v:.2f} ({cpu})" for cpu, v in r["teachers"].items())
                         for r in rows if len(set(r.get("teachers", {}).values())) > 1)
    table = (f"Command: `python benchmarks/opponents.py {' '.join(sys.argv[1:])}`. {args.dataset}, {args.per_class} "
             f"labelled images per class, the rest of the pool unlabelled; seeds {[r['seed'] for r in rows]}; "
             f"validation split: {VALIDATION_SHARE:.0%} of the training pool (stratified, seed 1), never the test "
             f"split; classical policy `{classical}` (validation accuracy "
             f"{100 * base.mean() if rows else float('nan'):.2f}%); one classifier per variant and seed, "
             f"{rows[0]['steps'] if rows else '?'} steps (`budget=b`: b x that many). Each learner's knobs are chosen "
             f"by its own mean validation accuracy (ties: the earlier row). Chosen: self-training "
             f"`{chosen['self-training']}`, FixMatch `{chosen['fixmatch']}`.{interim}"
             + (f" Run on {', '.join(machines)}." if len(machines) > 1 else "")
             + (f" The teacher (each seed's `classical`, the first machine's) scored differently on another "
                f"machine's arithmetic: {teachers}." if teachers else "")
             + (f" Budget 1 is read from the knob sweep `{args.knobs[5:]}` (the same seeds, teacher and steps: the "
                "same classifiers; each seed's teacher accuracy checked equal on a CPU both ran on)."
                if args.knob_sweep else "") + "\n\n"
             "| learner | knobs | validation accuracy (%) | vs classical (points, 95% CI) |\n"
             "| --- | --- | --- | --- |\n" + "\n".join(lines))
    write_results(args.name, {"per_class": args.per_class, "budgets": args.budgets,
                              "validation": f"{VALIDATION_SHARE:.0%} of the training pool, seed 1",
                              "classical": classical, "chosen": chosen, "interim": bool(notes),
                              "seeds": every}, table)


@sigterm_as_interrupt()
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
                        "the seeds it lacks, and in the seeds it has the tasks it lacks (a grid made larger, a run "
                        "killed part-way)")
    parser.add_argument("--overwrite", action="store_true", help="start again, replacing results/NAME.*")
    args = parser.parse_args()
    if args.knobs not in ("grid", "chosen") and not args.knobs.startswith("from:"):
        parser.error(f"--knobs {args.knobs!r}: expected grid, chosen or from:NAME")
    args.name = args.name or f"opponents_{'budget_' if args.knobs != 'grid' else ''}{args.dataset}"
    args.grid = knob_grid(args) if args.knobs == "grid" else chosen_knobs(args.knobs)
    args.seed_list = list(range(args.seed_start, args.seed_start + args.seeds))
    pool, validation = diffaug.load_data(args.dataset, "train").split(1 - VALIDATION_SHARE, seed=1)
    from joblib import delayed
    from diffaug.workers import in_processes
    if not args.resume and not args.overwrite and (RESULTS / f"{args.name}.json").exists():
        sys.exit(f"{RESULTS / args.name}.json exists: --resume to extend it, --overwrite to start again")
    rows = {r["seed"]: r for r in _done(args)} if args.resume else {}
    tasks = [t for s in args.seed_list for t in seed_tasks(s, args.grid, args.budgets, rows.get(s))]
    for t in tasks:
        t["work"] = work(t, len(pool), args.per_class, pool.num_classes)
    tasks.sort(key=lambda t: t["work"])   # the cheapest first: a session's end interrupts the fewest fits
    args.knob_sweep = _knob_sweep_rows(args, sorted({t["seed"] for t in tasks}))
    left = sum(t["work"] for t in tasks)
    steps = EvalConfig(per_class=(args.per_class,)).steps_for(len(pool))
    print(f"{len(tasks)} task(s) to run, {left:.1f} fits of {steps} steps in all", flush=True)
    jobs = (delayed(run_task)(pool, validation, args.per_class, args.classical, t) for t in tasks)
    for task, result in in_processes(args.n_jobs, jobs, ordered=False):
        seed = result["seed"]
        rows[seed] = _with_reused(merge(rows.get(seed), result), args)
        left -= task["work"]
        done = ", ".join(sorted(result["self-training"]) + sorted(result["fixmatch"])) or "the teacher"
        print(f"seed {seed}: {done} in {result['seconds']} s ({result['seconds'] / task['work']:.0f} s a fit); "
              f"{max(left, 0):.1f} fits to go", flush=True)
        report(args, list(rows.values()), args.classical)


def _knob_sweep_rows(args, seeds) -> dict:
    """With `--knobs from:NAME` and budget 1 not asked for: {seed: NAME's row}, whose budget-1 scores of the chosen
    knobs are this sweep's budget 1 (the same seeds, subsets, teacher and steps: the same classifiers, so they are
    read, not trained again). Empty otherwise."""
    if not args.knobs.startswith("from:") or 1.0 in args.budgets:
        return {}
    source = _results(args.knobs[5:])
    rows = {r["seed"]: _with_teachers(r, source) for r in source["seeds"]}
    missing = sorted(set(seeds) - set(rows))
    if missing or source["classical"] != args.classical or source.get("per_class", args.per_class) != args.per_class:
        sys.exit(f"--knobs {args.knobs}: its sweep lacks seeds {missing} or ran another teacher or k; add budget 1 "
                 "to --budgets to train it here")
    return rows


def _with_reused(row: dict, args) -> dict:
    """`row` with the knob sweep's budget-1 scores of the chosen knobs, checked to be the same classifiers: the
    teacher scored the same on every CPU both runs trained it on, and they share one (another CPU's arithmetic gives
    another teacher, so scores from different machines alone prove nothing)."""
    source = args.knob_sweep.get(row["seed"])
    if source is None or "classical" not in row:
        return row
    ours, theirs = row.get("teachers", {}), source.get("teachers", {})
    shared = sorted(set(ours) & set(theirs))
    if not shared or any(ours[cpu] != theirs[cpu] for cpu in shared):
        sys.exit(f"seed {row['seed']}: the teacher scored {ours} here and {theirs} in {args.knobs[5:]}: not shown "
                 "to be the same classifiers, so its budget-1 scores cannot be reused; add budget 1 to --budgets")
    for learner, variants in args.grid.items():
        for v in variants:
            row[learner][_name(v)] = source[learner][_name(v)]
    return row


def _with_teachers(row: dict, results: dict) -> dict:
    """`row` of `results` with its teacher scores by CPU (a file written before tasks recorded their machine: the
    file's machine)."""
    if "classical" in row:
        row.setdefault("teachers", {results["machine"]["cpu"]: row["classical"]})
    return row


def _done(args) -> list:
    """The seeds' rows an earlier run of this sweep wrote (its results file), checked against this command."""
    path = RESULTS / f"{args.name}.json"
    if not path.exists():
        return []
    old = _results(args.name)
    same = {"classical": args.classical, "budgets": list(args.budgets)}
    found = {"classical": old.get("classical"), "budgets": old.get("budgets")}
    if found != same or old.get("per_class", args.per_class) != args.per_class:
        sys.exit(f"--resume: {path} was written by another command ({found}, not {same}); give another --name")
    rows = [_with_teachers(r, old) for r in old["seeds"]]   # those outside --seeds too: kept, not in the table
    print(f"--resume: {sum(r['seed'] in args.seed_list for r in rows)} of the seeds from {path}", flush=True)
    return rows


if __name__ == "__main__":
    main()
