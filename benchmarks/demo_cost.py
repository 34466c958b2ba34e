"""What `diffaug demo` costs, part by part: today's demo settings beside the previous ones, in one run.

    python benchmarks/demo_cost.py --out benchmarks/results/demo_cost

Times each part of the demo (the fit, the grid, the HF expansion, and in the evaluation the classical choice, the
network choice, the reference network and the units) for each configuration, one after the other on the same
machine, and writes OUT.json and OUT.md with the CPU model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import diffaug  # noqa: E402
import diffaug.evaluation.protocol as protocol  # noqa: E402
from diffaug.demo import DEMO_EVAL, DEMO_FIT_STEPS  # noqa: E402
from diffaug.evaluation.cache import cpu_model  # noqa: E402
from diffaug.fitting import fit  # noqa: E402
from diffaug.hf import expand_dataset, to_hf_dataset  # noqa: E402
from diffaug.workers import sigterm_as_interrupt  # noqa: E402

PREVIOUS = dict(fit_steps=800, evaluate=dict(per_class=(10,), seeds=3, gen_steps=300, gen_batch_size=64,
                                             classifier_steps=200, synthetic_per_class=100, perturb_copies=2,
                                             cas_steps=100))   # the demo of 2026-12-02 (its network chosen from 16-64)
TODAY = dict(fit_steps=DEMO_FIT_STEPS, evaluate=DEMO_EVAL)


def timed(parts: dict, module, name: str) -> None:
    inner = getattr(module, name)

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        out = inner(*args, **kwargs)
        parts[name] = parts.get(name, 0.0) + time.perf_counter() - t
        return out
    setattr(module, name, wrapper)


def run(config: dict) -> dict:
    train, test = diffaug.load_data("digits", "train"), diffaug.load_data("digits", "test")
    parts, t0 = {}, time.perf_counter()
    t = time.perf_counter()
    gen = fit(train, "tiny", config["fit_steps"], seed=0, progress=False)
    parts["fit"] = time.perf_counter() - t
    t = time.perf_counter()
    gen.sample(per_class=10, seed=0, progress=False)
    parts["grid"] = time.perf_counter() - t
    t = time.perf_counter()
    expand_dataset(to_hf_dataset(train), gen, per_class=100, progress=False, seed=int(time.time()))   # uncached
    parts["expand"] = time.perf_counter() - t
    originals = {n: getattr(protocol, n) for n in ("classical_for", "network_for", "reference_for")}
    for name in originals:
        timed(parts, protocol, name)
    try:
        t = time.perf_counter()
        result = diffaug.evaluate(train, test, progress=False, n_jobs="auto", **config["evaluate"])
        parts["evaluate"] = time.perf_counter() - t
    finally:
        for name, f in originals.items():
            setattr(protocol, name, f)
    parts["units (wall)"] = parts["evaluate"] - sum(parts.get(n, 0.0) for n in originals)
    networks = result.config["classifier_selection"]
    return {"seconds": {k: round(v, 1) for k, v in parts.items()}, "total": round(time.perf_counter() - t0, 1),
            "network": networks["10"]["winner"] if networks else config["evaluate"].get("classifier_menu", ["?"])[0],
            "unit_seconds": [u["seconds"] for u in result.units]}


@sigterm_as_interrupt()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = {"previous (2026-12-02)": run(PREVIOUS), "today": run(TODAY)}
    record = {"cpu": cpu_model(), "date": time.strftime("%Y-%m-%d"), "runs": runs, "previous": repr(PREVIOUS),
              "today": repr(TODAY)}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    names = list(next(iter(runs.values()))["seconds"])
    lines = [f"`diffaug demo`'s parts, seconds wall-clock, one run after the other on {record['cpu']} (2 cores), "
             f"{record['date']}; `python benchmarks/demo_cost.py --out {args.out}`. The evaluation's parts: the "
             "classical choice, the network choice (none when the network is fixed), the reference feature network "
             "and the units (the rest of the evaluation's wall time).", "",
             "| settings | " + " | ".join(names) + " | total | network |",
             "| --- | " + " | ".join("---" for _ in names) + " | --- | --- |"]
    for label, r in runs.items():
        lines.append(f"| {label} | " + " | ".join(f"{r['seconds'].get(n, 0):.1f}" for n in names) +
                     f" | {r['total']:.1f} | `{r['network']}` |")
    lines += ["", f"previous: `{PREVIOUS}`", "", f"today: `{TODAY}`"]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
