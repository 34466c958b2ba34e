"""The long-tail arms' own knobs, each chosen by THAT arm's validation balanced accuracy (never by another arm's):
the logit-adjusted loss's tau, the share of each class's gap the rebalancing rows fill, and both for the stack;
then the primary arm of the confirmatory run: the diffusion arm that scores higher here.

    python benchmarks/longtail.py --per-class 50 --imbalance 10 --seeds 5

A validation split (30% of the training pool, stratified, seed 1: as sweep.py and opponents.py) is scored; the rest
of the pool is the evaluation's pool: per seed, a long-tailed subset drawn from it exactly as a unit draws one (the
seed's streams, data.longtail_counts), the classical policy and then the downstream network chosen on the pool by
the evaluation's own choice (evaluation.choices.choose_regime: the same imbalance, halving and network menu), every
variant trained with that network and the evaluation's budget. Writes results/longtail_<dataset>.{json,md} after
every seed (a killed run keeps what it has).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffaug  # noqa: E402
from _common import write_results  # noqa: E402
from diffaug.classify.training import class_recalls, fit_classifier  # noqa: E402
from diffaug.classify.networks import resolve_classifier  # noqa: E402
from diffaug.classify.policies import Policy  # noqa: E402
from diffaug.evaluation.choices import choose_regime  # noqa: E402
from diffaug.evaluation.config import REBALANCE, EvalConfig  # noqa: E402
from diffaug.evaluation.unitplan import counts_for, unit_streams  # noqa: E402
from diffaug.evaluation.metrics import shot_groups  # noqa: E402
from diffaug.evaluation.verdict import t_given_split as paired_ci  # noqa: E402
from diffaug.evaluation.unit import _rebalance  # noqa: E402
from diffaug.workers import sigterm_as_interrupt  # noqa: E402

VALIDATION_SHARE, SEED_START = 0.3, 500   # validation seeds; no test split is scored
TAUS, FILLS = (0.5, 1.0, 1.5, 2.0), (0.5, 1.0)


def one_seed(pool, validation, k: int, ratio: float, seed: int, classical: str, network: str) -> dict:
    import torch
    torch.set_num_threads(1)
    cfg = EvalConfig(per_class=(k,), imbalance=ratio)
    streams = unit_streams(k, seed, cfg.classifier_repeats)
    subset = pool.subset(per_class=counts_for(cfg, k, pool.num_classes, streams["subset"]), seed=streams["subset"])
    groups = shot_groups(subset.class_counts())
    steps, seeds = cfg.steps_for(len(subset)), streams["replicates"][0]
    aug, factory = Policy.parse(classical).build(pool.size), resolve_classifier(network)

    def score(**options) -> dict:
        model = fit_classifier(subset, aug, seeds, steps, cfg.batch_size, "cpu", factory=factory, **options)
        recall = class_recalls(model, validation.images, validation.labels, pool.num_classes)
        return {"balanced_accuracy": float(np.mean(recall)), "few": float(np.mean([recall[c] for c in groups["few"]]))}

    t0 = time.perf_counter()
    out = {"seed": seed, "steps": steps, "class_counts": subset.class_counts(), "classical": score(),
           "resample": score(balanced=True),
           "logit-adjust": {f"tau={t:g}": score(logit_adjustment=t) for t in TAUS},
           "classical+rebalance": {}, "classical+rebalance-control": {}, "logit-adjust+rebalance": {}}
    gen = diffaug.fit(subset, cfg.preset, cfg.gen_steps_for(len(subset)), seed=streams["generator"], device="cpu",
                      progress=False, batch_size=cfg.gen_batch_size, distributed=False)
    for fill in FILLS:
        pools = _rebalance(gen, subset, replace(cfg, rebalance_fill=fill), streams["pools"], "cpu")
        share = pools["_rebalance"]["share"]
        out["classical+rebalance"][f"fill={fill:g}"] = score(pool=pools[REBALANCE], share=share)
        out["classical+rebalance-control"][f"fill={fill:g}"] = score(pool=pools[REBALANCE + "-real"], share=share)
        for t in TAUS:
            out["logit-adjust+rebalance"][f"tau={t:g},fill={fill:g}"] = score(pool=pools[REBALANCE], share=share,
                                                                               logit_adjustment=t)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


TUNED = ("logit-adjust", "classical+rebalance", "logit-adjust+rebalance")
SHOWN = ("classical+rebalance-control",)   # a dose control takes its arm's fill: shown, not tuned
DIFFUSION = ("classical+rebalance", "logit-adjust+rebalance")


def chose(network: dict | None) -> str:
    """The report's words for the network the variants trained (runs before the menu trained the default one)."""
    if network is None:
        return ", the default network (written before this script chose one as evaluate does)"
    return (f", then the network `{network['winner']}` from {network['menu']} with that policy (chosen on the pool "
            f"as evaluate does, {network['seconds']} s)")


