"""The test suite's wall time: one test at a time (`-n 0`, the whole machine's threads for each test) against
pyproject's addopts (pytest-xdist's workers, the cores shared among them: tests/conftest.py), side by side in one
run, alternating, on a machine doing nothing else.

    python benchmarks/suite_time.py                 # each way once, about 25 minutes on a 2-core AMD EPYC
    python benchmarks/suite_time.py --repeats 2

Written after each run (a killed benchmark keeps what it measured): results/suite_time[_NAME].{json,md}.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WAYS = {"one test at a time (-n 0)": ["-n", "0"], "pyproject's addopts (xdist)": []}


def run(extra: list[str]) -> dict:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra], cwd=ROOT,
                         capture_output=True, text=True)
    wall = time.perf_counter() - start
    tail = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
    passed = re.search(r"(\d+) passed", tail)
    return {"wall_s": round(wall, 1), "returncode": out.returncode, "passed": int(passed.group(1)) if passed else 0,
            "summary": tail}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--name", default="", help="suffix of the results file (e.g. the machine)")
    args = parser.parse_args()
    runs = []
    for r in range(args.repeats):
        for way, extra in WAYS.items():
            runs.append({"way": way, "repeat": r, **run(extra)})
            print(runs[-1], flush=True)
            rows = [f"| {x['way']} | {x['repeat']} | {x['wall_s']:.0f} | {x['passed']} | {x['returncode']} |"
                    for x in runs]
            table = ("Command: `python benchmarks/suite_time.py " + " ".join(sys.argv[1:]) + "`. `python -m pytest "
                     "-q` (README's test command) each way, alternating; wall seconds of the whole command.\n\n"
                     "| way | repeat | wall s | passed | exit |\n| --- | --- | --- | --- | --- |\n" + "\n".join(rows))
            write_results("suite_time" + (f"_{args.name}" if args.name else ""), {"runs": runs}, table)


if __name__ == "__main__":
    main()
