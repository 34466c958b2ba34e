"""The evaluation protocol: fairness of arms, honesty of generators, and metrics on known answers."""

import json

import numpy as np
import pytest
import torch

import diffaug
from diffaug import DataError
from diffaug.evaluation import (EvalConfig, cas, evaluate, fid_own, kid_own, memorization, precision_recall,
                                t_given_split)
from diffaug.classify.training import accuracy, embed, train_classifier
from diffaug.evaluation.unitplan import unit_streams


@pytest.fixture(scope="module")
def small_eval(digits_train, digits_test, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    result = evaluate(digits_train, digits_test, per_class=(5,), seeds=2, gen_steps=60, gen_batch_size=32,
                      classifier_steps=40, batch_size=32, classifier_repeats=2, synthetic_per_class=20,
                      perturb_copies=2, sample_steps=5, cas_steps=30, reference_steps=100, out_dir=out, progress=False,
                      classifier_menu=("smallcnn",))   # the network menu's choice: test_opponents.py
    return result, out


def test_every_arm_ran_the_same_steps_batch_and_seed(small_eval):
    result, _ = small_eval
    assert len(result.units) == 2
    for unit in result.units:
        arms = unit["arms"]
        assert set(arms) == set(EvalConfig().arms) and "classical+synthesize-control" in arms
        # the steps each replicate's loop counted (classify.training.optimize), not the steps asked for
        assert {tuple(a["optimizer_steps"]) for a in arms.values()} == {(40, 40)}
        assert {a["batch_size"] for a in arms.values()} == {32}
        # every arm's classifiers use the unit's replicate seeds (weights, batches, augmentation draws)
        assert unit["replicate_seeds"] == [list(p) for p in unit_streams(unit["k"], unit["seed"], 2)["replicates"]]
        assert arms["classical+perturb"]["synthetic_share"] == 0.5 and arms["classical"]["synthetic_share"] == 0.0
        assert arms["classical+synthesize-control"]["synthetic_share"] == 0.5
        assert arms["classical"]["classical"] == arms["classical+synthesize"]["classical"] == unit["classical"]
        assert len(arms["classical"]["per_class"]) == 10 and len(arms["classical"]["correct"]) == 2
        # every dose control swaps the generated rows for the same clean real rows: the second is the first's fits
        first, second = arms["classical+synthesize-control"], arms["classical+perturb-control"]
        assert second["same_batches_as"] == "classical+synthesize-control" and second["correct"] == first["correct"]


def test_each_generator_saw_only_its_regime_subset(small_eval, digits_train, digits_test):
    result, _ = small_eval
    test_keys = {bytes(x.numpy()) for x in digits_test.images}
    for unit in result.units:
        subset = digits_train.subset(per_class=unit["k"], seed=unit_streams(unit["k"], unit["seed"], 0)["subset"])
        assert unit["generator"]["data_fingerprint"] == subset.fingerprint() == unit["subset_fingerprint"]
        assert unit["subset_size"] == 50 and not unit["generator"]["given"]
        # the subset holds no test image (digits has a few exact duplicates across the halves; none here)
        assert not {bytes(x.numpy()) for x in subset.images} & test_keys
    assert result.units[0]["subset_fingerprint"] != result.units[1]["subset_fingerprint"]


def test_report_files_and_resume(small_eval, digits_train, digits_test):
    result, out = small_eval
    payload = json.loads((out / "results.json").read_text())
    assert payload["summary"]["5"]["vs_classical"]["classical+perturb"]["n"] == 2
    report = (out / "results.md").read_text()
    assert "classical+synthesize vs its dose control" in report
    perturb = payload["summary"]["5"]["vs_control"]["classical+perturb"]["two_level"]
    assert (f"| 5 | classical+perturb vs its dose control | {100 * perturb['mean']:+.2f} "
            f"[{100 * perturb['ci_low']:+.2f}, {100 * perturb['ci_high']:+.2f}] |") in report
    assert payload["config"]["classical_selection"]["5"]["winner"] == result.units[0]["classical"]
    for name in ("gains_forest.png", "samples_k5.png", "memorization_k5.png"):
        assert (out / name).stat().st_size > 0
    # a second call finds every unit cached and re-runs nothing
    again = evaluate(digits_train, digits_test, per_class=(5,), seeds=2, gen_steps=60, gen_batch_size=32,
                     classifier_steps=40, batch_size=32, classifier_repeats=2, synthetic_per_class=20, perturb_copies=2,
                     sample_steps=5, cas_steps=30, reference_steps=100, out_dir=out, progress=False,
                     classifier_menu=("smallcnn",))
    assert again.summary == result.summary


def test_bad_options_are_refused():
    with pytest.raises(diffaug.DataError, match="unknown arm"):
        EvalConfig(arms=("real", "classical", "magic"))
    with pytest.raises(diffaug.DataError, match="must include 'classical'"):
        EvalConfig(arms=("real", "synthesize"))
    with pytest.raises(diffaug.DataError, match="unknown evaluation option"):
        evaluate("digits", per_klass=(5,))


# --- metrics on cases with known answers ------------------------------------------------------------

@pytest.fixture(scope="module")
def features(digits_train, digits_test):
    g = torch.Generator().manual_seed(0)

    def batch(step):
        idx = torch.randint(len(digits_train), (64,), generator=g)
        return digits_train.images[idx], digits_train.labels[idx]
    model = train_classifier(batch, 1, 10, steps=150, seed=0)
    noise = torch.randint(0, 256, (600, 1, 8, 8), generator=g, dtype=torch.uint8)
    return {"train": embed(model, digits_train.images), "test": embed(model, digits_test.images),
            "noise": embed(model, noise)}


def test_fid_and_kid_are_zero_for_a_set_against_itself_and_large_for_noise(features):
    assert fid_own(features["train"], features["train"]) == pytest.approx(0.0, abs=1e-6)
    kid_noise = kid_own(features["train"], features["noise"])
    # KID is an unbiased estimate over random subsets: zero up to sampling noise for a set against itself
    assert abs(kid_own(features["train"], features["train"])) < 0.02 * kid_noise
    assert fid_own(features["train"], features["noise"]) > 10 * fid_own(features["train"], features["test"])
    assert kid_noise > 10 * abs(kid_own(features["train"], features["test"]))


def test_precision_recall_known_answers(features):
    p, r = precision_recall(features["train"], features["train"])
    assert p == 1.0 and r == 1.0
    p, r = precision_recall(features["train"], features["noise"])
    assert p < 0.1


def test_memorization_of_copies_real_images_and_noise(digits_train, digits_test):
    copies = digits_train.images[torch.randperm(len(digits_train))[:200]]
    assert memorization(copies, digits_train.images)["rate"] == 1.0
    noise = torch.randint(0, 256, (200, 1, 8, 8), dtype=torch.uint8)
    assert memorization(noise, digits_train.images)["rate"] == 0.0
    assert memorization(digits_test.images, digits_train.images)["rate"] < 0.05   # held-out digits are not copies
    worst = memorization(copies, digits_train.images)["worst"][0]
    assert torch.equal(copies[worst["synthetic"]], digits_train.images[worst["nearest_train"]])


def test_cas_of_real_data_is_high_and_of_shuffled_labels_is_chance(digits_train, digits_test):
    real = cas(digits_train.images, digits_train.labels, digits_test.images, digits_test.labels, num_classes=10,
               steps=150, batch_size=64)
    shuffled = cas(digits_train.images, digits_train.labels[torch.randperm(len(digits_train))], digits_test.images,
                   digits_test.labels, num_classes=10, steps=150, batch_size=64)
    assert real > 0.9 and shuffled < 0.25


def test_the_t_interval_given_the_test_split_matches_the_textbook():
    ci = t_given_split([0.01, 0.02, 0.03, 0.02, 0.02])
    assert ci["mean"] == pytest.approx(0.02) and ci["n"] == 5
    assert ci["ci_low"] == pytest.approx(0.02 - 2.776445 * np.std([0.01, 0.02, 0.03, 0.02, 0.02], ddof=1) / 5 ** 0.5,
                                         rel=1e-4)
    assert ci["ci_low"] > 0


# --- review findings (issue 8): each failed before its fix ----------------------------------------------

TINY = dict(per_class=(3,), seeds=1, gen_steps=20, gen_batch_size=16, classifier_steps=20, batch_size=16,
            synthetic_per_class=4, perturb_copies=1, sample_steps=2, cas_steps=10, reference_steps=20, progress=False,
            classifier_menu=("smallcnn",), classical="crop")   # the choices: their own tests (below; test_opponents)


def test_precision_recall_subsample_every_class_not_the_first_ones():
    # A pool sorted by class: classes 0-3 sit on the real features, classes 4-9 far away. Precision must see
    # all ten classes (~40% inside), not the first 2000 rows (classes 0-3 only: 100%).
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(500)
    real = torch.randn(5000, 8, generator=g)
    fake = torch.randn(5000, 8, generator=g) + (labels >= 4)[:, None] * 50.0
    precision, _ = precision_recall(real, fake, fake_labels=labels, real_labels=labels, max_samples=2000, seed=0)
    assert precision == pytest.approx(0.4, abs=0.05)


def test_cached_units_are_not_reused_for_other_data(digits_train, digits_test, tmp_path):
    first = evaluate(digits_train, digits_test, out_dir=tmp_path, **TINY)
    other = diffaug.ImageData.from_arrays((255 - digits_train.images).permute(0, 2, 3, 1).numpy(),
                                          digits_train.labels.numpy(), digits_train.class_names)
    second = evaluate(other, digits_test, out_dir=tmp_path, **TINY)
    subset_seed = unit_streams(3, 0, 0)["subset"]
    assert second.units[0]["subset_fingerprint"] == other.subset(per_class=3, seed=subset_seed).fingerprint()
    assert second.units[0]["subset_fingerprint"] != first.units[0]["subset_fingerprint"]
    # the test split and the classifier are part of the key too
    third = evaluate(digits_train, digits_test.subset(per_class=20, seed=0), out_dir=tmp_path, **TINY)
    assert third.units[0]["test_fingerprint"] != first.units[0]["test_fingerprint"]


def test_headline_is_the_declared_primary_arm_with_holm_adjusted_intervals(digits_train, digits_test):
    result = evaluate(digits_train, digits_test, primary="classical+perturb", **{**TINY, "seeds": 3, "metrics": False})
    s = result.summary["3"]
    assert s["primary"]["arm"] == "classical+perturb"
    gain, versus = s["primary"]["gain"], s["vs_classical"]["classical+perturb"]
    assert gain["mean"] == versus["mean"] and gain["ci_low"] == versus["two_level"]["ci_low"]
    holm = s["holm"]
    assert set(holm) == {"classical+synthesize", "classical+perturb"}   # the diffusion arms (not their controls)
    for arm, h in holm.items():   # adjusted p-values are at least the plain ones; three seeds claim nothing
        assert h["p_holm"] >= h["sign_flip_p"] and h["verdict"] in ("no claim possible", "no estimate")
    table = result.table()
    assert "declared in advance: classical+perturb" in table and "Holm" in table
    with pytest.raises(diffaug.DataError, match="primary"):
        evaluate(digits_train, digits_test, primary="magic", **TINY)


def test_a_filter_that_keeps_nothing_says_so(digits_train, digits_test):
    result = evaluate(digits_train, digits_test, filter_confidence=1.0, arms=("real", "classical", "synthesize"),
                      **{**TINY, "metrics": False})
    kept = result.units[0]["kept_after_filter"]["synthesize"]
    assert kept == {"share_kept": 0.0, "used": "whole pool (nothing passed the filter)"}


def test_classifier_steps_scale_with_the_data_by_default():
    cfg = EvalConfig()
    few, many = cfg.steps_for(100), cfg.steps_for(60000)
    assert few < many and cfg.steps_for(100) == cfg.steps_for(120)   # the floor for small subsets
    assert EvalConfig(classifier_steps=123).steps_for(60000) == 123
    # the budget multiplies the default steps only; with unlabelled images it is the regime's own (chosen for the
    # strongest opponent), and an explicit number of steps is taken as it is
    assert EvalConfig(classifier_budget=2).steps_for(100) == 2 * few
    assert EvalConfig(unlabeled="rest").classifier_budget == 2.0 and cfg.classifier_budget == 1.0
    assert EvalConfig(unlabeled="rest").steps_for(900) == 2 * cfg.steps_for(900)
    assert EvalConfig(unlabeled="rest", classifier_steps=123).steps_for(900) == 123
    for bad in (0, -1, float("inf"), "2", True):
        with pytest.raises(DataError, match="classifier_budget"):
            EvalConfig(classifier_budget=bad)


def test_own_feature_metrics_use_one_reference_network_trained_on_the_training_pool(digits_train, digits_test):
    result = evaluate(digits_train, digits_test, **{**TINY, "seeds": 2})
    refs = {u["quality"]["reference_network"] for u in result.units}
    assert len(refs) == 1
    assert result.config["reference_network"]["fingerprint"] in refs
    assert result.config["reference_network"]["trained_on"] == digits_train.fingerprint()


def test_generator_fit_budget_scales_with_the_subset():
    cfg = EvalConfig()
    assert cfg.gen_steps_for(500) == 625 and cfg.gen_steps_for(1000) == 1250   # 160 epochs at batch 128
    assert cfg.gen_steps_for(10) == cfg.gen_steps_for(100) == 250              # the floor
    assert cfg.gen_steps_for(60000) == 2000                                    # the preset's default
    assert EvalConfig(gen_steps=77).gen_steps_for(100) == 77
    with pytest.raises(diffaug.DataError, match="unknown preset 'huge'"):
        EvalConfig(preset="huge")


def test_classifier_replicates_are_paired_by_seed_and_averaged(digits_train, digits_test):
    one = evaluate(digits_train, digits_test, classifier_repeats=1, **{**TINY, "metrics": False})
    two = evaluate(digits_train, digits_test, classifier_repeats=2, **{**TINY, "metrics": False})
    for arm, a in two.units[0]["arms"].items():
        assert len(a["replicates"]) == 2 and a["accuracy"] == pytest.approx(np.mean(a["replicates"]))
        # replicate 0 has the same seeds in both runs: the same classifier a single-replicate run trains
        assert a["replicates"][0] == one.units[0]["arms"][arm]["accuracy"]
    assert "mean of 2 classifiers" in two.table()
    with pytest.raises(diffaug.DataError, match="classifier_repeats"):
        EvalConfig(classifier_repeats=0)


def test_classical_augmentation_can_spare_the_synthetic_rows(digits_train):
    from diffaug.classify.batched import BatchAugment
    from diffaug.classify.training import mixed_batches
    subset = digits_train.subset(per_class=5, seed=0)
    pool = (torch.zeros(40, 1, 8, 8, dtype=torch.uint8) + 77, torch.arange(10).repeat(4))
    aug = BatchAugment("trivialaugment", digits_train.size)
    spared = mixed_batches(subset, pool, 0.5, 32, aug, (0, 1), "cpu", augment_synthetic=False)(0)[0]
    assert (spared[16:] == 77).all()                     # synthetic rows exactly as sampled
    augmented = mixed_batches(subset, pool, 0.5, 32, aug, (0, 1), "cpu", augment_synthetic=True)(0)[0]
    assert not (augmented[16:] == 77).all()              # ... or augmented like the real ones
    plain = mixed_batches(subset, pool, 0.5, 32, None, (0, 1), "cpu")(0)[0]
    assert not torch.equal(spared[:16], plain[:16])      # the real rows are augmented either way
    with pytest.raises(diffaug.DataError, match="augment_synthetic"):
        EvalConfig(augment_synthetic="yes")


def test_n_jobs_auto_is_one_process_per_core_on_a_cpu_and_bad_values_are_refused(digits_train, digits_test,
                                                                                  monkeypatch):
    import os
    from diffaug.evaluation.protocol import jobs_for
    assert jobs_for(1, "cpu") == 1 and jobs_for(1000, "cpu") == (os.cpu_count() or 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * (os.cpu_count() or 1)))   # torchrun's ranks share the cores
    assert jobs_for(1000, "cpu") == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    result = evaluate(digits_train, digits_test, n_jobs="auto", **{**TINY, "metrics": False})
    assert len(result.units) == 1
    for bad in (0, "many", 1.5, True):
        with pytest.raises(diffaug.DataError, match="n_jobs"):
            evaluate(digits_train, digits_test, n_jobs=bad, **TINY)


