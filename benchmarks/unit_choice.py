"""The classical choice an `--unlabeled rest` unit makes inside its own labelled subset, made twice on the same subset:
at the unit's steps (`steps_for` of the labelled and unlabelled rows together, what every arm of the unit trains for:
10,000 on Fashion-MNIST at the default budget 2) and at the labelled rows' steps (what the same images cost in a
labelled-only evaluation: 1,000 at budget 2). The choice is 16 classifier fits on the labelled images alone, so at the
unit's steps it is ~40% of a Fashion-MNIST unit's work. Where the two choices differ, each winner's teacher (the
unit's classical arm: the labelled subset, the unit's steps) is scored on a validation split, so the table says what
the cheaper choice costs in accuracy, not only whether it agrees.

    python benchmarks/unit_choice.py --dataset fashion-mnist --per-class 10 --seeds 4 --budget 2

As benchmarks/opponents.py: 30% of the training pool (stratified, seed 1) is the validation split, never the test
split; the rest is the evaluation's pool; per seed the unit's subset of k labelled images per class is drawn from it
with the evaluation's stream (`unit_streams`), the remainder unlabelled (it sets the steps; no label of it is read).
Every fit's score and every teacher is written to results/unit_choice_<dataset>.{json,md} (or --name's) as it ends;
`--resume` runs only what the file lacks, so a killed run loses only the fits in flight (~15 minutes each on
Fashion-MNIST at the unit's steps).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffaug  # noqa: E402
from _common import RESULTS, write_results  # noqa: E402
from diffaug.classify import accuracy, fit_classifier  # noqa: E402
from diffaug.classify.policies import FOLDS, MENU, Policy, finalists, halving_winner, score, selection_fits, \
    selection_tasks  # noqa: E402
from diffaug.evaluation.cache import cpu_model  # noqa: E402
from diffaug.evaluation.config import EvalConfig  # noqa: E402
from diffaug.evaluation.unit import _rest  # noqa: E402
from diffaug.evaluation.unitplan import unit_streams  # noqa: E402
from diffaug.evaluation.verdict import t_given_split as paired_ci  # noqa: E402
from diffaug.workers import in_processes, sigterm_as_interrupt  # noqa: E402

VALIDATION_SHARE, SEED_START = 0.3, 500   # as opponents.py: validation seeds, no test split is scored
WHICH = ("unit", "labelled")              # the choice at the unit's steps, and at the labelled rows' steps


def steps_of(cfg: EvalConfig, subset, unlabeled) -> dict:
    return {"unit": cfg.steps_for(len(subset) + len(unlabeled)), "labelled": cfg.steps_for(len(subset))}


def fold_score(policy: str, fold: int, train, val, steps: int, cfg: EvalConfig) -> float:
    """One fit of the choice (policies.score, one thread, in a worker)."""
    return score(Policy.parse(policy), fold, train, val, steps, cfg.batch_size, cfg.hflip, "cpu", threads=1)


def teacher(subset, validation, policy: str, seeds, steps: int, cfg: EvalConfig) -> float:
    """The unit's classical arm with `policy`, scored on the validation split (one thread, in a worker)."""
    import torch
    torch.set_num_threads(1)
    model = fit_classifier(subset, Policy.parse(policy).build(subset.size, cfg.hflip), seeds, steps, cfg.batch_size,
                           "cpu")
    return accuracy(model, validation.images, validation.labels)


def keyed(key, fn, *args):
    """(key, fn(*args)): a job whose result names itself, so each is saved as it ends, not in submission order."""
    return key, fn(*args)


def run_seed(pool, validation, args, cfg: EvalConfig, row: dict, save) -> dict:
    """Seed `row["seed"]`'s two choices, fit by fit (each score kept, `save(row)`, as it ends: a killed run loses
    only the fits in flight), made as `policies.select` makes them (successive halving: every menu entry on the first
    fold, the best `selection_survivors` on the others), then the teachers of their winners."""
    from joblib import delayed
    streams = unit_streams(args.per_class, row["seed"], 1)
    subset = pool.subset(per_class=args.per_class, seed=streams["subset"])
    row["steps"] = steps_of(cfg, subset, _rest(pool, subset))
    tasks = selection_tasks(subset, 0)
    scores = row.setdefault("per_fold", {w: {p.label: [None] * FOLDS for p in MENU} for w in WHICH})

    def fits(stage: int) -> list:
        if stage == 0:
            return [(w, p.label, 0) for w in WHICH for p in MENU]
        return [(w, label, f) for w in WHICH
                for label in finalists({p: v[0] for p, v in scores[w].items()}, cfg.selection_survivors)
                for f in range(1, FOLDS)]

    for stage in (0, 1):
        todo = [(w, label, f) for w, label, f in fits(stage) if scores[w][label][f] is None]
        jobs = (delayed(keyed)((w, label, f), fold_score, label, f, *tasks[f][1:], row["steps"][w], cfg)
                for w, label, f in todo)
        for (w, label, f), acc in in_processes(args.n_jobs, jobs, ordered=False):   # kept as each ends
            scores[w][label][f] = acc
            save(row)
    for w in WHICH:
        done = {label: [x for x in v if x is not None] for label, v in scores[w].items()}
        row["winners"][w] = halving_winner(done, cfg.selection_survivors)
    todo = sorted(set(row["winners"].values()) - set(row["teachers"]))
    jobs = (delayed(keyed)(p, teacher, subset, validation, p, streams["replicates"][0], row["steps"]["unit"], cfg)
            for p in todo)
    for policy, acc in in_processes(min(args.n_jobs, max(1, len(todo))), jobs, ordered=False):
        row["teachers"][policy] = acc
        save(row)
    print(f"seed {row['seed']}: {row['winners']} (teachers {row['teachers']})", flush=True)
    return row


