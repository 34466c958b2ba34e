"""The opponents with unlabelled images (self-training, FixMatch) and the stacks on them, the user's classifier,
and the headline's statistics: through the public API, on digits."""

import functools

import numpy as np
import pytest
import torch
from scipy import stats

import diffaug
from diffaug import DataError
from diffaug.classify import FixMatch, SmallCNN, factory_key, pseudo_label, resnet18, resolve_classifier
from diffaug.cli import main
from diffaug.evaluation.choices import choose_regime
from diffaug.evaluation.verdict import holm_adjust

TINY = dict(gen_steps=10, gen_batch_size=16, classifier_steps=12, batch_size=16, synthetic_per_class=4,
            sample_steps=2, metrics=False, progress=False)


@pytest.fixture(scope="module")
def few(digits_train):
    return digits_train.subset(per_class=5, seed=0)


def test_keeping_no_pseudo_label_of_a_class_is_a_result_not_an_error(few, digits_train, tmp_path, capsys):
    # confidence 1.0 is out of reach for a label-smoothed classifier on every machine: nothing, or nearly
    # nothing, passes, so most classes keep no unlabelled image (this used to raise "class(es) with no images")
    many = digits_train.images[:300]
    kept, info = pseudo_label(few, many, threshold=1.0, policy="crop")
    assert len(kept) == info["kept"] == sum(info["per_class"]) < 10
    assert len(info["empty_classes"]) >= 1 and len(info["per_class"]) == 10
    np.savez(tmp_path / "many.npz", images=many.numpy())
    few.to_npz(tmp_path / "few.npz")
    out = tmp_path / "g.safetensors"
    assert main(["fit", str(tmp_path / "few.npz"), "--out", str(out), "--steps", "2", "--unlabeled",
                 str(tmp_path / "many.npz"), "--pseudo-labels", "1.0", "--pseudo-label-policy", "crop", "--quiet"]) == 0
    gen = diffaug.Generator.load(out)   # the same labeller as above: the same few kept
    assert gen.config["pseudo_labels"]["kept"] == len(kept) and gen.config["data_size"] == len(few) + len(kept)
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "confidence >= 1.0, crop" in text and "; none of class(es) " in text


def test_fixmatch_runs_exactly_its_steps_and_masks_by_confidence(few, digits_train, monkeypatch):
    calls = []
    step = torch.optim.SGD.step
    monkeypatch.setattr(torch.optim.SGD, "step", lambda self, *a, **k: (calls.append(1), step(self, *a, **k))[1])
    model, mask = FixMatch(threshold=0.5, ratio=2).train(few, digits_train.images[:200], (0, 1), 7, 16, "cpu")
    assert len(calls) == model.optimizer_steps == 7   # counted in the loop, not copied from the request
    assert 0.0 <= mask <= 1.0
    _, never = FixMatch(threshold=1.0, ratio=1).train(few, digits_train.images[:200], (0, 1), 3, 16, "cpu")
    assert never == 0.0   # softmax never reaches 1: no unlabelled image is trained on


@pytest.fixture(scope="module")
def unlabeled_eval(digits_train, digits_test, tmp_path_factory):
    arms = ("real", "classical", "classical+synthesize", "self-training", "fixmatch", "fixmatch+synthesize",
            "fixmatch+synthesize-control", "self-training+synthesize")
    out = tmp_path_factory.mktemp("unlabeled_eval")
    return diffaug.evaluate(digits_train, digits_test, unlabeled="rest", per_class=(3,), seeds=2, arms=arms,
                            primary="fixmatch+synthesize", fixmatch_ratio=1, self_training_rounds=2, out_dir=out,
                            classifier_repeats=2, **TINY), out


