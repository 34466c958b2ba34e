"""Claims a statistician would sign: the sign-flip test over seeds and the two-level interval decide every verdict,
on the regime's metric, over the plan's family; checked on constructed units with known answers."""

import math

import numpy as np
import pytest
import torch

import diffaug
from diffaug.evaluation import EvalConfig, compare, sign_flip_p, two_level
from diffaug.evaluation.metrics import pack_bits
from diffaug.evaluation.summary import claims, summarize
from diffaug.evaluation.verdict import seeds_needed

ARMS = ("real", "classical", "classical+synthesize", "classical+synthesize-control")


def units_from(correct: dict, labels: np.ndarray, k: int = 10, seed_start: int = 0) -> list:
    """Units as evaluate stores them, from {arm: (seeds, test images) 0/1 array} on a test split with `labels`."""
    classes = int(labels.max()) + 1
    units = []
    for s in range(next(iter(correct.values())).shape[0]):
        arms = {}
        for arm, c in correct.items():
            bits = c[s].astype(bool)
            recall = [float(bits[labels == j].mean()) for j in range(classes)]
            arms[arm] = {"accuracy": int(bits.sum()) / len(bits), "balanced_accuracy": float(np.mean(recall)),
                         "per_class": recall, "correct": [pack_bits(torch.from_numpy(bits))],
                         "groups": {"many": recall[0], "medium": recall[0], "few": recall[-1]}}
        units.append({"k": k, "seed": seed_start + s, "arms": arms})
    return units


def constructed(seeds: int, gains: list, n: int = 900, seed: int = 0) -> dict:
    """Every arm right on a random 90% of the test images per seed; the primary arm right on `gains[s]` more
    images of seed s (images the classical arm got wrong), its control as the classical arm."""
    rng = np.random.default_rng(seed)
    base = (rng.random((seeds, n)) < 0.9).astype(np.uint8)
    primary = base.copy()
    for s, g in enumerate(gains):
        wrong = np.flatnonzero(base[s] == 0)
        primary[s, rng.choice(wrong, g, replace=False)] = 1
    return {"real": base, "classical": base, "classical+synthesize": primary, "classical+synthesize-control": base}


def test_seeds_with_equal_paired_differences_claim_nothing_and_never_give_p_near_zero():
    """The demo's case: three seeds, each +5 test images of 900 for the primary arm. The t-interval over seeds had
    no width and p ~ 1e-11; the sign-flip test's smallest p for three seeds is 0.25."""
    labels = np.arange(900) % 10
    cfg = EvalConfig(per_class=(10,), seeds=3, arms=ARMS)
    summary = summarize(units_from(constructed(3, [5, 5, 5]), labels), cfg, 900, labels)
    h = summary["10"]["primary"]["headline"]["classical"]
    assert h["mean"] == pytest.approx(5 / 900) and h["per_seed"] == [5 / 900] * 3   # equal, bit for bit
    assert h["sign_flip_p"] == 0.25 and h["verdict"] == "no claim possible"
    assert math.isnan(h["t_given_split"]["p_value"]) and math.isnan(h["t_given_split"]["ci_low"])   # no estimate
    assert h["two_level"]["ci_high"] > h["two_level"]["ci_low"]   # the test images still give the mean a spread
    assert h["discordant"] == [[5, 0]] * 3
    assert summary["10"]["primary"]["gain"]["verdict"] == "no claim possible"
    plan = claims(cfg)
    assert plan == {"family": 2, "seeds": 3, "seeds_needed": 7, "possible": False, "alpha": 0.05}
    # five seeds of equal gains: 2^(1-5) = 0.0625, still no claim however many test images agree
    five = summarize(units_from(constructed(5, [9] * 5), labels), EvalConfig(per_class=(10,), seeds=5, arms=ARMS),
                     900, labels)
    assert five["10"]["primary"]["headline"]["classical"]["sign_flip_p"] == 0.0625
    assert five["10"]["primary"]["gain"]["verdict"] != "gain"


def test_a_consistent_gain_over_enough_seeds_is_claimed_and_a_zero_one_is_not():
    labels = np.arange(900) % 10
    cfg = EvalConfig(per_class=(10,), seeds=10, arms=ARMS)
    gains = [12, 9, 15, 11, 8, 14, 10, 13, 9, 12]
    h = summarize(units_from(constructed(10, gains), labels), cfg, 900, labels)["10"]["primary"]
    assert h["gain"]["verdict"] == "gain" and h["gain"]["ci_low"] > 0
    assert h["headline"]["classical"]["sign_flip_p"] == pytest.approx(2 / 1024)
    assert h["headline"]["classical"]["p_holm"] == pytest.approx(2 * 2 / 1024)   # a family of two
    none = summarize(units_from(constructed(10, [0] * 10), labels), cfg, 900, labels)["10"]["primary"]
    assert none["gain"]["verdict"] == "no estimate" and none["gain"]["p_value"] == 1.0