def report(args, rows: list, cfg: EvalConfig) -> None:
    done = [r for r in rows if len(r["winners"]) == len(WHICH) and set(r["winners"].values()) <= set(r["teachers"])]
    lines = []
    for r in done:
        a, b = (r["winners"][w] for w in WHICH)
        ta, tb = (100 * r["teachers"][p] for p in (a, b))
        means = " / ".join(f"{100 * np.mean(r['per_fold'][w][r['winners'][w]]):.1f}" for w in WHICH)
        lines.append(f"| {r['seed']} | `{a}` | `{b}` | {'yes' if a == b else 'no'} | {means} | {ta:.2f} | {tb:.2f} | "
                     f"{tb - ta:+.2f} |")
    same = sum(r["winners"]["unit"] == r["winners"]["labelled"] for r in done)
    diff = np.array([r["teachers"][r["winners"]["labelled"]] - r["teachers"][r["winners"]["unit"]] for r in done])
    if len(diff) and not diff.any():
        verdict = "the same teacher on every seed: no difference"
    elif len(diff) > 1:
        ci = paired_ci(diff)
        verdict = (f"the cheaper choice's teacher against the unit-steps choice's: {100 * ci['mean']:+.2f} "
                   f"[{100 * ci['ci_low']:+.2f}, {100 * ci['ci_high']:+.2f}] points (95% CI over seeds)")
    else:
        verdict = "too few seeds for an interval"
    steps = done[0]["steps"] if done else {}
    fits = selection_fits(cfg.selection_survivors)
    pending = len(rows) - len(done) + max(0, args.seeds - len(rows))
    work = (f" Each choice is {fits} fits: {fits * steps['unit']:,} and {fits * steps['labelled']:,} classifier "
            "steps." if steps else "")
    table = (f"Command: `{args.command}`. {args.dataset}, {args.per_class} labelled images per class per seed (the "
             f"unit's subset of the pool less a {VALIDATION_SHARE:.0%} validation split; the rest of the pool "
             f"unlabelled), classifier budget {args.budget:g}: the unit's classical choice (successive halving, as "
             f"`evaluate` makes it) at the unit's steps ({steps.get('unit')}) and at the labelled rows' steps "
             f"({steps.get('labelled')}); each winner's teacher trained at the unit's steps on the labelled subset "
             f"and scored on the validation split (never the test split).{work} **Same winner on {same} of "
             f"{len(done)} seeds; {verdict}.**" + (f" Interim: {pending} seed(s) still to run." if pending else "") +
             "\n\n| seed | winner, unit's steps | winner, labelled rows' steps | same | winners' fold means (%) | "
             "teacher (%), unit's winner | teacher (%), labelled's winner | difference (points) |\n"
             "| --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(lines))
    write_results(args.name, {"command": args.command, "budget": args.budget, "per_class": args.per_class,
                              "validation": f"{VALIDATION_SHARE:.0%} of the training pool, seed 1",
                              "same": same, "seeds_done": len(done), "interim": bool(pending), "seeds": rows}, table)


@sigterm_as_interrupt()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--seed-start", type=int, default=SEED_START)
    parser.add_argument("--budget", type=float, default=None,
                        help="classifier budget (default: the evaluation's with unlabelled images)")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--name", default=None, help="results file name (default unit_choice_<dataset>)")
    parser.add_argument("--resume", action="store_true", help="run only what the results file lacks")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    args.command = "python benchmarks/unit_choice.py " + " ".join(sys.argv[1:])
    args.name = args.name or f"unit_choice_{args.dataset}"
    cfg = EvalConfig(per_class=(args.per_class,), unlabeled="rest", classifier_budget=args.budget)
    args.budget = cfg.classifier_budget
    path = RESULTS / f"{args.name}.json"
    if path.exists() and not (args.resume or args.overwrite):
        sys.exit(f"{path} exists: --resume to extend it, --overwrite to start again")
    rows = {r["seed"]: r for r in json.loads(path.read_text())["seeds"]} if args.resume and path.exists() else {}
    if rows and json.loads(path.read_text())["budget"] != args.budget:
        sys.exit(f"--resume: {path} was made at another classifier budget")
    pool, validation = diffaug.load_data(args.dataset, "train").split(1 - VALIDATION_SHARE, seed=1)
    for seed in range(args.seed_start, args.seed_start + args.seeds):
        row = rows.setdefault(seed, {"seed": seed, "cpu": cpu_model(), "winners": {}, "teachers": {}})
        run_seed(pool, validation, args, cfg, row, lambda _: report(args, list(rows.values()), cfg))
    report(args, list(rows.values()), cfg)


if __name__ == "__main__":
    main()
