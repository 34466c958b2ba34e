"""Long-tailed classes: the imbalanced regime of `evaluate` (its profile, metric, opponents and rebalancing arms),
`SampleBank.build(per_class="balance")`, per-class probabilities in the adapters and the DataLoader plan."""


import numpy as np
import pytest
import torch

import diffaug
from diffaug import DataError, DiffusionAugment, DiffusionBatchAugment, MismatchError, SampleBank, rebalance
from diffaug.classify.training import batch_prior, fit_classifier, mixed_batches, predict_proba
from diffaug.cli import main
from diffaug.data import image_hashes, longtail_counts
from diffaug.evaluation.config import REBALANCE, EvalConfig
from diffaug.evaluation.unitplan import unit_streams
from diffaug.evaluation.unit import _rebalance

FAST = dict(gen_steps=20, classifier_steps=25, classical="crop", metrics=False, synthetic_per_class=20,
            classifier_repeats=1, progress=False)


@pytest.fixture(scope="module")
def longtail_eval(digits_train, digits_test, tmp_path_factory):
    out = tmp_path_factory.mktemp("longtail")
    result = diffaug.evaluate(digits_train, digits_test, per_class=(20,), imbalance=10, seeds=2, out_dir=out, **FAST)
    return result, out


def uneven(data, counts):
    keep = np.concatenate([np.flatnonzero(data.labels.numpy() == c)[:n] for c, n in enumerate(counts)])
    return data.select(np.sort(keep))


def test_the_drawn_profile_matches_the_requested_head_and_ratio_exactly(longtail_eval, digits_train):
    for head, ratio, tail in ((50, 10, 5), (500, 100, 5), (20, 1, 20), (7, 3, 2), (12, 24, 1), (5, 2, 3)):
        counts = longtail_counts(head, ratio, 10, seed=3)
        expected = [int(np.floor(head * ratio ** (-i / 9) + 0.5 + 1e-9)) for i in range(10)]   # half up
        expected[0], expected[-1] = head, tail
        assert sorted(counts, reverse=True) == expected, (head, ratio)
    assert longtail_counts(50, 10, 10, seed=0) != longtail_counts(50, 10, 10, seed=1)   # the order is drawn per seed
    result, _ = longtail_eval
    for u in result.units:
        wanted = longtail_counts(20, 10, 10, unit_streams(20, u["seed"], 1)["subset"])
        assert u["class_counts"] == wanted and u["subset_size"] == sum(wanted)
        assert max(u["class_counts"]) == 20 and min(u["class_counts"]) == 2
        few = u["groups"]["few"]
        assert sorted(u["class_counts"][c] for c in few) == sorted(u["class_counts"])[:3]
    assert digits_train.subset([3, 1, 4, 1, 5, 9, 2, 6, 5, 3], seed=0).class_counts() == [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]


def test_the_test_split_is_untouched_and_the_headline_is_balanced_accuracy(longtail_eval, digits_test):
    result, out = longtail_eval
    s = result.summary["20"]
    assert s["metric"] == "balanced_accuracy"
    for u in result.units:
        assert u["test_fingerprint"] == digits_test.fingerprint()
        for arm in u["arms"].values():   # one classifier per arm: its balanced accuracy is its mean recall
            assert arm["balanced_accuracy"] == pytest.approx(np.mean(arm["per_class"]), abs=1e-6)
    for arm in result.config["arms"]:
        assert s["arms"][arm]["mean"] == pytest.approx(np.mean([u["arms"][arm]["balanced_accuracy"]
                                                                for u in result.units]))
    assert set(s["primary"]["headline"]) == {"classical", "classical+rebalance-control", "resample", "logit-adjust"}
    assert s["primary"]["strongest"] in ("classical", "resample", "logit-adjust")
    report = (out / "results.md").read_text()
    assert "Test balanced accuracy" in report and "few-shot classes' accuracy" in report
    assert "| 20 | " in report.split("many-, medium- and few-shot")[1]


