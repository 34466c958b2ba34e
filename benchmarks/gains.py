"""Issue 4's headline: downstream gain of diffusion augmentation over classical augmentation, per regime,
with paired 95% CIs over seeds (the protocol of benchmarks/README.md section 1).

    python benchmarks/gains.py --dataset digits --per-class 10,50,100 --seeds 5
    python benchmarks/gains.py --dataset fashion-mnist --per-class 10,50,100 --seeds 5 --device cuda

Resumable: every finished (regime, seed) run is cached in benchmarks/results/gains_<dataset>/runs/; rerun
the same command to continue. Any EvalConfig field can be set with --set name=value (e.g. --set guidance=3).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffaug  # noqa: E402
from diffaug.workers import sigterm_as_interrupt  # noqa: E402
from _common import RESULTS, write_results  # noqa: E402


@sigterm_as_interrupt()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--per-class", default="10,50,100")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--tag", default="", help="suffix for the results name (for knob sweeps)")
    parser.add_argument("--set", action="append", default=[], help="EvalConfig field=value (JSON value)")
    args = parser.parse_args()
    options = {}
    for item in args.set:
        name, _, value = item.partition("=")
        options[name] = json.loads(value)
    name = f"gains_{args.dataset}{('_' + args.tag) if args.tag else ''}"
    t0 = time.perf_counter()
    result = diffaug.evaluate(args.dataset, per_class=tuple(int(k) for k in args.per_class.split(",")),
                              seeds=args.seeds, device=args.device, n_jobs=args.n_jobs, out_dir=RESULTS / name,
                              **options)
    command = "python benchmarks/gains.py " + " ".join(sys.argv[1:])
    first = result.config["seed_start"]
    table = f"Command: `{command}` (seeds {first}..{first + args.seeds - 1})\n\n" + result.table()
    write_results(name, {"command": command, "seconds_this_run": round(time.perf_counter() - t0, 1),
                         "config": result.config, "summary": result.summary}, table)


if __name__ == "__main__":
    main()