# --- issue 18: a tuned baseline, dose controls, fresh seeds, records a statistician can use ------------------

def test_the_dose_control_is_the_primary_arms_batches_with_clean_real_rows_for_the_synthetic_ones(digits_train):
    """Same real rows (indices and augmentation draws) in every batch; where the primary arm has a synthetic
    image, the control has an un-augmented image of the subset."""
    from diffaug.classify.batched import BatchAugment
    from diffaug.classify.training import mixed_batches
    subset = digits_train.subset(per_class=5, seed=0)
    synthetic = (torch.full((300, 1, 8, 8), 200, dtype=torch.uint8), torch.arange(10).repeat(30))
    real = (subset.images, subset.labels)
    aug = BatchAugment("trivialaugment", digits_train.size, magnitude=0.5)
    primary = mixed_batches(subset, synthetic, 0.5, 32, aug, (5, 6), "cpu", augment_synthetic=False)
    control = mixed_batches(subset, real, 0.5, 32, aug, (5, 6), "cpu", augment_synthetic=False)
    known = {bytes(x.numpy()) for x in subset.images}
    for step in range(5):
        (xp, yp), (xc, yc) = primary(step), control(step)
        assert torch.equal(xp[:16], xc[:16]) and torch.equal(yp[:16], yc[:16])   # the real half, augmented alike
        assert (xp[16:] == 200).all()                                             # synthetic rows
        assert all(bytes(x.numpy()) in known for x in xc[16:])                    # clean real rows instead
        assert [int(y) for y in yc[16:]] == [int(subset.labels[i]) for i in
                                             [next(j for j, z in enumerate(subset.images) if torch.equal(z, x))
                                              for x in xc[16:]]]