def test_a_rebalancing_arms_batches_are_its_controls_with_the_generated_rows_swapped(digits_gen, digits_train):
    subset = digits_train.subset(longtail_counts(20, 10, 10, seed=0), seed=0)
    counts = subset.class_counts()
    pools = _rebalance(digits_gen, subset, EvalConfig(per_class=(20,), imbalance=10, synthetic_per_class=30), 3, "cpu")
    info, made, real = pools["_rebalance"], pools[REBALANCE], pools[REBALANCE + "-real"]
    assert info["gaps"] == [20 - n for n in counts] and info["share"] == pytest.approx(
        sum(info["gaps"]) / (len(subset) + sum(info["gaps"])))
    assert torch.equal(made[1], real[1])
    own = {c: {bytes(h) for h in image_hashes(subset.images[subset.labels == c])} for c in range(10)}
    assert all(bytes(h) in own[int(y)] for h, y in zip(image_hashes(real[0]), real[1]))   # a real image of its class
    known = set().union(*own.values())
    assert not any(bytes(h) in known for h in image_hashes(made[0]))
    arm = mixed_batches(subset, made, info["share"], 64, None, (1, 2), "cpu")
    control = mixed_batches(subset, real, info["share"], 64, None, (1, 2), "cpu")
    n_real = 64 - round(info["share"] * 64)
    seen = torch.zeros(10)
    for step in range(300):
        (x, y), (xc, yc) = arm(step), control(step)
        assert torch.equal(y, yc) and torch.equal(x[:n_real], xc[:n_real])
        assert not torch.equal(x[n_real:], xc[n_real:])
        seen += torch.bincount(y, minlength=10)
    assert torch.allclose(seen / seen.sum(), torch.full((10,), 0.1), atol=0.02)   # filled: every class alike
    half = _rebalance(digits_gen, subset, EvalConfig(per_class=(20,), imbalance=10, rebalance_fill=0.5,
                                                     synthetic_per_class=30), 3, "cpu")["_rebalance"]
    assert half["gaps"] == [int(round(0.5 * (20 - n))) for n in counts]


def test_resampling_and_the_logit_adjusted_loss_correct_for_the_prior(digits_train, digits_test):
    subset = digits_train.subset(longtail_counts(30, 10, 10, seed=4), seed=0)
    counts = torch.tensor(subset.class_counts(), dtype=torch.float)
    draw = mixed_batches(subset, None, 0.0, 128, None, (5, 6), "cpu", balanced=True)
    seen = sum(torch.bincount(draw(step)[1], minlength=10) for step in range(200)).float()
    assert torch.allclose(seen / seen.sum(), torch.full((10,), 0.1), atol=0.02)
    assert torch.allclose(batch_prior(subset, None, 0.0, 128), counts / counts.sum())
    assert torch.allclose(batch_prior(subset, None, 0.0, 128, balanced=True), torch.full((10,), 0.1))
    pool = (subset.images[:10], torch.zeros(10, dtype=torch.long))   # a pool of class 0 at a quarter of each batch
    expected = 0.75 * counts / counts.sum() + 0.25 * torch.nn.functional.one_hot(torch.tensor(0), 10)
    assert torch.allclose(batch_prior(subset, pool, 0.25, 128), expected)
    tail = torch.tensor([c for c in range(10) if counts[c] <= 6])   # the classes of 3 and 5 images

    def tail_predictions(tau):
        model = fit_classifier(subset, None, (7, 8), 300, 128, "cpu", logit_adjustment=tau)
        return torch.isin(predict_proba(model, digits_test.images).argmax(1), tail).float().mean().item()
    plain, adjusted = tail_predictions(0.0), tail_predictions(1.0)
    share = torch.isin(digits_test.labels, tail).float().mean().item()
    assert adjusted > plain + 0.02, (plain, adjusted, share)   # the adjusted loss stops starving the tail


def test_bad_long_tail_settings_get_one_clear_error_each(tmp_path, capsys):
    for value in ("0.5", "ten", "inf"):
        with pytest.raises(SystemExit):
            main(["evaluate", "digits", "--imbalance", value, "--out", str(tmp_path / "x")])
        assert "--imbalance: takes a number >= 1" in capsys.readouterr().err
    assert main(["evaluate", "digits", "--imbalance", "100", "--per-class", "20", "--out", str(tmp_path / "y")]) == 2
    assert "rounds to none" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    with pytest.raises(DataError, match="separate regimes"):
        EvalConfig(imbalance=10, unlabeled="rest")
    with pytest.raises(DataError, match="for long-tailed classes"):
        EvalConfig(arms=("real", "classical", "classical+rebalance"))
    with pytest.raises(DataError, match="no head"):
        EvalConfig(per_class=(0,), imbalance=10)
    with pytest.raises(DataError, match="rounds to none"):
        longtail_counts(12, 25, 10)   # 0.48 images


def test_a_short_class_is_said_not_silently_drawn(digits_train, digits_test, tmp_path):
    counts = [30] * 9 + [12]
    with pytest.warns(UserWarning, match="class '9' holds 12 training images, fewer than the 20 asked"):
        result = diffaug.evaluate(uneven(digits_train, counts), digits_test, per_class=(20,), seeds=1,
                                  arms=("real", "classical", "synthesize"), out_dir=tmp_path, **FAST)
    assert result.units[0]["class_counts"] == [20] * 9 + [12]
    assert result.config["short_classes"] == {"20": {"9": [20, 12]}}
    assert "Short classes at 20 per class: `9` holds 12 training images" in (tmp_path / "results.md").read_text()


