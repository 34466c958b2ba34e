"""Fuzz every public entry point with hypothesis (tests/fuzzing.py), 500 draws each by default, and record the tally.

A draw passes when the call gives a valid result or a diffaug error with a message; anything else is a failure,
recorded with hypothesis's shrunk example. Results are rewritten after each entry point (a killed run keeps them).

    python benchmarks/fuzz.py [--examples 500] [--seed 0] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import write_results  # noqa: E402
from fuzzing import TARGETS, Fixtures, Tally, run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="entry point names (default: all)")
    args = ap.parse_args()
    fx = Fixtures()
    rows = []
    for name in args.only or sorted(TARGETS):
        tally, t0, failure = Tally(), time.perf_counter(), None
        try:
            run(name, fx, args.examples, tally, seed=args.seed)
        except BaseException as e:   # noqa: BLE001 - hypothesis raises the shrunk failure (or a group of them)
            if isinstance(e, KeyboardInterrupt):
                raise
            failure = "; ".join(f"{str(x)[:300]} {' '.join(getattr(x, '__notes__', []))[:300]}"
                                for x in getattr(e, "exceptions", [e]))
        rows.append({"entry_point": name, "examples": tally.valid + tally.refused, "valid": tally.valid,
                     "refused_with_diffaug_error": tally.refused, "failure": failure,
                     "seconds": round(time.perf_counter() - t0, 1)})
        table = "\n".join(
            ["| entry point | draws | valid result | refused (diffaug error) | other exception | seconds |",
             "| --- | --- | --- | --- | --- | --- |"]
            + [f"| `{r['entry_point']}` | {r['examples']} | {r['valid']} | {r['refused_with_diffaug_error']} | "
               f"{'**' + r['failure'][:120] + '**' if r['failure'] else 'none'} | {r['seconds']} |" for r in rows])
        write_results("fuzz", {"command": " ".join(["python", "benchmarks/fuzz.py", *sys.argv[1:]]),
                               "examples_per_entry_point": args.examples, "seed": args.seed, "rows": rows}, table)
    sys.exit(1 if any(r["failure"] for r in rows) else 0)


if __name__ == "__main__":
    main()