def test_every_arm_of_a_unit_ran_the_steps_of_its_labelled_and_unlabelled_rows(unlabeled_eval, digits_train):
    result, _ = unlabeled_eval
    for unit in result.units:
        assert unit["unlabeled"] == len(digits_train) - 30   # the pool less the unit's 3 x 10 labelled images
        assert unit["classifier_steps"] == 12
        for arm, record in unit["arms"].items():
            assert record["optimizer_steps"] == [12, 12], arm   # what each replicate's loop counted
        assert len(unit["arms"]["self-training"]["kept_per_round"][0]) == 2
        assert unit["kept_after_filter"]["pseudo_labels"]["labeller"] == "fixmatch"   # the primary's learner
    assert result.config["primary"] == "fixmatch+synthesize"
    assert set(result.config["pool_generators"]) == {"0", "1"}   # one pool fit per seed, not one for all
    assert len({g["fingerprint"] for g in result.config["pool_generators"].values()}) == 2


def test_a_cached_unit_is_not_reused_when_another_learner_labels_the_generators_images(unlabeled_eval, digits_train,
                                                                                      digits_test):
    # the primary arm names the labeller whose pseudo-labels fine-tune the generator, so it changes every stack's
    # numbers: a unit the fixture ran with fixmatch's labels must not serve a run whose primary is self-training's
    result, out = unlabeled_eval
    arms = tuple(result.config["arms"])
    again = diffaug.evaluate(digits_train, digits_test, unlabeled="rest", per_class=(3,), seeds=1, arms=arms,
                             fixmatch_ratio=1, self_training_rounds=2, out_dir=out, primary="self-training+synthesize",
                             classifier_repeats=2, **TINY)
    assert again.config["cache_key"] != result.config["cache_key"]
    assert again.units[0]["kept_after_filter"]["pseudo_labels"]["labeller"] == "self-training"
    same = diffaug.evaluate(digits_train, digits_test, unlabeled="rest", per_class=(3,), seeds=1, arms=arms,
                            primary="fixmatch+synthesize", fixmatch_ratio=1, self_training_rounds=2, out_dir=out,
                            classifier_repeats=2, **TINY)
    assert same.config["cache_key"] == result.config["cache_key"]   # the fixture's primary: its units are reused
    assert same.units[0]["arms"] == result.units[0]["arms"]


def test_a_stacks_dose_control_is_its_learner_with_the_generated_rows_swapped_for_real_ones(unlabeled_eval):
    # FixMatch weakly augments every labelled row, so the control's batches are exactly plain FixMatch's
    for unit in unlabeled_eval[0].units:
        assert unit["arms"]["fixmatch+synthesize-control"]["replicates"] == unit["arms"]["fixmatch"]["replicates"]
        assert unit["arms"]["fixmatch+synthesize"]["synthetic_share"] == 0.5
        assert unit["arms"]["fixmatch"]["synthetic_share"] == 0.0


def test_the_headline_compares_the_primary_arm_with_every_opponent_under_one_holm_family(unlabeled_eval):
    result, out = unlabeled_eval
    s = result.summary["3"]["primary"]
    assert set(s["headline"]) == {"classical", "fixmatch+synthesize-control", "self-training", "fixmatch"}
    assert s["strongest"] in ("classical", "self-training", "fixmatch")
    assert {h["family"] for h in s["headline"].values()} == {4}
    text = result.table()
    assert "| fixmatch+synthesize vs fixmatch |" in text and "fixmatch+synthesize vs its dose control" in text
    assert "one Holm family of 4" in text and (out / "gains_forest.png").exists()


def test_holm_adjusted_p_values_match_a_hand_computation():
    p = {"a": 0.004, "b": 0.03, "c": 0.2, "d": float("nan")}
    out = holm_adjust(p)
    # step-down over the three finite p-values of a family of 4: 4 * p_(1), then max(previous, 3 * p_(2)), ...
    assert out["a"] == pytest.approx(4 * 0.004) and out["b"] == pytest.approx(3 * 0.03)
    assert out["c"] == pytest.approx(min(1.0, 2 * 0.2)) and np.isnan(out["d"])
    assert holm_adjust({"a": 0.03, "b": 0.02}) == {"a": 0.04, "b": 0.04}   # monotone: never below an earlier step


