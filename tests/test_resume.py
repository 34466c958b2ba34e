"""Runs that resume exactly: a labelled, an unlabelled and a long-tailed evaluation stopped after a unit and finished
later, in the same folder or in another one, write the results.json an uninterrupted run writes (timing fields
aside); every finished unit is reused; the cache trusts neither other machines nor other code.

The stop is made by removing the units the interrupted run had not finished from a copy of the uninterrupted
run's folder (a unit's JSON is written last and atomically: test_kill.py kills a real process to show it)."""

import json
import shutil
import subprocess
import warnings

import pytest

import diffaug
import diffaug.evaluation.protocol as protocol
import diffaug.evaluation.unit as unit_module
from diffaug._version import source_digest

from test_distributed import untimed

TINY = dict(seeds=2, gen_steps=10, gen_batch_size=16, classifier_steps=10, batch_size=16, synthetic_per_class=4,
            perturb_copies=1, sample_steps=2, cas_steps=5, reference_steps=10, classical="crop", progress=False)
REGIMES = {"labelled": dict(per_class=(3,)),
           "unlabelled": dict(per_class=(3,), unlabeled="rest", classical="crop", fixmatch_ratio=1, metrics=False),
           "long-tailed": dict(per_class=(6,), imbalance=3)}


@pytest.fixture
def counted(monkeypatch):
    """The (k, seed) units this process runs (rather than reads from the cache)."""
    ran = []
    run_unit = protocol.run_unit

    def counting(train, test, k, seed, *args, **kw):
        ran.append((k, seed))
        return run_unit(train, test, k, seed, *args, **kw)
    monkeypatch.setattr(protocol, "run_unit", counting)
    return ran


@pytest.mark.parametrize("regime", list(REGIMES))
def test_a_run_stopped_after_a_unit_resumes_to_the_uninterrupted_result(regime, digits_train, digits_test, tmp_path,
                                                                        counted):
    options = {**TINY, **REGIMES[regime]}
    whole = tmp_path / "whole"
    diffaug.evaluate(digits_train, digits_test, out_dir=whole, **options)
    assert len(counted) == 2
    units = sorted((whole / "runs").glob("k*-seed*.json"))
    assert len(units) == 2
    stopped = tmp_path / "stopped"   # the interrupted run's folder, somewhere else: paths are not in any result
    shutil.copytree(whole / "runs", stopped / "runs")
    (stopped / "runs" / units[-1].name).unlink()   # the unit it had not finished
    # and killed after storing the other's JSON, before removing the parts that unit kept as it ran
    left = stopped / "runs" / f"parts-{units[0].stem}"
    left.mkdir()
    (left / "parts.json").write_text(json.dumps({"machine": {}, "arms": {}}))
    counted.clear()
    diffaug.evaluate(digits_train, digits_test, out_dir=stopped, **options)
    assert len(counted) == 1, f"{regime}: the finished unit was not reused ({counted})"   # long-tailed too
    assert not left.exists(), f"{regime}: a finished unit's parts were left behind"
    a, b = (json.loads((p / "results.json").read_text()) for p in (whole, stopped))
    assert untimed(a) == untimed(b), regime


class Stopped(Exception):
    """What stops a run part-way here (test_kill.py kills a real process instead)."""


@pytest.mark.parametrize("regime", ["labelled", "unlabelled, choosing inside the unit", "long-tailed"])
def test_a_unit_stopped_at_its_last_arm_resumes_there(regime, digits_train, digits_test, tmp_path, monkeypatch):
    """Stopped as its last arm starts, a unit keeps every part before it (the classical choice made inside the
    subset, the arms, the teacher's and filter's weights, the pools): the rerun trains that arm alone and writes the
    uninterrupted run's results. Parts made on another machine are all run again, with a warning."""
    options = {**TINY, **REGIMES.get(regime, dict(REGIMES["unlabelled"], classical="auto")), "seeds": 1}
    trained, chosen, stop = [], [], {"at": 0}
    train_arm, select = unit_module.train_arm, unit_module.select

    def stopping(arm, *args, **kwargs):
        trained.append(arm)
        if len(trained) == stop["at"]:
            raise Stopped(arm)
        return train_arm(arm, *args, **kwargs)
    monkeypatch.setattr(unit_module, "train_arm", stopping)
    monkeypatch.setattr(unit_module, "select", lambda *a, **kw: chosen.append(1) or select(*a, **kw))
    diffaug.evaluate(digits_train, digits_test, out_dir=tmp_path / "whole", **options)
    everything = list(trained)
    stop["at"] = len(everything)   # the last arm trained (a dose control's twin trains nothing)
    trained.clear()
    with pytest.raises(Stopped):
        diffaug.evaluate(digits_train, digits_test, out_dir=tmp_path / "stopped", **options)
    last = trained[-1]
    (parts,) = (tmp_path / "stopped" / "runs").glob("parts-*/parts.json")
    kept = json.loads(parts.read_text())
    shutil.copytree(tmp_path / "stopped", tmp_path / "elsewhere")
    moved = tmp_path / "elsewhere" / parts.relative_to(tmp_path / "stopped")
    moved.write_text(json.dumps({**kept, "machine": {**kept["machine"], "cpu": "another CPU"}}))
    stop["at"], runs = 0, {}
    for where in ("stopped", "elsewhere"):
        trained.clear()
        chosen.clear()
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            diffaug.evaluate(digits_train, digits_test, out_dir=tmp_path / where, **options)
        warned = [str(w.message) for w in said if "another machine" in str(w.message)]
        runs[where] = (list(trained), len(chosen), warned)
        a, b = (json.loads((tmp_path / name / "results.json").read_text()) for name in (where, "whole"))
        assert untimed(a["units"]) == untimed(b["units"]) and untimed(a["summary"]) == untimed(b["summary"]), where
    assert runs["stopped"] == ([last], 0, []), regime   # only the arm it stopped at; no choice made again
    assert runs["elsewhere"][0] == everything and len(runs["elsewhere"][2]) == 1, regime
    assert runs["elsewhere"][1] == int(regime == "unlabelled, choosing inside the unit")   # chosen again
    assert not list((tmp_path / "stopped" / "runs").glob("parts-*")), "the finished unit's parts were left behind"


