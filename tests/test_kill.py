"""SIGKILL a real process while it builds a bank, expands a dataset or evaluates; the rerun completes and gives
what an uninterrupted run gives (bit for bit on the CPU), and nothing half-written is ever taken for a result.
Same seeds, same thread count: determinism on one CPU is what these checks rely on and show."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import diffaug
from diffaug import SampleBank
from diffaug.cli import main

from test_distributed import untimed


STARTED: list[subprocess.Popen] = []


def start(args, log: Path, **env) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    STARTED.append(subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                                    env=env, start_new_session=True))
    return STARTED[-1]


@pytest.fixture(autouse=True)
def nothing_left_running():
    """Whatever a test asserts, the jobs it started end with it: a test that failed while it waited for an
    evaluation's workers left them training for the rest of the suite, and for an hour after it."""
    yield
    while STARTED:
        proc = STARTED.pop()
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # its session: the command and every worker it started
        except ProcessLookupError:   # all of them ended already
            pass
        proc.wait()


def kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 180) -> None:
    """SIGKILL `proc` and every process it started (its session: an evaluation's worker processes, as a job
    scheduler or the OOM killer takes the whole job; killed alone, the parent left them running for the rest of the
    suite) as soon as `ready()` holds (the work is under way); fail if it ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)
    assert proc.poll() is None, f"the process ended before it could be killed ({what})"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    session_ends(proc.pid, 10, "processes of the killed job still running")


def session_ends(sid: int, timeout: float, what: str) -> None:
    """Wait until no process of session `sid` is left; fail, naming them, after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while left := in_session(sid):
        assert time.monotonic() < deadline, f"{what}: {left}"
        time.sleep(0.1)


def in_session(sid: int) -> list[int]:
    """The live processes of session `sid` (Linux's /proc; none where there is no /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = stat_fields(int(stat.parent.name))
        if fields and fields[0] != "Z" and int(fields[3]) == sid:   # state, ppid, pgrp, session
            found.append(int(stat.parent.name))
    return found


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (which may hold spaces); None once the process has ended."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None   # ended while read


BANK_SCRIPT = """
import sys, diffaug
data = diffaug.load_data("digits").subset(per_class=10, seed=0)
diffaug.SampleBank.build(diffaug.Generator.load(sys.argv[1]), sys.argv[2], per_class=20, data=data, copies=2,
                         steps=10, batch_size=100, progress=True)
