"""The regime choices of `evaluate` (the classical policy, the downstream network) made in full once per regime,
then each rule replayed on the same fold scores: the full rule beside its cheaper cut, with the fits each costs.

    python benchmarks/choice_cuts.py --out benchmarks/results/choice_cuts --data digits --per-class 10,50
    python benchmarks/choice_cuts.py --out benchmarks/results/choice_cuts_fashion --data fashion-mnist \
        --per-class 10,50

Everything here runs inside the training pool's folds (policies.selection_tasks); no test image is read. The
classical choice scores all 8 menu entries on all 3 folds (24 fits), the network choice every menu entry on the same
folds with the chosen policy, so each cut is judged on the very scores the full rule saw:

- successive halving of the classical menu: every entry on fold 0, the best `survivors` on folds 1 and 2;
- the network's one-standard-error rule with the standard error over 3 fold means (2 degrees of freedom), against
  the same rule with that error floored at the binomial error of the best network's accuracy over all validation
  images (`policies.network_winner`): a wider network must beat the cheaper one by more than the images can tell;
- the network menu walked cheapest first under that rule (`policies.walk`), which stops scoring at the first network
  no better than those before it.

Writes OUT.json and OUT.md with the CPU model, each choice's seconds and the fits each rule needs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import diffaug  # noqa: E402
from diffaug.classify.policies import Policy, halving_winner, network_winner, select, select_classifier, \
    selection_fits, walk  # noqa: E402
from diffaug.evaluation.cache import cpu_model  # noqa: E402
from diffaug.evaluation.config import CLASSIFIER_MENU, EvalConfig  # noqa: E402
from diffaug.evaluation.unitplan import selection_rows  # noqa: E402
from diffaug.workers import sigterm_as_interrupt  # noqa: E402


def replay(classical: dict, network: dict, n_val: int, survivors: int) -> dict:
    """Each rule's winner on the full choices' fold scores, and the fits each rule costs."""
    per_fold = classical["per_fold"]
    half = halving_winner(per_fold, survivors)
    means = classical["mean"]
    full = {spec: network["per_fold"][spec] for spec in network["menu"]}
    old_net = network_winner(full, n_val=None)
    new_net = network_winner(full, n_val=n_val)
    walked = walk(tuple(full), full.__getitem__, n_val)   # the walk, cheapest first, on the full choice's scores
    walked = {**network_winner(walked, n_val), "scored": list(walked)}
    return {"classical": {"full": classical["winner"], "halving": half, "same": half == classical["winner"],
                          "full_mean": means[classical["winner"]], "halving_mean": means[half],
                          "fits_full": selection_fits(None), "fits_halving": selection_fits(survivors)},
            "network": {"fold_se": old_net, "floored_se": new_net, "walk": walked,
                        "same": old_net["winner"] == new_net["winner"] == walked["winner"], "means": network["mean"]}}


def replayed(record: dict) -> dict:
    """`record` (an OUT.json) with every rule replayed again on its fold scores."""
    for row in record["rows"]:
        classical = {"per_fold": row["classical_per_fold"], "winner": row["classical"]["full"],
                     "mean": {label: float(np.mean(v)) for label, v in row["classical_per_fold"].items()}}
        network = {"menu": list(row["network_per_fold"]), "per_fold": row["network_per_fold"],
                   "mean": {spec: float(np.mean(v)) for spec, v in row["network_per_fold"].items()}}
        row.update(replay(classical, network, row["validation_images"], record["survivors"]))
    return record


@sigterm_as_interrupt()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--replay", action="store_true", help="replay the rules on OUT.json's fold scores, fit nothing")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--per-class", default="10,50")
    parser.add_argument("--survivors", type=int, default=4)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    if args.replay:
        record = replayed(json.loads(args.out.with_suffix(".json").read_text()))
        args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(markdown(record))
        return
    train = diffaug.load_data(args.data, "train")
    rows = []
    for k in (int(x) for x in args.per_class.split(",")):
        cfg = EvalConfig(per_class=(k,))
        steps = cfg.steps_for(selection_rows(cfg, k, train))
        threads = 1 if args.n_jobs > 1 else None
        t0 = time.perf_counter()
        classical = select(train, k, steps, cfg.batch_size, cfg.hflip, "cpu", n_jobs=args.n_jobs, threads=threads,
                           progress=True)
        t1 = time.perf_counter()
        network = {"menu": list(CLASSIFIER_MENU), "per_fold": {CLASSIFIER_MENU[0]: classical["per_fold"][
            classical["winner"]]}}
        for spec in CLASSIFIER_MENU[1:]:   # every entry, one at a time: the full scores the rules are replayed on
            one = select_classifier(train, k, Policy.parse(classical["winner"]), (spec,), steps, cfg.batch_size,
                                    cfg.hflip, "cpu", n_jobs=args.n_jobs, threads=threads, progress=True)
            network["per_fold"][spec] = one["per_fold"][spec]
        network["mean"] = {spec: float(np.mean(v)) for spec, v in network["per_fold"].items()}
        t2 = time.perf_counter()
        row = {"k": k, "steps": steps, "validation_images": len(train), "classical_seconds": round(t1 - t0, 1),
               "network_seconds": round(t2 - t1, 1), "classical_per_fold": classical["per_fold"],
               "network_per_fold": network["per_fold"], **replay(classical, network, len(train), args.survivors)}
        rows.append(row)
        print(json.dumps({key: row[key] for key in ("k", "classical", "network")}, default=str), flush=True)
    record = {"cpu": cpu_model(), "date": time.strftime("%Y-%m-%d"), "data": args.data, "survivors": args.survivors,
              "n_jobs": args.n_jobs, "command": "python " + " ".join(sys.argv), "rows": rows}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(record))


def markdown(record: dict) -> str:
    pct = lambda x: f"{100 * x:.2f}"   # noqa: E731
    lines = [f"# The regime choices, full and cut, on the same fold scores: {record['data']}", "",
             f"`{record['command']}` on {record['cpu']}, {record['date']} (n_jobs {record['n_jobs']}). Validation "
             "folds of the training pool only." + (f" {record['note']}" if record.get("note") else ""), "",
             "| k | classical (24 fits) | halving (16 fits) | same | mean full / halving | network: fold SE rule | "
             "floored SE rule | walk (floored SE) | same | network means | seconds (classical, network) |",
             "|" + "---|" * 11]
    for r in record["rows"]:
        c, n = r["classical"], r["network"]
        means = ", ".join(f"{name.replace('smallcnn', 'w16').replace('w16(width=', 'w').rstrip(')')} "
                          f"{pct(v)}" for name, v in n["means"].items())
        lines.append(f"| {r['k']} | {c['full']} | {c['halving']} | {'yes' if c['same'] else 'no'} | "
                     f"{pct(c['full_mean'])} / {pct(c['halving_mean'])} | {n['fold_se']['winner']} "
                     f"(SE {pct(n['fold_se']['se'])}) | {n['floored_se']['winner']} (SE {pct(n['floored_se']['se'])}) "
                     f"| {n['walk']['winner']} ({len(n['walk']['scored'])} of {len(n['means'])} scored) "
                     f"| {'yes' if n['same'] else 'no'} | {means} | {r['classical_seconds']}, {r['network_seconds']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
