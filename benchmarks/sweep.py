"""Evaluation settings compared on a VALIDATION split carved out of the training pool (never the test split),
with the evaluation itself: each variant is one `diffaug.evaluate` run on the same pool, validation split and
seeds, so the units pair by seed (the same subsets, the same classifier seeds, the same classical arm and network:
chosen by the first run's cross-validation, then named for the others).

    # non-leaking augmentation of the generator's training images, and longer fits with it
    python benchmarks/sweep.py --tag gen_augment --per-class 10 --seeds 5 \\
        --variant '{}' --variant '{"gen_augment": 0.2}' --variant '{"gen_augment": 0.5}' \\
        --variant '{"gen_augment": 0.5, "gen_steps": 500}' --variant '{"gen_augment": 0.5, "gen_steps": 1000}'
    # with unlabelled images: the unlabelled share of the generator's batches, the pseudo-label threshold
    python benchmarks/sweep.py --tag unlabeled --set unlabeled='"rest"' --variant '{}' ...
    # the downstream classifier's size (a variant's "classifier" is evaluate's classifier=, not an EvalConfig field)
    python benchmarks/sweep.py --tag classifier_width --per-class 10 --seeds 5 --variant '{}' \
        --variant '{"classifier": "smallcnn(width=32)"}' --variant '{"classifier": "smallcnn(width=64)"}'
    # perturbed copies beside the classical policy: the strength range (the primary arm is any diffusion arm)
    python benchmarks/sweep.py --tag perturb_strength --set primary='"classical+perturb"' \
        --set arms='["classical", "classical+perturb", "classical+perturb-control"]' \
        --variant '{"strength": [0.3, 0.6]}' --variant '{"strength": [0.1, 0.3]}' ...

Reported per variant: the tuned classical arm's own accuracy (what chooses a knob every arm shares, such as the
classifier), the primary arm (classical+synthesize unless --set primary= names another) against the tuned classical
arm, its dose control, the self-training arm (with unlabelled images) and the first variant's primary arm (paired by
seed); synthesize alone; the generators' CAS, own-feature FID, recall, memorization and fit seconds (where a
synthesize pool was built); the perturbed copies the reference classifier still assigns to their label. Written
after every variant (a killed run keeps them):
results/sweep_<dataset>_<tag>.{json,md}. With `--work DIR` each variant's evaluation folder is kept in DIR, and the
same command again resumes from every unit a killed run finished (a variant's seconds are then those of the run that
finished it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffaug  # noqa: E402
from _common import write_results  # noqa: E402
from diffaug.evaluation.verdict import t_given_split as paired_ci  # noqa: E402
from diffaug.workers import sigterm_as_interrupt  # noqa: E402

VALIDATION_SHARE = 0.3   # of the training pool, stratified, seed 1 (as benchmarks/knobs.py and gen_budget.py)
SEED_START = 500         # validation seeds: no test split is scored, so they need not be fresh
ARMS = ("classical", "synthesize", "classical+synthesize", "classical+synthesize-control")
PRIMARY = "classical+synthesize"


@sigterm_as_interrupt()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--tag", required=True, help="names the results file")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed-start", type=int, default=SEED_START, help="more seeds for the same variants")
    parser.add_argument("--set", action="append", default=[], help="EvalConfig field=JSON value, every variant")
    parser.add_argument("--variant", action="append", required=True,
                        help="JSON object of EvalConfig fields; the first variant is the reference")
    parser.add_argument("--n-jobs", default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep each variant's evaluation folder here (vN/), so the same command again resumes "
                             "from the units it finished; default: a temporary folder, gone when the run ends")
    args = parser.parse_args()
    common = {"arms": ARMS, "primary": PRIMARY}   # --set arms= / primary= replace these
    for item in args.set:
        name, _, value = item.partition("=")
        common[name] = json.loads(value)
    if common.get("unlabeled"):
        common["arms"] = (*ARMS, "self-training")
    pool, validation = diffaug.load_data(args.dataset, "train").split(1 - VALIDATION_SHARE, seed=1)
    n_jobs = args.n_jobs if args.n_jobs == "auto" else int(args.n_jobs)
    classical, network, rows = common.pop("classical", "auto"), common.pop("classifier", None), {}
    with nullcontext(args.work) if args.work else tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(args.variant):
            variant = json.loads(text)
            options = {**common, **variant}
            if i:   # the first run's policy and network are named: nothing is chosen, so there is no menu
                options.pop("classifier_menu", None)
            t0 = time.perf_counter()
            result = diffaug.evaluate(pool, test=validation, per_class=[args.per_class], seeds=args.seeds,
                                      seed_start=args.seed_start, classical=classical, device=args.device,
                                      n_jobs=n_jobs, classifier=options.pop("classifier", network),
                                      progress=False, out_dir=Path(tmp) / f"v{i}", **options)
            # the first run's choices, named for the others: its classical policy and, where it chose one, its network
            classical = result.units[0]["classical"]
            chosen = result.config["classifier_selection"].get(str(args.per_class), {})
            network = network or chosen.get("winner")
            rows[json.dumps(variant)] = {"variant": variant, "seconds": time.perf_counter() - t0,
                                         "units": result.units}
            print(f"{json.dumps(variant)}: {rows[json.dumps(variant)]['seconds']:.0f} s", flush=True)
            report(args, rows, classical, network, common)


def _acc(units, arm) -> dict:
    return {u["seed"]: u["arms"][arm]["accuracy"] for u in units if arm in u["arms"]}


def _mean(values, fmt: str, scale: float = 1.0) -> str:
    """A column's mean over units, blank where no unit has it (no synthesize pool: no generator quality)."""
    values = [v for v in values if v is not None]
    return format(scale * float(np.mean(values)), fmt) if values else ""