def test_the_tuned_baseline_never_reads_the_test_split(digits_train, digits_test):
    """Poisoned test labels change the test accuracies, not the classical choice or its scores."""
    options = {**TINY, "arms": ("classical", "synthesize"), "metrics": False, "seeds": 1, "classical": "auto"}
    clean = evaluate(digits_train, digits_test, **options)
    poisoned_test = diffaug.ImageData(digits_test.images, (digits_test.labels + 1) % 10, digits_test.class_names)
    poisoned = evaluate(digits_train, poisoned_test, **options)
    assert clean.config["classical_selection"] == {
        k: {**v, "seconds": clean.config["classical_selection"][k]["seconds"]}
        for k, v in poisoned.config["classical_selection"].items()}
    assert clean.units[0]["arms"]["classical"]["accuracy"] != poisoned.units[0]["arms"]["classical"]["accuracy"]
    selection = clean.config["classical_selection"]["3"]
    assert selection["winner"] in selection["menu"] and len(selection["per_fold"][selection["winner"]]) == 3
    assert clean.units[0]["classical"] == selection["winner"]
    # by successive halving: every entry on the first fold, the 4 best of it on the other two (16 fits, not 24)
    assert selection["survivors"] == 4 and selection["winner"] in selection["finalists"]
    assert sorted(len(v) for v in selection["per_fold"].values()) == [1] * 4 + [3] * 4


