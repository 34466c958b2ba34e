"""The `diffaug` command: fit / sample / info, clear one-line errors, no clobbering, kill-and-resume."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from diffaug.cli import main
from diffaug.generator import Generator


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "diffaug.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_fit_sample_info(tmp_path, capsys):
    gen = tmp_path / "g.safetensors"
    # --epochs: passes over the 898 training digits at the batch: 0.5 x 898 / 16 -> 29 steps (rounded up)
    assert main(["fit", "digits", "--out", str(gen), "--epochs", "0.5", "--batch-size", "16", "--quiet"]) == 0
    assert Generator.load(gen).config["train"]["steps"] == 29
    assert (tmp_path / "g.ckpt" / "checkpoint.pt").exists()
    assert main(["sample", str(gen), "--per-class", "3", "--out", str(tmp_path / "grid.png"), "--sample-steps",
                 "4"]) == 0
    from PIL import Image
    with Image.open(tmp_path / "grid.png") as im:
        assert im.size == (3 * 34 + 2, 10 * 34 + 2)   # 3 columns, one row per class, 32px cells + 2px gaps
    assert main(["sample", str(gen), "--per-class", "2", "--out", str(tmp_path / "s.npz"), "--steps", "4"]) == 0
    with np.load(tmp_path / "s.npz") as z:
        assert z["images"].shape == (20, 8, 8, 1) and list(z["labels"][:3]) == [0, 0, 1]
    capsys.readouterr()
    assert main(["info", str(gen)]) == 0
    assert "1x8x8" in capsys.readouterr().out


def test_outputs_are_not_clobbered(tmp_path, capsys):
    out = tmp_path / "g.safetensors"
    out.write_bytes(b"precious")
    assert main(["fit", "digits", "--out", str(out), "--steps", "2", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"precious"


@pytest.mark.parametrize("args, message", [
    (["fit", "nonexistent-data", "--out", "x.safetensors"], "unknown data 'nonexistent-data'"),
    (["info", "missing.safetensors"], "no such generator file"),
    (["sample", "pyproject.toml", "--per-class", "2", "--out", "o.png"], "not a readable safetensors"),
])
def test_user_errors_print_one_line_and_exit_nonzero(tmp_path, args, message):
    r = run_cli(*args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_killed_training_resumes_to_the_requested_step(tmp_path):
    """SIGKILL a real fit mid-run; the checkpoint stays readable throughout; --resume finishes the job."""
    out, ckpt = tmp_path / "g.safetensors", tmp_path / "ck"
    cmd = [sys.executable, "-m", "diffaug.cli", "fit", "digits", "--out", str(out), "--steps", "60",
           "--batch-size", "16", "--checkpoint-every", "5", "--checkpoint-dir", str(ckpt), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen_steps = []
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        path = ckpt / "checkpoint.pt"
        if path.exists():
            state = torch.load(path, weights_only=True)   # must always be a complete checkpoint
            seen_steps.append(state["step"])
            if state["step"] >= 20:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed: " + proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    killed_at = torch.load(ckpt / "checkpoint.pt", weights_only=True)["step"]
    assert 20 <= killed_at < 60 and seen_steps == sorted(seen_steps)

    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    train = Generator.load(out).config["train"]
    assert train["steps"] == 60 and train["steps_this_run"] == 60 - killed_at


def test_expand_writes_a_loadable_hf_dataset(tmp_path, digits_gen_file):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "expanded"
    assert main(["expand", "digits", "--gen", str(digits_gen_file), "--per-class", "3", "--out", str(out),
                 "--steps", "4", "--quiet"]) == 0
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 898 + 30 and sum(ds["diffaug_synthetic"]) == 30
    assert main(["expand", str(out), "--gen", str(digits_gen_file), "--mode", "perturb", "--copies", "1",
                 "--out", str(tmp_path / "p"), "--steps", "4", "--quiet"]) == 0
    assert len(datasets.load_from_disk(str(tmp_path / "p"))) == 2 * len(ds)
    assert main(["expand", "digits", "--gen", str(digits_gen_file), "--per-class", "1", "--out", str(out)]) == 2


def test_demo_and_evaluate_refuse_to_clobber_a_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert main(["evaluate", "digits", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("already exists") == 2 and (tmp_path / "keep.txt").read_text() == "mine"


def test_evaluate_cli_writes_a_report(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", "digits", "--out", str(out), "--per-class", "4", "--seeds", "2", "--gen-steps", "20",
                 "--classifier-steps", "10", "--batch-size", "16", "--synthetic-per-class", "4",
                 "--perturb-copies", "1", "--sample-steps", "2", "--arms", "real,classical,perturb",
                 "--no-metrics", "--quiet"]) == 0   # the metrics' own tests: test_evaluation.py
    assert "| 4 |" in capsys.readouterr().out and (out / "results.json").exists()
    # a built-in is tested on its own test split (as --help says), not on half of its training split
    import json
    from diffaug import load_data
    payload = json.loads((out / "results.json").read_text())
    assert {u["test_fingerprint"] for u in payload["units"]} == {load_data("digits", "test").fingerprint()}
    assert payload["config"]["data"] == "train: digits (built-in), train split; test: digits (built-in), test split"
    assert main(["evaluate", "digits", "--out", str(out), "--per-class", "4,x", "--resume"]) == 2
    assert "comma-separated whole numbers" in capsys.readouterr().err


def test_expand_split_all_expands_every_split_of_a_saved_dataset_dict(tmp_path, digits_gen_file, digits_train):
    datasets = pytest.importorskip("datasets")
    from diffaug.hf import to_hf_dataset
    part = to_hf_dataset(digits_train.subset(per_class=2, seed=0))
    datasets.DatasetDict({"train": part, "validation": part}).save_to_disk(str(tmp_path / "dd"))
    out = tmp_path / "expanded"
    assert main(["expand", str(tmp_path / "dd"), "--split", "all", "--gen", str(digits_gen_file), "--per-class", "1",
                 "--out", str(out), "--steps", "2", "--quiet"]) == 0
    back = datasets.load_from_disk(str(out))
    assert {name: sum(split["diffaug_synthetic"]) for name, split in back.items()} == {"train": 10, "validation": 10}
    assert main(["expand", str(tmp_path / "dd"), "--split", "test", "--gen", str(digits_gen_file), "--per-class", "1",
                 "--out", str(tmp_path / "none"), "--quiet"]) == 2   # no such split: one clear line, no output
    assert not (tmp_path / "none").exists()


def test_evaluate_test_data_uses_the_column_options(tmp_path, capsys, digits_train, digits_test):
    datasets = pytest.importorskip("datasets")

    def save(data, name):
        ds = datasets.Dataset.from_dict({"px": data.images[:, 0].numpy().tolist(), "y": data.labels.tolist()},
                                        features=datasets.Features({"px": datasets.Array2D((8, 8), "uint8"),
                                                                    "y": datasets.ClassLabel(names=data.class_names)}))
        ds.save_to_disk(str(tmp_path / name))
        return str(tmp_path / name)
    train, test = save(digits_train, "train"), save(digits_test.subset(per_class=5), "test")
    assert main(["evaluate", train, "--test", test, "--image-column", "px", "--label-column", "y",
                 "--out", str(tmp_path / "r"), "--per-class", "3", "--seeds", "2", "--arms", "real,classical,perturb",
                 "--gen-steps", "4", "--classifier-steps", "4", "--batch-size", "8", "--perturb-copies", "1",
                 "--sample-steps", "2", "--no-metrics", "--quiet"]) == 0, capsys.readouterr().err
    import json
    # the report names where each split came from
    config = json.loads((tmp_path / "r" / "results.json").read_text())["config"]
    assert config["data"] == f"train: {train}; test: {test}"


def test_n_jobs_on_one_gpu_says_what_it_does(monkeypatch, tmp_path):
    import diffaug
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.warns(UserWarning, match="3 evaluation units at once share one GPU"):
        with pytest.raises(Exception):   # this machine has no GPU: the run itself cannot start
            diffaug.evaluate("digits", per_class=(2,), seeds=1, n_jobs=3, device="cuda", progress=False)


def test_evaluate_takes_one_strength_or_a_range(tmp_path):
    import json
    for text, expected in (("0.4", [0.4, 0.4]), ("0.3,0.6", [0.3, 0.6])):
        plan = tmp_path / f"plan-{text}.json"
        assert main(["evaluate", "digits", "--per-class", "3", "--seeds", "1", "--strength", text,
                     "--out", str(tmp_path / "report"), "--preregister", str(plan)]) == 0
        assert json.loads(plan.read_text())["config"]["strength"] == expected
    assert main(["evaluate", "digits", "--strength", "0.1,0.2,0.3", "--out", str(tmp_path / "r"),
                 "--preregister", str(tmp_path / "bad.json")]) == 2


def test_every_option_of_every_command_has_help_and_shows_its_default(capsys):
    import argparse

    from diffaug.cli import build_parser
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == {"fit", "sample", "expand", "evaluate", "demo", "info"}
    for name, sub in commands.items():
        text = sub.format_help()
        assert "example: diffaug " + name in " ".join(text.split()), name
        for action in sub._actions:
            assert action.help, f"diffaug {name} {action.option_strings or action.dest}: no help"
        if name != "info":   # info's only option is a flag
            assert "(default:" in text, name
    evaluate = commands["evaluate"].format_help()
    for group in ("data:", "generator", "classifier and arms:", "statistics", "unlabelled images", "long-tailed",
                  "output and execution:"):
        assert group in evaluate
    assert "--seeds SEEDS" in evaluate and "(default: 10)" in " ".join(evaluate.split())
    with pytest.raises(SystemExit):
        main(["--version"])
    version = capsys.readouterr().out
    assert version.startswith("diffaug ") and "0.1.0" not in version


def test_the_sampler_steps_option_has_its_own_name_and_the_old_one_still_works(tmp_path, digits_gen_file, capsys):
    assert main(["sample", str(digits_gen_file), "--per-class", "1", "--out", str(tmp_path / "a.npz"), "--steps",
                 "3"]) == 0
    assert "--steps is deprecated here" in capsys.readouterr().err
    assert main(["sample", str(digits_gen_file), "--per-class", "1", "--out", str(tmp_path / "b.npz"),
                 "--sample-steps", "3"]) == 0
    assert np.array_equal(np.load(tmp_path / "a.npz")["images"], np.load(tmp_path / "b.npz")["images"])
    assert main(["fit", "digits", "--out", str(tmp_path / "g.safetensors"), "--steps", "3", "--epochs", "1"]) == 2
    assert "not both" in capsys.readouterr().err


def test_removed_import_paths_warn_instead_of_failing():
    import importlib
    import sys as system

    for old, name in (("diffaug.pseudo", "pseudo_label"), ("diffaug.evaluation.policies", "select"),
                      ("diffaug.evaluation.classifier", "train_classifier")):
        system.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match="moved to diffaug.classify"):
            module = importlib.import_module(old)
        assert callable(getattr(module, name))
    with pytest.warns(DeprecationWarning, match="t_given_split"):
        from diffaug.evaluation import paired_ci
    assert paired_ci([0.01, 0.03])["mean"] == pytest.approx(0.02)