def test_classifier_factories_are_named_by_what_they_build():
    assert factory_key(functools.partial(SmallCNN, width=16)) != factory_key(functools.partial(SmallCNN, width=32))

    def widths(w):
        return lambda c, n: SmallCNN(c, n, width=w)
    assert factory_key(widths(8)) != factory_key(widths(12))   # one qualname, two networks
    assert factory_key(widths(8)) == factory_key(widths(8))
    held = torch.nn.Linear(2, 2)
    assert factory_key(lambda c, n: held) is None   # a closure over an object: not keyable, so never cached
    assert factory_key(None) == factory_key(resolve_classifier("smallcnn")) == factory_key(SmallCNN)
    net = resolve_classifier("resnet18")(1, 10)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10) and resolve_classifier("resnet18") is resnet18
    assert resolve_classifier("smallcnn(width=24)")(1, 10).head.in_features == 96


def test_two_partials_of_one_network_do_not_share_cached_units(digits_train, digits_test, tmp_path):
    run = dict(per_class=(3,), seeds=1, arms=("real", "classical", "synthesize"), classical="crop", out_dir=tmp_path,
               **TINY)
    narrow = diffaug.evaluate(digits_train, digits_test, classifier=functools.partial(SmallCNN, width=4), **run)
    wide = diffaug.evaluate(digits_train, digits_test, classifier=functools.partial(SmallCNN, width=12), **run)
    assert narrow.config["cache_key"] != wide.config["cache_key"]
    assert len(list((tmp_path / "runs").glob("k3-seed0-*.json"))) == 2
    # different networks: which test images they get right differs (899 images; an equal accuracy could be chance)
    assert narrow.units[0]["arms"]["real"]["correct"] != wide.units[0]["arms"]["real"]["correct"]
    assert "SmallCNN" in narrow.config["classifier"] and "width" in narrow.config["classifier"]