def test_the_seed_streams_of_two_units_never_overlap():
    words = []
    for k in (0, 10, 50, 100):
        for seed in range(20):
            s = unit_streams(k, seed, 3)
            words += [s["subset"], s["generator"], s["pools"], *(w for pair in s["replicates"] for w in pair)]
    assert len(words) == len(set(words))


def test_seed_start_gives_fresh_seeds_and_a_cached_unit_of_other_code_is_not_reused(digits_train, digits_test,
                                                                                    tmp_path, monkeypatch):
    import diffaug.evaluation.protocol as protocol
    options = {**TINY, "arms": ("classical", "synthesize"), "metrics": False, "classical": "crop"}
    first = evaluate(digits_train, digits_test, seed_start=40, out_dir=tmp_path, **options)
    assert [u["seed"] for u in first.units] == [40]
    assert evaluate(digits_train, digits_test, seed_start=40, out_dir=tmp_path, **options).units[0]["seconds"] == \
        first.units[0]["seconds"]   # the same code reuses its cached unit
    monkeypatch.setattr(protocol, "source_digest", lambda: "other code")
    again = evaluate(digits_train, digits_test, seed_start=40, out_dir=tmp_path, **options)
    assert again.config["cache_key"] != first.config["cache_key"]
    assert len(list((tmp_path / "runs").glob("k3-seed40-*.json"))) == 2   # run anew, stored beside the old


