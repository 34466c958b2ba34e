"""`diffaug fit` under a real 2-process torchrun (gloo on the CPU): the same trajectory as one process with the
same global batch and seed, resume under another number of ranks, and a killed rank fails the run fast.

Tolerance (1e-4 relative on the logged losses): every rank draws the whole global batch (images, label dropout,
times, noise) from the same seeded generator and trains on its half; DDP averages the two halves' gradients,
which is the one-process gradient up to the order of floating-point sums (~1e-7 relative per step). 75 Adam
steps keep that far below 1e-4, while any real difference (ranks drawing their own batches, summed instead of
averaged gradients, another learning rate) moves the loss by percents.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import diffaug
from diffaug.cli import main
from diffaug.diffusion.trainer import TrainConfig, Trainer

FIT = ["--steps", "75", "--batch-size", "32", "--device", "cpu", "--seed", "0", "--checkpoint-every", "25",
       "--quiet"]


def torchrun(*args, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "diffaug", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **kw)


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.fixture(scope="module")
def digits_file(digits_train, tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "digits.npz"
    digits_train.to_npz(path)
    return path


@pytest.fixture(scope="module")
def one_process(digits_file):
    data = diffaug.ImageData.from_npz(digits_file)
    return diffaug.fit(data, "tiny", 75, device="cpu", seed=0, batch_size=32, checkpoint_every=25, progress=False)


def losses(gen) -> list[float]:
    return [loss for _, loss in gen.config["train"]["loss_curve"]]


def test_two_ranks_follow_the_one_process_trajectory(digits_file, one_process, tmp_path):
    out = tmp_path / "two.safetensors"
    finish(torchrun("fit", str(digits_file), "--out", str(out), *FIT))
    two = diffaug.Generator.load(out)
    assert two.config["train"]["world_size"] == 2
    assert len(losses(two)) == 3
    assert losses(two) == pytest.approx(losses(one_process), rel=1e-4)
    # the saved generator loads and samples, and samples what the one-process generator samples
    a, b = (g.sample(per_class=2, steps=5, seed=1) for g in (one_process, two))
    assert a.shape == b.shape == (20, 1, 8, 8)
    assert (a.int() - b.int()).abs().float().mean() < 1.0   # mean absolute difference under one uint8 level
    assert [p.name for p in (tmp_path / "two.ckpt").iterdir()] == ["checkpoint.pt"]   # rank 0 alone wrote


def test_a_one_process_checkpoint_resumes_on_two_ranks(digits_file, one_process, tmp_path):
    data = diffaug.ImageData.from_npz(digits_file)
    first = Trainer(data, TrainConfig(steps=75, batch_size=32, checkpoint_every=25), device="cpu",
                    out_dir=tmp_path / "ckpt", progress=False)
    for _ in range(50):
        first.train_step()
    first.save_checkpoint()
    out = tmp_path / "resumed.safetensors"
    finish(torchrun("fit", str(digits_file), "--out", str(out), "--checkpoint-dir", str(tmp_path / "ckpt"),
                    "--resume", *FIT))
    resumed = diffaug.Generator.load(out)
    assert resumed.config["train"]["steps"] == 75
    assert resumed.config["train"]["steps_this_run"] == 25
    assert losses(resumed)[-1] == pytest.approx(losses(one_process)[-1], rel=1e-4)   # steps 51..75 alike
    a, b = (g.sample(per_class=2, steps=5, seed=1) for g in (one_process, resumed))
    assert (a.int() - b.int()).abs().float().mean() < 1.0


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the ranks' processes through /proc")
def test_a_killed_rank_fails_the_run_within_a_minute(digits_file, tmp_path):
    out, ckpt = tmp_path / "k.safetensors", tmp_path / "k.ckpt"
    proc = torchrun("fit", str(digits_file), "--out", str(out), "--steps", "1000000", "--batch-size", "32",
                    "--device", "cpu", "--checkpoint-every", "10", "--quiet")
    try:
        deadline = time.monotonic() + 120
        while not (ckpt / "checkpoint.pt").exists():   # both ranks are training
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        ranks = _children(proc.pid)
        assert len(ranks) == 2, ranks
        os.kill(max(ranks), signal.SIGKILL)
        killed = time.monotonic()
        output, _ = proc.communicate(timeout=60)   # a hang raises TimeoutExpired
        assert time.monotonic() - killed < 60
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "lost contact with the other ranks" in output or "Signal 9 (SIGKILL)" in output, output[-3000:]
    assert not out.exists()
    assert torch.load(ckpt / "checkpoint.pt", weights_only=True)["step"] % 10 == 0   # the last checkpoint is whole


def _rows(path):
    import datasets
    ds = datasets.load_from_disk(str(path))
    return [(r["label"], r["diffaug_synthetic"], np.asarray(r["image"]).tobytes()) for r in ds]


def test_expand_under_torchrun_makes_one_shard_per_rank_and_joins_them(digits_gen_file, tmp_path, capsys):
    pytest.importorskip("datasets")
    args = ["expand", "digits", "--gen", str(digits_gen_file), "--per-class", "3", "--steps", "2", "--batch-size",
            "8", "--device", "cpu", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    finish(torchrun(*args, "--out", str(tmp_path / "two")))
    assert _rows(tmp_path / "two") == _rows(tmp_path / "one")
    assert not (tmp_path / "two.parts").exists()


def test_a_lost_shard_is_remade_alone(digits_gen_file, tmp_path, monkeypatch, capsys):
    pytest.importorskip("datasets")
    import diffaug.hf
    args = ["expand", "digits", "--gen", str(digits_gen_file), "--per-class", "3", "--steps", "2", "--batch-size",
            "8", "--quiet", "--num-shards", "2"]
    out = tmp_path / "out"
    assert main([*args, "--shard-index", "0", "--out", str(out)]) == 0
    assert "1 shard(s) to go" in capsys.readouterr().err and not out.exists()
    made = diffaug.hf.expand_dataset
    monkeypatch.setattr(diffaug.hf, "expand_dataset", lambda *a, **kw: pytest.fail("shard 0 was made again"))
    assert main([*args, "--shard-index", "0", "--out", str(out)]) == 0   # the rerun keeps the finished shard
    assert "already made" in capsys.readouterr().err
    monkeypatch.setattr(diffaug.hf, "expand_dataset", made)
    assert main([*args, "--shard-index", "1", "--out", str(out)]) == 0   # the last shard joins them
    assert main(["expand", "digits", "--gen", str(digits_gen_file), "--per-class", "3", "--steps", "2",
                 "--batch-size", "8", "--quiet", "--out", str(tmp_path / "whole")]) == 0
    assert _rows(out) == _rows(tmp_path / "whole")
    assert not (tmp_path / "out.parts").exists()


def test_evaluate_under_torchrun_spreads_the_units_and_reports_once(tmp_path, capsys):
    args = ["evaluate", "digits", "--per-class", "4", "--seeds", "2", "--gen-steps", "20", "--classifier-steps", "10",
            "--batch-size", "16", "--synthetic-per-class", "4", "--sample-steps", "2", "--arms",
            "real,classical,synthesize", "--no-metrics", "--device", "cpu", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    table = capsys.readouterr().out
    out = finish(torchrun(*args, "--out", str(tmp_path / "two")), timeout=300)
    assert out.count("| 4 |") == table.count("| 4 |") > 0   # the table, printed once (by rank 0)
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert len(two["units"]) == 2
    # the same units, whichever rank ran them (the generators' fingerprints aside: a rank runs on one thread, the
    # one-process run on two, which sums floats in another order)
    for unit in one["units"] + two["units"]:
        unit["generator"].pop("fingerprint")
    assert untimed(two["units"]) == untimed(one["units"])
    assert untimed(two["summary"]) == untimed(one["summary"])


def untimed(x):
    """`x` without its wall-clock fields (which differ between any two runs)."""
    if isinstance(x, dict):
        return {k: untimed(v) for k, v in x.items() if "second" not in k}
    return [untimed(v) for v in x] if isinstance(x, list) else x


BANK = """
import sys, diffaug
data = diffaug.load_data("digits").subset(per_class=3, seed=0)
bank = diffaug.SampleBank.build(diffaug.Generator.load(sys.argv[1]), sys.argv[2], per_class=3, data=data, copies=2,
                                steps=2, batch_size=8, progress=False, device="cpu")
