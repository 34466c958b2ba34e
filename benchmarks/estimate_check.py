"""The cost `evaluate` prints before it starts, beside the wall time the run then takes, in one run per setting.

    python benchmarks/estimate_check.py --out benchmarks/results/estimate_check [--data digits] [--per-class 10]
        [--seeds 2]

Each setting runs from scratch (a fresh out_dir) with n_jobs="auto"; the estimate is diffaug.evaluation.cost's, made
just before the run with the same numbers the run will use. Writes OUT.json and OUT.md with the CPU model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import diffaug  # noqa: E402
import diffaug.evaluation.protocol as protocol  # noqa: E402
from diffaug.evaluation.cache import cpu_model  # noqa: E402
from diffaug.workers import sigterm_as_interrupt  # noqa: E402


@sigterm_as_interrupt()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--per-class", default="10")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--settings", default="default,fixed-network", help="default: the defaults; fixed-network: "
                        "the menu's first network only")
    args = parser.parse_args()
    train, test = diffaug.load_data(args.data, "train"), diffaug.load_data(args.data, "test")
    rows = []
    for setting in args.settings.split(","):
        options = dict(per_class=tuple(int(k) for k in args.per_class.split(",")), seeds=args.seeds)
        if setting == "fixed-network":
            options["classifier_menu"] = ("smallcnn",)
        seen = {}
        inner = protocol.estimate_cost

        def keep(*a, **kw):
            seen.update(inner(*a, **kw))
            return seen
        protocol.estimate_cost = keep
        try:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                result = diffaug.evaluate(train, test, out_dir=tmp, n_jobs="auto", progress=True, **options)
                wall = time.perf_counter() - t0
        finally:
            protocol.estimate_cost = inner
        networks = {k: c["winner"] for k, c in result.config["classifier_selection"].items()}
        rows.append({"setting": setting, "options": repr(options), "estimate": seen["total"],
                     "estimate_widest": seen["total_widest"], "wall": wall, "ratio": wall / seen["total"],
                     "networks": networks, "parts": seen["seconds"]})
    record = {"cpu": cpu_model(), "date": time.strftime("%Y-%m-%d"), "data": args.data, "rows": rows}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [f"`evaluate`'s printed estimate beside the run's wall time, {args.data}, on {record['cpu']} (2 cores), "
             f"{record['date']}; `python benchmarks/estimate_check.py --out {args.out} --data {args.data} "
             f"--per-class {args.per_class} --seeds {args.seeds}`. The estimate assumes the menu's first network in "
             "every unit; 'widest' assumes the menu's last.", "",
             "| setting | estimate (s) | if the widest network (s) | wall (s) | wall / estimate | networks chosen |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['setting']} | {r['estimate']:.0f} | {r['estimate_widest']:.0f} | {r['wall']:.0f} | "
              f"{r['ratio']:.2f} | {r['networks'] or 'fixed'} |" for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