def test_the_report_says_how_each_regime_chose_its_classical_policy(digits_train, digits_test, tmp_path):
    """The baseline's rule is the selection that ran: within the pool per regime, within each unit's labelled subset
    with unlabelled images, on long-tailed folds by balanced accuracy under imbalance; by successive halving unless
    selection_survivors is None."""
    from diffaug.evaluation.protocol import plan_of
    regimes = {"labelled": {}, "unlabeled": {"unlabeled": "rest"}, "longtail": {"imbalance": 10},
               "full": {"unlabeled": "rest", "selection_survivors": None},
               "labelled-full": {"selection_survivors": None}}
    rule = {name: plan_of(tmp_path / f"{name}.json", digits_train, digits_test, per_class=(10,),
                          **options)["baseline_rule"] for name, options in regimes.items()}
    assert "per regime" in rule["labelled"] and "k per class from the other folds" in rule["labelled"]
    assert "the best 4 on the other two" in rule["labelled"] and "balanced" not in rule["labelled"]
    assert "halving" not in rule["labelled-full"] and "one classifier per entry and fold" in rule["labelled-full"]
    assert "each unit's labelled subset" in rule["unlabeled"] and "training pool" not in rule["unlabeled"]
    assert "the best 4 on the other two" in rule["unlabeled"] and "halving" not in rule["full"]
    assert "long-tailed" in rule["longtail"] and "balanced accuracy" in rule["longtail"]


