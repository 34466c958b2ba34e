"""Damaged files are refused with a clear message (nothing unpickled), and a full disk leaves the old file intact."""

import errno
import json
import pickle

import numpy as np
import pytest
import torch

import diffaug
from diffaug import SampleBank
from diffaug.cli import main
from diffaug.diffusion.trainer import TrainConfig, Trainer, TrainingError
from diffaug.errors import DataError, DiffaugError, GeneratorFileError


class Payload:
    """Unpickling this creates `marker`: its existence afterwards would mean a loader ran pickled code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def flip_byte(path, at: float = 0.6):
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i] ^= 0x10
    path.write_bytes(bytes(data))


# --- generators ---------------------------------------------------------------------------------------

def test_a_bit_flipped_generator_is_refused(digits_gen_file, tmp_path):
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(digits_gen_file.read_bytes())
    flip_byte(bad, 0.9)   # inside the weights: safetensors alone would load it
    with pytest.raises(GeneratorFileError, match="damaged"):
        diffaug.Generator.load(bad)


def test_a_generator_from_a_newer_diffaug_is_refused(digits_gen, tmp_path):
    from safetensors.torch import save_file
    config = {**digits_gen.config, "format_version": 99, "diffaug_version": "9.0"}
    tensors = {k: v.cpu().contiguous() for k, v in digits_gen.model.state_dict().items()}
    save_file(tensors, str(tmp_path / "new.safetensors"), metadata={"diffaug": json.dumps(config)})
    with pytest.raises(GeneratorFileError, match="newer diffaug"):
        diffaug.Generator.load(tmp_path / "new.safetensors")


def test_a_pickle_payload_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(GeneratorFileError):
        diffaug.Generator.load(tmp_path / "evil.safetensors")
    assert not marker.exists()


# --- checkpoints --------------------------------------------------------------------------------------

@pytest.fixture
def checkpoint(digits_train, tmp_path):
    data = digits_train.subset(per_class=5, seed=0)
    cfg = TrainConfig(steps=10, batch_size=8, checkpoint_every=5)
    trainer = Trainer(data, cfg, device="cpu", out_dir=tmp_path / "ck", progress=False)
    for _ in range(3):
        trainer.train_step()
    trainer.save_checkpoint()
    return data, cfg, trainer.checkpoint_path


def _resume(data, cfg, path):
    return Trainer(data, cfg, device="cpu", out_dir=path.parent, progress=False).load_checkpoint()


def test_an_intact_checkpoint_resumes(checkpoint):
    assert _resume(*checkpoint)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "cannot read checkpoint"),
    (lambda p: flip_byte(p, 0.7), "damaged"),
    (lambda p: p.write_bytes(b""), "cannot read checkpoint"),
])
def test_a_damaged_checkpoint_is_refused(checkpoint, damage, message):
    damage(checkpoint[2])
    with pytest.raises(TrainingError, match=message):
        _resume(*checkpoint)


def test_a_newer_or_foreign_checkpoint_is_refused(checkpoint):
    data, cfg, path = checkpoint
    state = torch.load(path, weights_only=True)
    state.pop("digest")
    torch.save({**state, "format_version": 7}, path)
    with pytest.raises(TrainingError, match="newer diffaug"):
        _resume(data, cfg, path)
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(TrainingError, match="not a diffaug checkpoint"):
        _resume(data, cfg, path)


def test_a_pickled_checkpoint_payload_is_never_run(checkpoint, tmp_path):
    data, cfg, path = checkpoint
    marker = tmp_path / "ran"
    torch.save({"model": Payload(marker)}, path)
    with pytest.raises(TrainingError, match="cannot read checkpoint"):
        _resume(data, cfg, path)
    assert not marker.exists()


# --- banks --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bank_dir(digits_gen, digits_train, tmp_path_factory):
    path = tmp_path_factory.mktemp("bank") / "bank"
    SampleBank.build(digits_gen, path, per_class=4, data=digits_train.subset(per_class=2, seed=0), copies=2,
                     steps=4, progress=False)
    return path


@pytest.fixture
def bank_copy(bank_dir, tmp_path):
    import shutil
    return shutil.copytree(bank_dir, tmp_path / "bank")


def test_an_intact_bank_opens(bank_copy, digits_gen):
    bank = SampleBank(bank_copy, generator=digits_gen)
    assert bank.synthetic(3, 0.5).shape == (1, 8, 8)


@pytest.mark.parametrize("damage, message", [
    (lambda b: flip_byte(b / "synthetic.npy", 0.8), "does not match the sha256"),
    (lambda b: (b / "perturbed.npy").write_bytes((b / "perturbed.npy").read_bytes()[:200]), "cannot read perturbed"),
    (lambda b: np.save(b / "synthetic_labels.npy", np.zeros(3, np.int64)), "manifest says"),
    (lambda b: np.save(b / "real_keys.npy", np.array([{"a": 1}], dtype=object)), "cannot read real_keys"),
    (lambda b: (b / "synthetic.npy").unlink(), "cannot read synthetic"),
    (lambda b: (b / "bank.json").write_text("{not json"), "damaged"),
])
def test_a_damaged_bank_is_refused(bank_copy, damage, message):
    damage(bank_copy)
    with pytest.raises(DataError, match=message):
        SampleBank(bank_copy)


def test_a_bank_from_a_newer_diffaug_is_refused(bank_copy):
    meta = json.loads((bank_copy / "bank.json").read_text())
    (bank_copy / "bank.json").write_text(json.dumps({**meta, "format_version": 5}))
    with pytest.raises(DataError, match="newer diffaug"):
        SampleBank(bank_copy)


# --- a full disk ----------------------------------------------------------------------------------------

def _full_disk_after(nbytes: int):
    """A stand-in for a write function that writes `nbytes`, then finds the disk full."""
    def write(*args, **kwargs):
        target = next(a for a in (*args, *kwargs.values()) if isinstance(a, (str, bytes)) or hasattr(a, "__fspath__"))
        with open(target, "wb") as f:
            f.write(b"\0" * nbytes)
        raise OSError(errno.ENOSPC, "No space left on device")
    return write


def test_a_full_disk_leaves_the_previous_generator_and_prints_one_line(digits_gen_file, tmp_path, monkeypatch,
                                                                      capsys):
    out = tmp_path / "g.safetensors"
    out.write_bytes(digits_gen_file.read_bytes())
    before = out.read_bytes()
    monkeypatch.setattr("safetensors.torch.save_file", _full_disk_after(1000))
    assert main(["fit", "digits", "--out", str(out), "--steps", "3", "--batch-size", "8", "--quiet",
                 "--overwrite", "--checkpoint-dir", str(tmp_path / "ck")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("diffaug: error")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and str(out) in errors[0], err
    assert "Traceback" not in err
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "g.safetensors"]   # no temporary left behind


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(checkpoint, monkeypatch):
    data, cfg, path = checkpoint
    before = path.read_bytes()
    trainer = Trainer(data, cfg, device="cpu", out_dir=path.parent, progress=False)
    trainer.load_checkpoint()
    trainer.train_step()
    monkeypatch.setattr(torch, "save", _full_disk_after(4096))
    with pytest.raises(DiffaugError, match=r"No space left on device; .*checkpoint.pt was left as it was"):
        trainer.save_checkpoint()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]


def test_a_full_disk_during_a_bank_build_keeps_the_previous_bank(bank_copy, digits_gen, monkeypatch):
    before = {p.name: p.read_bytes() for p in bank_copy.iterdir()}
    monkeypatch.setattr(np, "save", _full_disk_after(100))
    with pytest.raises(DiffaugError, match="No space left on device"):
        SampleBank.build(digits_gen, bank_copy, per_class=1, steps=2, progress=False, overwrite=True)
    assert {p.name: p.read_bytes() for p in bank_copy.iterdir()} == before
    assert sorted(p.name for p in bank_copy.parent.iterdir()) == ["bank"]


# --- the evaluation's leakage guard ---------------------------------------------------------------------

def test_evaluate_refuses_a_generator_that_saw_test_images(digits_train, digits_test, tmp_path):
    few = dict(per_class=[3], seeds=1, classifier_steps=2, sample_steps=2, synthetic_per_class=2, metrics=False,
               arms=("real", "classical", "synthesize"), progress=False, device="cpu")
    leaky_data = diffaug.ImageData(torch.cat([digits_train.images, digits_test.images[:7]]),
                                   torch.cat([digits_train.labels, digits_test.labels[:7]]), digits_train.class_names)
    leaky = diffaug.fit(leaky_data, steps=2, batch_size=8, progress=False)
    leaky.save(tmp_path / "leaky.safetensors")
    for gen in (leaky, diffaug.Generator.load(tmp_path / "leaky.safetensors")):   # in memory and from its file
        with pytest.raises(DataError, match=r"saw 7 of the \d+ test images"):
            diffaug.evaluate(digits_train, digits_test, gen=gen, **few)
    clean = diffaug.fit(digits_train, steps=2, batch_size=8, progress=False)
    assert len(diffaug.evaluate(digits_train, digits_test, gen=clean, **few).units) == 1


# --- determinism on one CPU -------------------------------------------------------------------------------------

def test_the_same_seed_gives_bit_identical_generators_samples_and_banks(digits_train, tmp_path):
    """(Expansions: tests/test_kill.py compares two runs with separate caches.)"""
    data = digits_train.subset(per_class=8, seed=0)
    a, b = (diffaug.fit(data, steps=30, batch_size=16, seed=3, progress=False) for _ in range(2))
    assert a.fingerprint == b.fingerprint
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert torch.equal(a.sample(per_class=2, steps=4, seed=5), b.sample(per_class=2, steps=4, seed=5))
    assert not torch.equal(a.sample(per_class=2, steps=4, seed=5), a.sample(per_class=2, steps=4, seed=6))
    banks = [SampleBank.build(g, tmp_path / name, per_class=2, data=data, copies=1, steps=3, progress=False)
             for g, name in ((a, "a"), (b, "b"))]
    assert banks[0].meta["files"] == banks[1].meta["files"]   # sha256 of every array