def test_a_resumed_run_refuses_units_of_another_machine_unless_told(digits_train, digits_test, tmp_path, counted):
    options = {**TINY, **REGIMES["labelled"]}
    diffaug.evaluate(digits_train, digits_test, out_dir=tmp_path, **options)
    first, second = sorted((tmp_path / "runs").glob("k*-seed*.json"))
    unit = json.loads(first.read_text())
    assert set(unit["machine"]) >= {"torch", "device", "cpu", "threads"}
    unit["machine"]["torch"] = "0.0.1"
    first.write_text(json.dumps(unit))
    second.unlink()
    with pytest.raises(diffaug.DataError, match="another machine.*torch '0.0.1'"):
        diffaug.evaluate(digits_train, digits_test, out_dir=tmp_path, **options)
    with pytest.warns(UserWarning, match="mixing machines"):
        mixed = diffaug.evaluate(digits_train, digits_test, out_dir=tmp_path, allow_mixed_machines=True, **options)
    assert mixed.config["mixed_machines"] and "0.0.1" in mixed.config["mixed_machines"][0]


def test_units_trained_in_another_precision_are_another_machines(digits_train, digits_test, tmp_path, monkeypatch,
                                                                counted):
    options = {**TINY, **REGIMES["labelled"]}
    monkeypatch.setenv("DIFFAUG_CPU_BF16", "0")
    diffaug.evaluate(digits_train, digits_test, out_dir=tmp_path, **options)
    first, second = sorted((tmp_path / "runs").glob("k*-seed*.json"))
    unit = json.loads(first.read_text())
    assert unit["machine"]["classifier_precision"] == "float32"
    del unit["machine"]["classifier_precision"]   # a unit from before the precision was recorded: float32
    first.write_text(json.dumps(unit))
    second.unlink()
    diffaug.evaluate(digits_train, digits_test, out_dir=tmp_path, **options)   # reused: float32 here too
    assert counted == [(3, 0), (3, 1), (3, 1)]
    second.unlink()
    monkeypatch.setenv("DIFFAUG_CPU_BF16", "1")
    with pytest.raises(diffaug.DataError, match="another machine.*classifier_precision 'float32' vs 'bf16'"):
        diffaug.evaluate(digits_train, digits_test, out_dir=tmp_path, **options)


def test_a_user_classifier_is_keyed_by_its_source(tmp_path, monkeypatch):
    from diffaug.classify import factory_key
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(tmp_path))
    source = "from diffaug.classify import SmallCNN\n\ndef net(c, n):\n    return SmallCNN(c, n, width={})\n"
    (tmp_path / "usernet.py").write_text(source.format(8))
    first = factory_key(importlib.import_module("usernet").net)
    (tmp_path / "usernet.py").write_text(source.format(16))   # edited: the cache must not serve the old units
    sys.modules.pop("usernet")
    second = factory_key(importlib.import_module("usernet").net)
    assert first.startswith("usernet.net@") and first != second
    sys.modules.pop("usernet")


def test_the_source_digest_covers_the_tracked_files_of_a_checkout_wherever_it_lies(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    git = lambda *args, cwd=repo: subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)  # noqa
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    before = source_digest(repo / "pkg")
    (repo / "pkg" / "scratch.py").write_text("y = 2\n")   # untracked: not the code that made a result
    assert source_digest(repo / "pkg") == before
    git("clone", "-q", str(repo), str(tmp_path / "clone"), cwd=tmp_path)   # the same commit in another folder
    assert source_digest(tmp_path / "clone" / "pkg") == before
    (repo / "pkg" / "a.py").write_text("x = 2\n")   # a tracked file edited
    assert source_digest(repo / "pkg") != before