def test_a_preregistered_run_must_be_the_one_registered(digits_train, digits_test, tmp_path):
    from diffaug.evaluation.protocol import plan_of
    options = {**TINY, "arms": ("classical", "synthesize"), "metrics": False, "classical": "crop"}
    plan = plan_of(tmp_path / "plan.json", digits_train, digits_test, **options)
    assert plan["config"]["primary"] == "synthesize" and plan["source"] and plan["baseline_rule"] == "fixed: crop"
    result = evaluate(digits_train, digits_test, preregistered=tmp_path / "plan.json", looks=tmp_path / "looks.json",
                      **options)
    assert result.config["preregistration"]["file"] == str(tmp_path / "plan.json")
    assert result.config["looks_at_test_split"] == 1
    assert evaluate(digits_train, digits_test, looks=tmp_path / "looks.json", **options).config[
        "looks_at_test_split"] == 2
    with pytest.raises(diffaug.DataError, match=r"not the one preregistered .*config \(seed_start\)"):
        evaluate(digits_train, digits_test, preregistered=tmp_path / "plan.json", **{**options, "seed_start": 5})


def test_each_classifier_records_which_test_images_it_got_right(small_eval, digits_test):
    from diffaug.evaluation.metrics import unpack_bits
    result, _ = small_eval
    arm = result.units[0]["arms"]["classical"]
    bits = [unpack_bits(b, len(digits_test)) for b in arm["correct"]]
    assert [b.mean() for b in bits] == pytest.approx(arm["replicates"])
    primary = result.summary["5"]["primary"]
    assert {"gain", "vs_control", "headline"} <= set(primary)
    assert primary["headline"]["classical"]["bootstrap"]["mean"] == pytest.approx(primary["gain"]["mean"], abs=1e-12)


