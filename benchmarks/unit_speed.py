"""Issue 18's speed bar: one Fashion-MNIST 10-per-class evaluation unit on one core, today's code beside the code
the bar was set against, side by side in one run.

    python benchmarks/unit_speed.py                      # reference 898c1d1 (the 18-minute unit), 2 seeds
    python benchmarks/unit_speed.py --ref 898c1d1 --seeds 2 --dataset fashion-mnist

Both checkouts run `diffaug.evaluate` at once, each in its own process with one torch thread (2 cores: one
each), on the same data and seeds with each one's default settings. A unit's time on one core is its process's
CPU time (one thread), which other work on the machine does not inflate as it does the wall-clock seconds (also
reported). The "test" split of both is a VALIDATION
split (a stratified 10,000 of the training pool; the rest is the pool): this benchmark never looks at the test
split. Reported per checkout: each unit's seconds (generator fit, pools, classifiers) and its arms' validation
accuracy; the one-off costs (the reference network, today's tuned-classical selection) apart.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffaug  # noqa: E402
from _common import ROOT, tree_of, write_results  # noqa: E402


RUN = """
import json, sys, time, torch
torch.set_num_threads(1)
import diffaug
import diffaug.evaluation.protocol as protocol
train, test, out, seeds = sys.argv[1:5]
inner, cpu = protocol.run_unit, {}

def timed(*args, **kwargs):   # the unit's CPU time: its one thread's time on a core, whatever else runs
    start = time.process_time()
    unit = inner(*args, **kwargs)
    cpu[unit["seed"]] = time.process_time() - start
    return unit

protocol.run_unit = timed   # with n_jobs=1, _run_all calls the module's run_unit (both versions)
t0 = time.perf_counter()
result = diffaug.evaluate(train, test=test, per_class=[10], seeds=int(seeds), out_dir=out, n_jobs=1,
                          device="cpu", progress=False)
units = [{"seed": u["seed"], "seconds": u["seconds"], "cpu_seconds": cpu[u["seed"]],
          "fit_seconds": u["generator"].get("fit_seconds"),
          "pools_seconds": u.get("pools_seconds"), "quality_seconds": u.get("quality_seconds"),
          "classifier_seconds": sum(a.get("seconds", 0.0) for a in u["arms"].values()),
          "classical": u.get("classical"),
          "accuracy": {arm: a["accuracy"] for arm, a in u["arms"].items()}} for u in result.units]
print(json.dumps({"wall_seconds": time.perf_counter() - t0, "units": units}))
"""


def launch(tree: Path, train: Path, test: Path, out: Path, seeds: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", RUN, str(train), str(test), str(out), str(seeds)], cwd=tree,
                            env=env, stdout=subprocess.PIPE, text=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ref", default="898c1d1", help="the reference commit (default: the 18-minute unit's)")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    validation, pool = diffaug.load_data(args.dataset).split(1 / 6, seed=0)   # validation: 1/6 of the pool
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pool.to_npz(tmp / "pool.npz")
        validation.to_npz(tmp / "validation.npz")
        trees = {f"reference ({args.ref})": tree_of(args.ref, tmp / "ref"),
                 f"today ({commit})": tree_of(commit, tmp / "today")}
        t0 = time.perf_counter()
        procs = {name: launch(tree, tmp / "pool.npz", tmp / "validation.npz", tmp / f"out{i}", args.seeds)
                 for i, (name, tree) in enumerate(trees.items())}
        runs = {}
        for name, proc in procs.items():
            stdout, _ = proc.communicate()
            if proc.returncode:
                raise SystemExit(f"{name} failed (exit {proc.returncode})")
            runs[name] = json.loads(stdout.strip().splitlines()[-1])
        wall = time.perf_counter() - t0
    print(f"validation split of {len(validation)}, pool {len(pool)}; both at once, one thread each; {wall:.0f} s")
    write_results(f"unit_speed_{args.dataset}", {"ref": args.ref, "today": commit, "seeds": args.seeds,
                                                   "validation_size": len(validation), "runs": runs},
                  table(runs, args))


def table(runs: dict, args) -> str:
    lines = [f"Command: `python benchmarks/unit_speed.py --ref {args.ref} --dataset {args.dataset} --seeds "
             f"{args.seeds}`. One {args.dataset} 10-per-class unit per seed, both checkouts at once, one torch "
             "thread each, each with its own default settings; accuracy on a validation split (1/6 of the "
             "training pool), never the test split.", "",
             "| code | seed | unit, CPU time on one core (s) | unit, wall (s) | generator fit (s) | pools (s) | "
             "classifiers (s) | whole run (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, run in runs.items():
        for u in run["units"]:
            lines.append(f"| {name} | {u['seed']} | **{u['cpu_seconds']:.0f}** | {u['seconds']:.0f} | "
                         f"{u['fit_seconds'] or 0:.0f} | "
                         f"{u['pools_seconds'] or 0:.0f} | {u['classifier_seconds']:.0f} | "
                         f"{run['wall_seconds']:.0f} |")
    arms = sorted({arm for run in runs.values() for u in run["units"] for arm in u["accuracy"]})
    lines += ["", "Validation accuracy (%), mean over seeds:", "",
              "| code | " + " | ".join(arms) + " |", "| --- |" + " --- |" * len(arms)]
    for name, run in runs.items():
        cells = []
        for arm in arms:
            values = [u["accuracy"][arm] for u in run["units"] if arm in u["accuracy"]]
            cells.append(f"{100 * sum(values) / len(values):.1f}" if values else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