def test_the_sign_flip_test_and_the_two_level_interval_on_known_answers():
    assert sign_flip_p([1, 1, 1]) == 0.25 and sign_flip_p([1, -1]) == 1.0 and sign_flip_p([0, 0, 0]) == 1.0
    # 8 seeds, one of them negative and smaller than the rest: patterns with |mean| >= observed are 2 x (1 + 1)
    assert sign_flip_p([3, 3, 3, 3, 3, 3, 3, -1]) == pytest.approx(4 / 256)
    assert seeds_needed(6) == 8 and seeds_needed(2) == 7 and seeds_needed(1) == 6
    # the interval's variance against a simulation of the crossed model it assumes
    rng = np.random.default_rng(1)
    s, n, sd_seed, sd_image, sd_resid = 6, 400, 0.02, 0.3, 0.5
    means, widths = [], []
    for _ in range(300):
        d = 0.01 + rng.normal(0, sd_seed, (s, 1)) + rng.normal(0, sd_image, (1, n)) + rng.normal(0, sd_resid, (s, n))
        interval = two_level(d)
        means.append(interval["mean"])
        widths.append(interval["se"])
    true_se = math.sqrt(sd_seed ** 2 / s + sd_image ** 2 / n + sd_resid ** 2 / (s * n))
    assert np.std(means) == pytest.approx(true_se, rel=0.15) and np.mean(widths) == pytest.approx(true_se, rel=0.15)
    assert "test images only" in two_level(rng.normal(0, 1, (1, 50)))["levels"]


def test_under_imbalance_every_number_of_the_family_is_on_balanced_accuracy():
    """A test split of 800 images of class 0 and 100 of class 1: the primary arm gets 20 more images of class 1
    right and 30 fewer of class 0, so it loses on accuracy and gains on balanced accuracy."""
    labels = np.array([0] * 800 + [1] * 100)
    seeds = 8
    rng = np.random.default_rng(0)
    base = np.ones((seeds, 900), np.uint8)
    base[:, 800:] = 0
    primary = base.copy()
    for s in range(seeds):
        primary[s, 800 + rng.choice(100, 20 + s, replace=False)] = 1
        primary[s, rng.choice(800, 30, replace=False)] = 0
    arms = ("real", "classical", "classical+rebalance", "classical+rebalance-control", "resample", "logit-adjust")
    correct = {a: (primary if a == "classical+rebalance" else base) for a in arms}
    cfg = EvalConfig(per_class=(20,), seeds=seeds, imbalance=10, arms=arms)
    h = summarize(units_from(correct, labels, k=20), cfg, 900, labels)["20"]["primary"]["headline"]
    for opponent, c in h.items():
        balanced = [(20 + s) / 100 / 2 - 30 / 800 / 2 for s in range(seeds)]
        assert c["per_seed"] == pytest.approx(balanced), opponent   # not the accuracy's (20 + s - 30) / 900
        assert c["mean"] > 0 and c["sign_flip_p"] == pytest.approx(2 / 256)
        assert c["family"] == 4


def test_the_family_is_the_plans_and_a_missing_regime_is_an_error():
    labels = np.arange(900) % 10
    cfg = EvalConfig(per_class=(10, 50), seeds=3, arms=ARMS)
    assert claims(cfg)["family"] == 4
    with pytest.raises(diffaug.DataError, match="regime 50"):
        summarize(units_from(constructed(3, [5, 5, 5]), labels), cfg, 900, labels)


def test_the_strongest_opponent_says_when_it_is_a_tie_within_noise():
    labels = np.arange(900) % 10
    seeds = 8
    c = constructed(seeds, [5] * seeds)
    rng = np.random.default_rng(3)
    near = c["classical"].copy()
    for s in range(seeds):   # one image more or fewer than classical, per seed: a tie
        i = rng.integers(900)
        near[s, i] = 1 - near[s, i]
    arms = ("real", "classical", "self-training", "fixmatch", "self-training+synthesize",
            "self-training+synthesize-control")
    correct = {"real": c["real"], "classical": c["classical"], "self-training": near,
               "fixmatch": np.zeros_like(near), "self-training+synthesize": c["classical+synthesize"],
               "self-training+synthesize-control": c["classical"]}
    cfg = EvalConfig(per_class=(10,), seeds=seeds, unlabeled="rest", arms=arms)
    p = summarize(units_from(correct, labels), cfg, 900, labels)["10"]["primary"]
    assert p["strongest"] in ("classical", "self-training") and p["strongest_tied_with"] == [
        {"classical": "self-training", "self-training": "classical"}[p["strongest"]]]
    assert "fixmatch" not in p["strongest_tied_with"]