def test_classical_policies_parse_and_bad_ones_are_refused():
    from diffaug.classify.policies import MENU, Policy
    assert Policy.parse("trivialaugment(m=0.5,p=0.5)") == Policy("trivialaugment", 0.5, 0.5)
    assert all(Policy.parse(p.label) == p for p in MENU)
    for bad in ("magic", "crop(q=1)", "crop(p=2)", "albumentations(m=0.5)", "trivialaugment(m=x)"):
        with pytest.raises(diffaug.DataError):
            EvalConfig(classical=bad)


def test_target_classes_draws_more_of_the_classes_the_classical_classifier_confuses(digits_train, digits_test):
    result = evaluate(digits_train, digits_test, **{**TINY, "arms": ("classical", "classical+synthesize"),
                                                    "target_classes": True, "synthetic_per_class": 20})
    targeted = result.units[0]["kept_after_filter"]["targeted"]
    error, rows = np.array(targeted["error"]), np.array(targeted["rows"])
    assert abs(rows.sum() - 200) <= 10 and (rows >= 1).all()   # the pool keeps its size, every class stays
    assert error.max() > error.min()   # (a barely trained generator and classifier err unevenly)
    assert rows[error.argmax()] > rows[error.argmin()]   # more rows for the class it gets wrong more often
    with pytest.raises(diffaug.DataError, match="target_classes"):
        EvalConfig(target_classes="yes")


def test_a_fit_budget_in_epochs_gives_the_steps_of_the_equivalent_gen_steps():
    cfg = EvalConfig(gen_epochs=320, gen_batch_size=64)
    assert cfg.gen_steps_for(100) == 500 == EvalConfig(gen_steps=500).gen_steps_for(100)   # 320 x 100 / 64
    assert cfg.gen_steps_for(60000) == 300000   # uncapped: epochs mean the same in every regime
    with pytest.raises(diffaug.DataError, match="not both"):
        EvalConfig(gen_epochs=10, gen_steps=100)
    with pytest.raises(diffaug.DataError, match="gen_epochs must be a positive number"):
        EvalConfig(gen_epochs=0)


def test_classical_perturb_is_measured_beside_classical_with_its_dose_control(digits_train, digits_test):
    result = evaluate(digits_train, digits_test, per_class=(3,), seeds=1, gen_steps=10, gen_batch_size=16,
                      classifier_steps=12, batch_size=16, perturb_copies=2, sample_steps=2, cas_steps=5,
                      reference_steps=20, classical="crop", progress=False, synthetic_per_class=4,
                      arms=("classical", "classical+perturb", "classical+perturb-control", "classical+mix",
                            "classical+mix-control"), primary="classical+perturb")
    unit = result.units[0]
    for arm in ("classical+perturb", "classical+mix", "classical+perturb-control", "classical+mix-control"):
        assert unit["arms"][arm]["synthetic_share"] == 0.5 and unit["arms"][arm]["classical"] == "crop"
    assert set(unit["perturb_label_kept"]) == {"0.375", "0.525"}   # the midpoints of two copies in (0.3, 0.6)
    assert all(0.0 <= v <= 1.0 for v in unit["perturb_label_kept"].values())
    assert "still assigns to their label" in result.table()
    assert set(result.summary["3"]["primary"]["headline"]) == {"classical", "classical+perturb-control"}