def report(args, rows: list, selection: dict, network: dict | None, made_on: dict | None = None) -> None:
    """The results file and its table; `made_on`: the machine the rows were made on (--report-only)."""
    base = np.array([r["classical"]["balanced_accuracy"] for r in rows])
    lines, chosen, best = [], {}, {}

    def line(arm, name, cell):
        acc = np.array([c["balanced_accuracy"] for c in cell])
        few = np.mean([c["few"] for c in cell])
        ci = paired_ci(acc - base)
        gain = (f"{100 * ci['mean']:+.2f} [{100 * ci['ci_low']:+.2f}, {100 * ci['ci_high']:+.2f}]"
                if arm != "classical" else "-")
        lines.append(f"| {arm} | `{name}` | {100 * acc.mean():.2f} | {100 * few:.1f} | {gain} |")
        return acc.mean()

    for arm in ("classical", "resample"):
        best[arm] = line(arm, "-", [r[arm] for r in rows])
    for arm in TUNED + SHOWN:
        means = {name: line(arm, name, [r[arm][name] for r in rows]) for name in rows[0][arm]}
        if arm in TUNED:
            chosen[arm] = max(means, key=lambda n: (means[n], -list(means).index(n)))   # ties: the earlier row
            best[arm] = means[chosen[arm]]
    primary = max(DIFFUSION, key=lambda a: (best[a], -DIFFUSION.index(a)))
    seeds = [r["seed"] for r in rows]
    table = (f"Command: `{args.command}`. {args.dataset}, long-tailed "
             f"subsets ({args.per_class} head images, imbalance {args.imbalance:g}, class order per seed) of the pool; "
             f"seeds {seeds}; validation split: {VALIDATION_SHARE:.0%} of the training pool (stratified, seed 1), "
             f"never the test split; classical policy `{selection['winner']}` (chosen on the pool as evaluate does, "
             f"{selection['seconds']} s){chose(network)}; one classifier per variant and seed, "
             f"{rows[0]['steps']} steps. Validation "
             "balanced accuracy (%) and the few-shot third's accuracy. Each arm's knobs are chosen by its own mean "
             f"validation balanced accuracy (ties: the earlier row); the dose control takes its arm's fill. Chosen: "
             f"{chosen}. The diffusion arm that scores higher, and so the primary arm: **{primary}**.\n\n| arm | "
             "knobs | validation balanced accuracy (%) | few-shot classes (%) | vs classical (points, 95% CI) |\n"
             "| --- | --- | --- | --- | --- |\n" + "\n".join(lines))
    write_results(f"longtail_{args.dataset}", {
        **({"machine": made_on} if made_on else {}), "command": args.command,
        "validation": f"{VALIDATION_SHARE:.0%} of the training pool, seed 1",
        "classical": selection, "network": network,
        "chosen": chosen, "primary": primary, "means": best, "seeds": rows}, table)


@sigterm_as_interrupt()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the results file")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--imbalance", type=float, default=10.0)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed-start", type=int, default=SEED_START)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    args.command = f"python benchmarks/longtail.py {' '.join(sys.argv[1:])}"   # what the report says was run
    if args.report_only:   # the run's own settings, from the command its results file keeps
        import json
        import shlex
        saved = json.loads((Path(__file__).parent / "results" / f"longtail_{args.dataset}.json").read_text())
        if "command" not in saved:
            raise SystemExit(f"longtail_{args.dataset}.json was written before results kept their command: "
                             "its settings are unknown, so its report is not rewritten")
        args = parser.parse_args(shlex.split(saved["command"])[2:])
        args.command = saved["command"]
        return report(args, saved["seeds"], saved["classical"], saved.get("network"), saved["machine"])
    pool, validation = diffaug.load_data(args.dataset, "train").split(1 - VALIDATION_SHARE, seed=1)
    cfg = EvalConfig(per_class=(args.per_class,), imbalance=args.imbalance)
    selection, network = choose_regime(pool, args.per_class, cfg, n_jobs=args.n_jobs, threads=1)
    print(f"classical: {selection['winner']} ({selection['seconds']} s)", flush=True)
    print(f"network: {network['winner']} ({network['seconds']} s)", flush=True)
    from joblib import delayed
    from diffaug.workers import in_processes
    seeds = range(args.seed_start, args.seed_start + args.seeds)
    rows = []
    jobs = (delayed(one_seed)(pool, validation, args.per_class, args.imbalance, s, selection["winner"],
                              network["winner"]) for s in seeds)
    for row in in_processes(args.n_jobs, jobs, ordered=False):
        rows.append(row)
        rows.sort(key=lambda r: r["seed"])
        print(f"seed {row['seed']}: {row['seconds']} s", flush=True)
        report(args, rows, selection, network)


if __name__ == "__main__":
    main()