def _label_kept(units) -> str:
    """Per strength, the share of perturbed copies the reference classifier still assigns to their label (%)."""
    kept = [u["perturb_label_kept"] for u in units if "perturb_label_kept" in u]
    return ", ".join(f"{s}: {100 * np.mean([k[s] for k in kept]):.0f}" for s in kept[0]) if kept else ""


def _ci(a: dict, b: dict) -> str:
    if not a or not b or a is b:
        return ""
    ci = paired_ci([a[s] - b[s] for s in sorted(a)])
    return f"{100 * ci['mean']:+.2f} [{100 * ci['ci_low']:+.2f}, {100 * ci['ci_high']:+.2f}]"


def report(args, rows: dict, classical: str, network: str | None, common: dict) -> None:
    primary_arm = common["primary"]
    reference = _acc(next(iter(rows.values()))["units"], primary_arm)
    lines = []
    for name, row in rows.items():
        units = row["units"]
        primary = _acc(units, primary_arm)
        q = [u.get("quality", {}) for u in units]
        lines.append(
            f"| `{name}` | {_mean(_acc(units, 'classical').values(), '.2f', 100)} | "
            f"{_ci(primary, _acc(units, 'classical'))} | {_ci(primary, _acc(units, primary_arm + '-control'))}"
            f" | {_ci(primary, _acc(units, 'self-training'))} | {_ci(primary, reference)} | "
            f"{_mean(_acc(units, 'synthesize').values(), '.1f', 100)} | "
            f"{_mean([x.get('cas') for x in q], '.1f', 100)} | "
            f"{_mean([x.get('fid_own') for x in q], '.3f')} | {_mean([x.get('recall') for x in q], '.2f')} | "
            f"{_mean([x.get('memorization_rate') for x in q], '.1f', 100)} | {_label_kept(units)} | "
            f"{_mean([u['generator']['fit_seconds'] for u in units], '.0f')} |")
    head = ("| variant | tuned classical (%) | primary vs tuned classical | vs its dose control | vs self-training "
            "| vs the first variant | synthesize alone (%) | CAS | FID (own) | recall | memorization (%) "
            "| label kept (%), per strength | fit s |")
    table = (f"Command: `python benchmarks/sweep.py {' '.join(sys.argv[1:])}`. {args.dataset}, {args.per_class} real "
             f"images per class, seeds {args.seed_start}..{args.seed_start + args.seeds - 1}; validation split: "
             f"{VALIDATION_SHARE:.0%} of the training pool (stratified, seed 1), never the test split. Settings of "
             f"every variant: `{json.dumps(common)}`. Primary arm: {primary_arm}; tuned classical: {classical}; "
             f"network (where a variant names none): {network or 'smallcnn'} (named with --set, or chosen by the first "
             "run's cross-validation). Gains in points, paired by seed, 95% CI.\n\n"
             + "\n".join([head, "|" + " --- |" * (head.count("|") - 1), *lines]))
    name = f"sweep_{args.dataset}_{args.tag}" + (f"_seeds{args.seed_start}" if args.seed_start != SEED_START else "")
    write_results(name,
                  {"validation": f"{VALIDATION_SHARE:.0%} of the training pool, seed 1", "classical": classical,
                   "common": common,
                   "variants": {k: {**v, "units": [{"seed": u["seed"], "quality": u.get("quality"),
                                                    "label_kept": u.get("perturb_label_kept"),
                                                    "generator": u["generator"], "kept": u.get("kept_after_filter"),
                                                    "accuracy": {a: r["accuracy"] for a, r in u["arms"].items()}}
                                                   for u in v["units"]]} for k, v in rows.items()}}, table)


if __name__ == "__main__":
    main()