def test_the_mix_pool_holds_synthetic_and_perturbed_rows_half_and_half(digits_gen, digits_train):
    """classical+mix draws its generated rows as DiffusionAugment(mode="mix") does by default: synthetic or a
    perturbed copy of a subset image with probability 1/2 each (its control swaps them for clean real rows, as every
    dose control does: test_the_dose_control_is_the_primary_arms_batches_...)."""
    from diffaug.evaluation.unit import _pools
    subset = digits_train.subset(per_class=3, seed=0)
    cfg = EvalConfig(arms=("classical", "classical+mix"), synthetic_per_class=7, perturb_copies=2, sample_steps=3)
    pools = _pools(digits_gen, subset, cfg, seed=11, device="cpu")
    (mix, mix_labels), (synthetic, synthetic_labels) = pools["mix"], pools["synthesize"]
    perturbed, perturbed_labels = pools["perturb"]
    assert len(synthetic) == 70 and len(perturbed) == 60 and len(mix) == 140
    assert torch.equal(mix[:70], synthetic) and torch.equal(mix_labels[:70], synthetic_labels)
    cycled = torch.arange(70) % 60   # the 60 perturbed copies, then the first 10 again
    assert torch.equal(mix[70:], perturbed[cycled]) and torch.equal(mix_labels[70:], perturbed_labels[cycled])
    assert (torch.bincount(mix_labels[70:], minlength=10) >= 6).all()   # every class, 3 images x 2 copies each


# --- the precision classifiers train in ----------------------------------------------------------

@pytest.mark.parametrize("forced", ["0", "1"])
def test_classifiers_train_in_the_precision_the_user_chooses(digits_train, digits_test, monkeypatch, forced):
    from diffaug.classify.training import bf16_training, training_precision

    monkeypatch.setenv("DIFFAUG_CPU_BF16", forced)
    assert bf16_training("cpu") is (forced == "1") and training_precision("cpu") == ("bf16" if forced == "1"
                                                                                     else "float32")
    seen = []
    real_autocast = torch.autocast

    def watching(device_type, *args, **kw):   # what the training forward runs under
        seen.append((device_type, kw.get("dtype")))
        return real_autocast(device_type, *args, **kw)
    monkeypatch.setattr(torch, "autocast", watching)
    g = torch.Generator().manual_seed(0)

    def batch(step):
        idx = torch.randint(len(digits_train), (64,), generator=g)
        return digits_train.images[idx], digits_train.labels[idx]
    model = train_classifier(batch, 1, 10, steps=150, seed=0)
    assert seen == ([("cpu", torch.bfloat16)] * 150 if forced == "1" else [])
    assert all(p.dtype == torch.float32 for p in model.parameters())   # autocast: the weights stay float32
    assert accuracy(model, digits_test.images, digits_test.labels) > 0.85   # a working classifier either way


def test_float32_is_the_default_and_a_bad_precision_setting_is_refused(monkeypatch):
    from diffaug.classify.training import bf16_training

    monkeypatch.delenv("DIFFAUG_CPU_BF16", raising=False)
    assert bf16_training("cpu") is False   # opt-in: the regime choices moved at ties in bf16
    monkeypatch.setenv("DIFFAUG_CPU_BF16", "auto")   # bf16 exactly where the CPU has AMX tiles
    assert bf16_training("cpu") is bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    monkeypatch.setenv("DIFFAUG_CPU_BF16", "yes")
    with pytest.raises(diffaug.DataError, match="DIFFAUG_CPU_BF16 must be 0.*got 'yes'"):
        bf16_training("cpu")
    monkeypatch.setenv("DIFFAUG_CPU_BF16", "1")
    assert bf16_training("cuda") is False   # CUDA trains float32, whatever the setting (not measured there)