print("bank", bank.meta["synthetic_count"], bank.meta["real_count"])
"""


def _bank_arrays(path):
    return {name: np.load(Path(path) / f"{name}.npy") for name in
            ("synthetic", "synthetic_labels", "perturbed", "perturbed_labels", "real_keys")}


def test_bank_shards_by_hand_and_under_torchrun_join_to_the_one_process_bank(digits_gen, digits_file, tmp_path):
    data = diffaug.load_data("digits").subset(per_class=3, seed=0)
    kw = dict(per_class=3, data=data, copies=2, steps=2, batch_size=8, progress=False, device="cpu")
    whole = _bank_arrays(diffaug.SampleBank.build(digits_gen, tmp_path / "whole", **kw).path)
    assert diffaug.SampleBank.build(digits_gen, tmp_path / "hand", num_shards=3, shard_index=2, **kw) is None
    assert diffaug.SampleBank.build(digits_gen, tmp_path / "hand", num_shards=3, shard_index=0, **kw) is None
    joined = diffaug.SampleBank.build(digits_gen, tmp_path / "hand", num_shards=3, shard_index=1, **kw)
    assert joined is not None and not (tmp_path / "hand.parts").exists()
    for name, a in _bank_arrays(joined.path).items():
        assert np.array_equal(a, whole[name]), name

    gen_file = tmp_path / "g.safetensors"
    digits_gen.save(gen_file)
    script = tmp_path / "bank.py"
    script.write_text(BANK)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script), str(gen_file), str(tmp_path / "ranks")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("bank 30 30") == 2   # every rank returns the joined bank
    for name, a in _bank_arrays(tmp_path / "ranks").items():
        assert np.array_equal(a, whole[name]), name