def test_balance_fills_a_bank_to_the_largest_class_and_refuses_unknown_classes(digits_gen, digits_train, tmp_path):
    counts = [2, 5, 1, 3, 4, 2, 6, 1, 2, 3]
    data = uneven(digits_train, counts)
    bank = SampleBank.build(digits_gen, tmp_path / "bank", per_class="balance", data=data, progress=False)
    made = np.bincount(np.load(tmp_path / "bank" / "synthetic_labels.npy"), minlength=10)
    assert (made + np.array(counts)).tolist() == [6] * 10
    assert bank.meta["per_class"] == [6 - n for n in counts]
    SampleBank.build(digits_gen, tmp_path / "four", per_class="balance", balance_to=4, data=data, progress=False)
    made = np.bincount(np.load(tmp_path / "four" / "synthetic_labels.npy"), minlength=10)
    assert (made + np.array(counts)).tolist() == [max(4, n) for n in counts]
    with pytest.raises(DataError, match="pass the real images"):
        SampleBank.build(digits_gen, tmp_path / "none", per_class="balance", progress=False)
    eleven = diffaug.ImageData(data.images[:12], torch.arange(12) % 11, [str(c) for c in range(11)])
    with pytest.raises(MismatchError, match="never saw"):
        SampleBank.build(digits_gen, tmp_path / "eleven", per_class="balance", data=eleven, progress=False)
    assert not (tmp_path / "none").exists() and not (tmp_path / "eleven").exists()


def test_per_class_probabilities_and_the_rebalancing_plan_in_a_dataloader(digits_gen, digits_train, tmp_path):
    from torch.utils.data import DataLoader

    counts = [40, 20, 10, 5, 40, 20, 10, 5, 40, 20]
    data = uneven(digits_train, counts)
    bank = SampleBank.build(digits_gen, tmp_path / "bank", per_class=20, progress=False)
    plan = rebalance(data.labels)
    assert plan.class_p == pytest.approx([(40 - n) / 40 for n in counts])
    real = {bytes(h) for h in image_hashes(data.images)}
    tf = DiffusionAugment(bank, class_p=plan.class_p)

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return tf(data.images[i], int(data.labels[i]))

    loader = DataLoader(Rows(), batch_size=500, sampler=plan.sampler(20000, torch.Generator().manual_seed(0)))
    total, from_real = torch.zeros(10), torch.zeros(10)
    for x, y in loader:
        is_real = torch.tensor([bytes(h) in real for h in image_hashes(x)])
        total += torch.bincount(y, minlength=10)
        from_real += torch.bincount(y[is_real], minlength=10)
    assert torch.allclose(total / total.sum(), torch.full((10,), 0.1), atol=0.02)   # every class alike
    per_image = from_real / torch.tensor(counts)   # each real image as often as a head class's: 20000 / 10 / 40
    assert ((per_image > 0.75 * 50) & (per_image < 1.25 * 50)).all(), per_image   # >= 4 sd for the 5-image classes
    head = DiffusionAugment(bank, class_p={"0": 1.0})   # a dict: the classes it names, the others never
    assert not np.array_equal(head(data.images[0], 0)[0], data.images[0].numpy())
    assert torch.equal(head(data.images[-1], 9)[0], data.images[-1])
    with pytest.raises(DataError, match="need the class label"):
        head(data.images[0])
    with pytest.raises(MismatchError, match="3 probabilities but the source has 10"):
        DiffusionAugment(bank, class_p=[0.5, 0.5, 0.5])
    with pytest.raises(MismatchError, match="not a class"):
        DiffusionAugment(bank, class_p={"cat": 1.0})
    batch = DiffusionBatchAugment(bank, class_p=[1.0] * 5 + [0.0] * 5)
    x, y = data.images[:60], data.labels[:60]
    out, _ = batch(x, y)
    changed = (out != x).flatten(1).any(1)
    assert changed[y < 5].all() and not changed[y >= 5].any()


def test_albumentations_takes_per_class_probabilities_and_keeps_them_when_serialized(digits_gen, tmp_path):
    A = pytest.importorskip("albumentations")
    from diffaug.adapters.albumentations import AlbumentationsDiffusionAugment

    bank = SampleBank.build(digits_gen, tmp_path / "bank", per_class=5, progress=False)
    aug = AlbumentationsDiffusionAugment(str(tmp_path / "bank"), class_p=[0.0] * 9 + [1.0])
    image = np.zeros((8, 8, 1), np.uint8)
    assert np.array_equal(aug(image=image, class_label=3)["image"], image)
    assert not np.array_equal(aug(image=image, class_label=9)["image"], image)
    with pytest.raises(DataError, match="need the class label"):
        aug(image=image)
    back = A.from_dict(A.to_dict(A.Compose([aug])))
    assert back.transforms[0].class_p == aug.class_p and bank.num_classes == 10