def test_a_bad_classifier_gets_one_clear_error_before_any_work(digits_train, digits_test, tmp_path, capsys):
    for spec, message in (("no_such_module_here:build", "does not import"), ("builtins:max", "returned int"),
                          ("collections:OrderedDict", "failed for 1 channels"), ("vgg99", "unknown classifier")):
        assert main(["evaluate", "digits", "--out", str(tmp_path / spec.replace(":", "_")), "--classifier", spec,
                     "--per-class", "3", "--seeds", "1", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not (tmp_path / spec.replace(":", "_")).exists()   # refused before anything was written
    with pytest.raises(DataError, match="self-training"):
        diffaug.evaluation.EvalConfig(arms=("classical", "self-training"))


def test_no_withheld_label_is_read_with_unlabelled_images(digits_train, digits_test, monkeypatch):
    """Poison every label outside the unit's labelled subset: no arm, no pseudo-label, no choice may move."""
    subset = digits_train.subset(per_class=3, seed=0)
    chosen = {bytes(x.numpy()) for x in subset.images}
    monkeypatch.setattr(diffaug.ImageData, "subset", lambda self, per_class, seed=0: self.select(
        [i for i, x in enumerate(self.images) if bytes(x.numpy()) in chosen]))
    poisoned = digits_train.labels.clone()
    outside = torch.tensor([bytes(x.numpy()) not in chosen for x in digits_train.images])
    poisoned[outside] = (poisoned[outside] + 1 + torch.arange(int(outside.sum())) % 9) % 10   # every one wrong
    liar = diffaug.ImageData(digits_train.images, poisoned, digits_train.class_names)
    arms = ("classical", "self-training", "fixmatch", "fixmatch+synthesize")
    runs = [diffaug.evaluate(data, digits_test, unlabeled="rest", per_class=(3,), seeds=1, arms=arms,
                             fixmatch_ratio=1, **TINY) for data in (digits_train, liar)]
    honest, lied = (r.units[0] for r in runs)
    assert honest["subset_fingerprint"] == lied["subset_fingerprint"]
    assert honest["classical_selection"]["mean"] == lied["classical_selection"]["mean"]
    assert honest["kept_after_filter"] == lied["kept_after_filter"]
    for arm in arms:
        assert honest["arms"][arm]["replicates"] == lied["arms"][arm]["replicates"], arm


def test_the_detectable_gain_has_the_power_it_claims():
    from diffaug.evaluation.verdict import detectable
    for df, se in ((4, 0.0014), (9, 0.003), (60, 0.001)):
        interval = {"se": se, "df": df, "ci_low": 0.0}
        mde = detectable(interval)
        t_crit = stats.t.ppf(0.975, df)
        shift = mde / se   # the noncentrality of the t statistic at that true gain
        power = stats.nct.sf(t_crit, df, shift) + stats.nct.cdf(-t_crit, df, shift)
        assert 0.75 < power < 0.85, (df, power)   # the normal-shift approximation, within a few points of 80%
    assert detectable({"se": 0.001, "df": 30, "ci_low": 0.0}) < detectable({"se": 0.002, "df": 30, "ci_low": 0.0})
    assert np.isnan(detectable({"se": 0.0, "df": float("nan"), "ci_low": float("nan")}))   # no estimate


def test_each_regime_trains_the_network_its_tuned_classical_arm_does_best_with(digits_train, digits_test, tmp_path,
                                                                               capsys):
    menu = ("smallcnn(width=2)", "smallcnn(width=8)")
    run = dict(per_class=(5,), seeds=1, arms=("classical", "classical+perturb"), **{**TINY, "classifier_steps": 40})
    chosen = diffaug.evaluate(digits_train, digits_test, classifier_menu=menu, out_dir=tmp_path / "menu", **run)
    networks, policies = chosen.config["classifier_selection"]["5"], chosen.config["classical_selection"]["5"]
    assert networks["menu"] == list(menu) and networks["policy"] == policies["winner"]
    # the first network's scores are the policy choice's own fits; the others ran on the same three folds
    assert networks["per_fold"][menu[0]] == policies["per_fold"][policies["winner"]]
    assert all(len(v) == 3 for v in networks["per_fold"].values())
    # the cheapest network within one standard error of the best: here the wider, 2 channels being too few; the
    # error is the fold means' spread, at least the binomial error of the best accuracy over the validation images
    best = networks["per_fold"]["smallcnn(width=8)"]
    p = np.mean(best)
    assert networks["standard_error"] == pytest.approx(max(np.std(best, ddof=1) / np.sqrt(3),
                                                           np.sqrt(p * (1 - p) / len(digits_train))))
    assert p - networks["standard_error"] > networks["mean"]["smallcnn(width=2)"]
    assert networks["winner"] == "smallcnn(width=8)" == chosen.units[0]["classifier"]
    assert "The downstream network every arm trains" in (tmp_path / "menu" / "results.md").read_text()
    # a benchmark that asks for the regime's choices (evaluation.choices) gets evaluate's, on the same folds
    cfg = diffaug.evaluation.EvalConfig(classifier_menu=menu, **{k: v for k, v in run.items() if k != "progress"})
    selection, network = choose_regime(digits_train, 5, cfg)
    assert (selection["winner"], network["winner"]) == (policies["winner"], networks["winner"])
    assert (selection["mean"], network["mean"]) == (policies["mean"], networks["mean"])
    # every arm trained the chosen network: the run with it named, and the policy fixed, gets the same test images right
    named = diffaug.evaluate(digits_train, digits_test, classifier=networks["winner"], classical=policies["winner"],
                             **run)
    assert named.config["classifier_selection"] == {}
    for arm in run["arms"]:
        assert chosen.units[0]["arms"][arm]["correct"] == named.units[0]["arms"][arm]["correct"]
    with pytest.raises(DataError, match="fixed classical policy"):
        diffaug.evaluation.EvalConfig(classical="crop", classifier_menu=menu)
    with pytest.raises(DataError, match="classifier_menu: unknown classifier 'vgg99'"):
        diffaug.evaluation.EvalConfig(classifier_menu=("smallcnn", "vgg99"))
    assert main(["evaluate", "digits", "--out", str(tmp_path / "cli"), "--classifier-menu", "smallcnn,vgg99",
                 "--quiet"]) == 2
    assert "vgg99" in capsys.readouterr().err and not (tmp_path / "cli").exists()