"""


def build_bank(gen, path):
    data = diffaug.load_data("digits").subset(per_class=10, seed=0)
    return SampleBank.build(gen, path, per_class=20, data=data, copies=2, steps=10, batch_size=100, progress=False)


def test_a_killed_bank_build_leaves_nothing_and_the_rerun_equals_an_uninterrupted_one(digits_gen_file, tmp_path):
    gen = diffaug.Generator.load(digits_gen_file)
    log, path = tmp_path / "log", tmp_path / "bank"
    proc = start(["-c", BANK_SCRIPT, str(digits_gen_file), str(path)], log)
    kill_when(proc, lambda: "sample:" in log.read_text(), "sampling")
    assert not path.exists()
    with pytest.raises(diffaug.DiffaugError, match="not a sample bank"):
        SampleBank(path)
    build_bank(gen, path)   # the rerun
    build_bank(gen, tmp_path / "whole")
    for name in ("synthetic", "perturbed", "synthetic_labels", "perturbed_labels", "real_keys"):
        assert np.array_equal(np.load(path / f"{name}.npy"), np.load(tmp_path / "whole" / f"{name}.npy")), name


def test_a_killed_expand_writes_nothing_and_the_rerun_equals_an_uninterrupted_one(digits_gen_file, tmp_path):
    datasets = pytest.importorskip("datasets")
    args = ["expand", "digits", "--gen", str(digits_gen_file), "--per-class", "30", "--steps", "10",
            "--batch-size", "100"]
    log, out = tmp_path / "log", tmp_path / "out"
    # a fresh cache: `datasets` would reuse a finished run's generation
    proc = start(["-m", "diffaug", *args, "--out", str(out)], log, HF_DATASETS_CACHE=str(tmp_path / "hf"))
    kill_when(proc, lambda: "Generating" in log.read_text(), "generation")
    assert not out.exists()
    # the rerun (same cache, torn files and all), and an uninterrupted run with a cache of its own
    for target, hf_cache in ((out, tmp_path / "hf"), (tmp_path / "whole", tmp_path / "hf-whole")):
        proc = start(["-m", "diffaug", *args, "--out", str(target), "--quiet"], log, HF_DATASETS_CACHE=str(hf_cache))
        assert proc.wait(timeout=300) == 0, log.read_text()[-2000:]
    a, b = (datasets.load_from_disk(str(p)) for p in (out, tmp_path / "whole"))
    assert len(a) == len(b) == 898 + 300
    assert a["label"] == b["label"]
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a["image"][-300:], b["image"][-300:]))


def kept_parts(out: Path) -> dict:
    """{folder name: its parts.json} of the units under way in `out` that have kept their pools and every arm before
    them (the teacher, self-training, the stack's dose control) but not yet the stack: a folder is left a moment
    after its unit's last arm (until the unit's JSON is stored and the folder removed), and a slow CPU can be
    caught in that moment."""
    found = {p.parent.name: json.loads(p.read_text()) for p in (out / "runs").glob("parts-*/parts.json")}
    return {name: index for name, index in found.items() if "pools" in index
            and set(index["arms"]) == {"classical", "self-training", "self-training+synthesize-control"}}


def test_a_killed_evaluation_resumes_its_finished_units_and_parts_to_the_uninterrupted_result(digits_gen_file,
                                                                                              tmp_path):
    """Killed in its worker processes once a unit is written and another has kept its teacher, self-training, the
    stack's dose control and its pools, the rerun reads that unit and those parts (the teacher's weights too: the
    stack's self-training starts from it), trains only what is left, and writes what an uninterrupted run writes.
    A unit can outlast a session (a Fashion-MNIST `--unlabeled rest` unit on a slow CPU takes hours): it must not
    start over (test_resume.py stops each regime's unit at its last arm, in one process)."""
    # a fixed classical policy: the regime's choice (24 fits, run anew by the uninterrupted run) is no part of resuming
    args = ["evaluate", "digits", "--gen", str(digits_gen_file), "--per-class", "5", "--seeds", "3", "--n-jobs", "2",
            "--unlabeled", "rest", "--classical", "crop", "--self-training-rounds", "1", "--classifier-steps", "60",
            "--batch-size", "32", "--synthetic-per-class", "10", "--sample-steps", "4", "--no-metrics", "--quiet",
            "--arms", "classical,self-training,self-training+synthesize,self-training+synthesize-control"]
    log, out = tmp_path / "log", tmp_path / "out"
    proc = start(["-m", "diffaug", *args, "--out", str(out)], log)
    kill_when(proc, lambda: (out / "runs").exists() and any((out / "runs").glob("k*-seed*.json")) and kept_parts(out),
              "a unit written and another's pools kept")
    finished = {p.name: json.loads(p.read_text()) for p in (out / "runs").glob("k*-seed*.json")}
    parts = kept_parts(out)
    assert 1 <= len(finished) < 3 and parts and not (out / "results.json").exists()
    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert not list((out / "runs").glob("parts-*")), "the finished units' parts were left behind"
    resumed = {(u["k"], u["seed"]): u for u in json.loads((out / "results.json").read_text())["units"]}
    for unit in finished.values():   # read, not run again: the killed run's own clock
        assert resumed[unit["k"], unit["seed"]]["seconds"] == unit["seconds"]
    for name, index in parts.items():
        unit = resumed[5, int(name.split("-seed")[1].split("-")[0])]
        assert {arm: unit["arms"][arm]["seconds"] for arm in index["arms"]} == \
            {arm: record["seconds"] for arm, record in index["arms"].items()}
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    a, b = (json.loads((p / "results.json").read_text()) for p in (out, tmp_path / "whole"))
    assert untimed(a["units"]) == untimed(b["units"]) and untimed(a["summary"]) == untimed(b["summary"])


def evaluation_in_workers(gen_file, tmp_path) -> tuple[subprocess.Popen, Path]:
    """An evaluation running units in two worker processes (joblib's loky), long ones, each under way (its
    process has used more CPU time than starting up takes)."""
    args = ["evaluate", "digits", "--gen", str(gen_file), "--per-class", "5", "--seeds", "4", "--n-jobs", "2",
            "--classifier-steps", "3000", "--batch-size", "32", "--synthetic-per-class", "10", "--sample-steps", "4",
            "--arms", "real,classical,synthesize", "--classical", "crop", "--no-metrics", "--quiet"]
    log = tmp_path / "log"
    proc = start(["-m", "diffaug", *args, "--out", str(tmp_path / "out")], log)
    deadline = time.monotonic() + 180
    while sum(cpu_seconds(p) > 8 for p in in_session(proc.pid) if p != proc.pid) < 2:
        assert proc.poll() is None, log.read_text()[-2000:]   # (imports and a unit's data take ~5 s of a worker)
        assert time.monotonic() < deadline, f"no two workers under way within 180 s: {in_session(proc.pid)}"
        time.sleep(0.1)
    return proc, log


def cpu_seconds(pid: int) -> float:
    """The CPU time `pid` has used (Linux's /proc; 0 once it has ended)."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0   # utime + stime


def test_a_terminated_evaluation_ends_its_worker_processes(digits_gen_file, tmp_path):
    """`kill PID` (SIGTERM) of an evaluation running units in two worker processes: the command ends and so do the
    workers, and it says it was terminated (SIGTERM's default action ended it at once and left them running)."""
    proc, log = evaluation_in_workers(digits_gen_file, tmp_path)
    proc.terminate()
    assert proc.wait(timeout=60) == 143, log.read_text()[-2000:]
    session_ends(proc.pid, 30, "worker processes outlived the terminated command")
    assert "diffaug: terminated" in log.read_text()


def test_workers_end_when_the_command_is_killed_outright(digits_gen_file, tmp_path):
    """`kill -9 PID` of the command alone (the OOM killer picks one process; nothing can be caught): its workers
    notice they lost their parent and end within seconds. They used to run their unit to its end for no one, as
    long as an hour on Fashion-MNIST, beside the user's rerun."""
    proc, log = evaluation_in_workers(digits_gen_file, tmp_path)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        session_ends(proc.pid, 15, "worker processes outlived the killed command")
    finally:   # the failing case: leave nothing running for the rest of the suite
        if in_session(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)


BETWEEN_POOLS = """
import pathlib, sys, time
from joblib import delayed
import diffaug
import diffaug.evaluation.protocol as protocol
from diffaug.cli import main
from diffaug.workers import in_processes

def reference_after_a_pool(*args, **kwargs):   # the main process's own work after a pool: its workers idle, alive
    assert sorted(in_processes(2, [delayed(abs)(-1), delayed(abs)(-2)])) == [1, 2]
    pathlib.Path(sys.argv[1]).write_text("between pools")
    time.sleep(600)

protocol.reference_for = reference_after_a_pool
gen, way = sys.argv[2], sys.argv[3]
if way == "cli":
    sys.exit(main(["evaluate", "digits", "--gen", gen, "--per-class", "5", "--seeds", "2", "--n-jobs", "2",
                   "--arms", "real,classical,synthesize", "--classical", "crop", "--no-metrics", "--quiet",
                   "--out", sys.argv[4]]))
diffaug.evaluate("digits", gen=diffaug.Generator.load(gen), per_class=(5,), seeds=2, n_jobs=2,
                 arms=("real", "classical", "synthesize"), classical="crop", progress=False)
"""


@pytest.mark.parametrize("way", ["cli", "api"])
def test_sigterm_between_two_worker_pools_ends_the_idle_workers_too(digits_gen_file, tmp_path, way):
    """`kill PID` while the main process works between two pools (the evaluation's reference network; a pool's
    workers stay alive, idle, for the next one): the command ends and so do its workers. With SIGTERM's default
    action there the process died at once and the idle workers ran on, orphaned, past loky's idle timeout."""
    marker, log = tmp_path / "between", tmp_path / "log"
    proc = start(["-c", BETWEEN_POOLS, str(marker), str(digits_gen_file), way, str(tmp_path / "out")], log)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, "the evaluation never reached its reference network"
        time.sleep(0.05)
    assert len(in_session(proc.pid)) >= 3   # the command and its two idle workers
    proc.terminate()
    code = proc.wait(timeout=60)
    session_ends(proc.pid, 30, "idle worker processes outlived the terminated command")
    if way == "cli":
        assert code == 143 and "diffaug: terminated" in log.read_text(), log.read_text()[-2000:]
    else:   # raised in the user's script as Ctrl-C is: a traceback ending in diffaug.workers.Terminated
        assert code == 1 and "Terminated: signal 15" in log.read_text(), log.read_text()[-2000:]
