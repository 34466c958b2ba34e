"""How long to fit each unit's generator: memorization, sample quality and downstream accuracy against the fit
budget, measured on a VALIDATION split carved out of the training pool (never the test split).

    python benchmarks/gen_budget.py --dataset digits --per-class 10 --gen-steps 250,500,1000,2000 --seeds 3

Each budget is one `diffaug.evaluate` over (training pool minus validation) with the validation split as its
test set; finished units are cached under results/gen_budget_<dataset>/<steps>/, so a rerun resumes.
Writes results/gen_budget_<dataset>.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffaug  # noqa: E402
from diffaug.workers import sigterm_as_interrupt  # noqa: E402
from _common import RESULTS, write_results  # noqa: E402

VALIDATION_SHARE = 0.3   # of the training pool, stratified, seed 1


@sigterm_as_interrupt()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--per-class", default="10")
    parser.add_argument("--gen-steps", default="250,500,1000,2000")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    pool, validation = diffaug.load_data(args.dataset, "train").split(1 - VALIDATION_SHARE, seed=1)
    per_class = tuple(int(k) for k in args.per_class.split(","))
    rows, payload = [], {"validation": f"{VALIDATION_SHARE:.0%} of the {args.dataset} training pool, stratified, "
                                      "seed 1; generators and classifiers see only the rest", "budgets": {}}
    for steps in (int(s) for s in args.gen_steps.split(",")):
        t0 = time.perf_counter()
        result = diffaug.evaluate(pool, validation, per_class=per_class, seeds=args.seeds, gen_steps=steps,
                                  device=args.device, progress=False,
                                  out_dir=RESULTS / f"gen_budget_{args.dataset}" / str(steps))
        payload["budgets"][steps] = {"seconds": round(time.perf_counter() - t0, 1), "summary": result.summary}
        for k, s in result.summary.items():
            q, arms = s.get("quality", {}), s["arms"]
            gains = s["vs_classical"]
            fits = [u["generator"]["fit_seconds"] for u in result.units if str(u["k"]) == k]
            rows.append(f"| {k} | {steps} | {sum(fits) / len(fits):.0f} | "
                        f"{100 * q.get('memorization_rate', float('nan')):.1f}% | "
                        f"{100 * q.get('cas', float('nan')):.1f} | {q.get('fid_own', float('nan')):.3f} | "
                        f"{q.get('recall', float('nan')):.2f} | {100 * arms['classical']['mean']:.1f} | "
                        + " | ".join(f"{100 * gains[a]['mean']:+.2f} [{100 * gains[a]['ci_low']:+.2f}, "
                                     f"{100 * gains[a]['ci_high']:+.2f}]"
                                     for a in ("synthesize", "classical+synthesize")) + " |")
        head = ("| real / class | fit steps | fit s | memorization | CAS | FID (own) | recall | classical acc | "
                "synthesize vs classical | classical+synthesize vs classical |")
        table = (f"Command: `python benchmarks/gen_budget.py {' '.join(sys.argv[1:])}` (validation split: "
                 f"{payload['validation']}; {args.seeds} seeds; other settings default)\n\n"
                 + "\n".join([head, "|" + " --- |" * (head.count("|") - 1), *rows]))
        write_results(f"gen_budget_{args.dataset}", payload, table)   # after every budget: a killed run keeps them


if __name__ == "__main__":
    main()
