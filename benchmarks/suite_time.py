"""The test suite's wall time: one test at a time (`-n 0`, the whole machine's threads for each test) against
pyproject's addopts (pytest-xdist's workers, the cores shared among them: tests/conftest.py), side by side in one
run, alternating, on a machine doing nothing else; or, with --against, this checkout's suite against another
commit's (its files, its own tests and diffaug), both with pyproject's addopts.

    python benchmarks/suite_time.py                 # each way once, about 25 minutes on a 2-core AMD EPYC
    python benchmarks/suite_time.py --repeats 2
    python benchmarks/suite_time.py --against 0863756 --name cuts   # a cut's gain, measured beside its parent

Written after each run (a killed benchmark keeps what it measured): results/suite_time[_NAME].{json,md}.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, tree_of, write_results  # noqa: E402

WAYS = {"one test at a time (-n 0)": ["-n", "0"], "pyproject's addopts (xdist)": []}


def run(extra: list[str], root: Path = ROOT) -> dict:
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra], cwd=root,
                         capture_output=True, text=True, env=env)   # root's diffaug, in the suite and its commands
    wall = time.perf_counter() - start
    tail = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
    passed = re.search(r"(\d+) passed", tail)
    return {"wall_s": round(wall, 1), "returncode": out.returncode, "passed": int(passed.group(1)) if passed else 0,
            "summary": tail}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--name", default="", help="suffix of the results file (e.g. the machine)")
    parser.add_argument("--against", metavar="COMMIT", help="this checkout's suite against COMMIT's (its files "
                        "from git archive), both with pyproject's addopts, instead of the two ways")
    args = parser.parse_args()
    with ExitStack() as stack:
        if args.against:
            other = tree_of(args.against, Path(stack.enter_context(tempfile.TemporaryDirectory())) / "tree")
            ways = {f"this checkout ({head()})": ([], ROOT), f"{args.against}": ([], other)}
        else:
            ways = {way: (extra, ROOT) for way, extra in WAYS.items()}
        runs = []
        for r in range(args.repeats):
            for way, (extra, root) in ways.items():
                runs.append({"way": way, "repeat": r, **run(extra, root)})
                print(runs[-1], flush=True)
                rows = [f"| {x['way']} | {x['repeat']} | {x['wall_s']:.0f} | {x['passed']} | {x['returncode']} |"
                        for x in runs]
                table = ("Command: `python benchmarks/suite_time.py " + " ".join(sys.argv[1:]) + "`. `python -m "
                         "pytest -q` (README's test command) each way, alternating; wall seconds of the whole "
                         "command.\n\n| way | repeat | wall s | passed | exit |\n| --- | --- | --- | --- | --- |\n"
                         + "\n".join(rows))
                write_results("suite_time" + (f"_{args.name}" if args.name else ""), {"runs": runs}, table)


def head() -> str:
    """This checkout's commit, with `+changes` when its tracked files differ from it."""
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa: E731
    return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain", "-uno") else "")


if __name__ == "__main__":
    main()
