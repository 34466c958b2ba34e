"""The statistics of an evaluation: per regime, every arm's mean and spread, paired differences against the
baseline and the dose controls, and the headline (the declared primary arm against each opponent, Holm-corrected
over the whole family), on the metric the regime is judged by."""

from __future__ import annotations

import math

import numpy as np

from .config import BASELINE, CONTROL, LEARNERS, LONGTAIL_LEARNERS, EvalConfig
from .metrics import detectable, holm, paired_bootstrap, paired_ci, unpack_bits


def opponents(cfg: EvalConfig) -> list[str]:
    """The arms the primary arm is compared with in the headline: the tuned classical arm, the primary's dose
    control and, with unlabelled images, every semi-supervised learner run (each tuned for itself)."""
    found = [BASELINE, cfg.primary + CONTROL, *LEARNERS, *LONGTAIL_LEARNERS]
    return [a for a in found if a in cfg.arms and a != cfg.primary]


def _balanced_weights(labels) -> np.ndarray:
    """Per test image, 1 / (its class's share of the test split): a weighted mean of `correct` is then the mean
    per-class recall, so the bootstrap resamples balanced accuracy."""
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    return len(labels) / (np.count_nonzero(counts) * counts[labels])


def summarize(units: list, cfg: EvalConfig, n_test: int, test_labels=None) -> dict:
    """Per regime: mean/std of every arm's accuracy, the paired difference of every arm against the baseline and
    of each mixing arm against its dose control; the declared primary arm against each of its opponents (t-interval
    over seeds, a paired bootstrap over seeds and test images, and Holm's correction over every headline
    comparison of the evaluation, all regimes together), the strongest non-diffusion opponent named; and
    Holm-corrected comparisons of every diffusion arm with the baseline."""
    summary = {}
    for k in cfg.per_class:
        rows = sorted((u for u in units if u["k"] == k), key=lambda u: u["seed"])
        if not rows:
            continue
        acc = {arm: np.array([u["arms"][arm][cfg.metric] for u in rows]) for arm in cfg.arms}
        s = {"metric": cfg.metric, "arms": {}, "vs_" + BASELINE: {}, "vs_control": {}}
        for arm in cfg.arms:
            s["arms"][arm] = {"mean": float(acc[arm].mean()),
                              "std": float(acc[arm].std(ddof=1)) if len(rows) > 1 else math.nan,
                              "ci": paired_ci(acc[arm]), "n": len(rows),
                              "per_class": np.mean([u["arms"][arm]["per_class"] for u in rows], 0).tolist()}
            if cfg.imbalance is not None:   # by the class's rank in its unit's draw: the tail's own accuracy
                s["arms"][arm]["groups"] = {g: float(np.mean([u["arms"][arm]["groups"][g] for u in rows]))
                                            for g in ("many", "medium", "few")}
            if arm != BASELINE:
                s["vs_" + BASELINE][arm] = paired_ci(acc[arm] - acc[BASELINE])
            if arm + CONTROL in cfg.arms:
                s["vs_control"][arm] = paired_ci(acc[arm] - acc[arm + CONTROL])
        primary = cfg.primary
        weights = _balanced_weights(test_labels) if cfg.imbalance is not None else None
        headline = {opp: {"ci": paired_ci(acc[primary] - acc[opp]),
                          "bootstrap": paired_bootstrap(_correct(rows, primary, n_test), _correct(rows, opp, n_test),
                                                        weights=weights)}
                    for opp in opponents(cfg)}
        if cfg.imbalance is not None:
            for opp, h in headline.items():
                h["few"] = paired_ci([u["arms"][primary]["groups"]["few"] - u["arms"][opp]["groups"]["few"]
                                      for u in rows])
        standing = [a for a in (BASELINE, *LEARNERS, *LONGTAIL_LEARNERS) if a in cfg.arms]
        s["primary"] = {"arm": primary, "gain": headline[BASELINE]["ci"], "bootstrap": headline[BASELINE]["bootstrap"],
                        "headline": headline, "strongest": max(standing, key=lambda a: s["arms"][a]["mean"])}
        if primary + CONTROL in headline:
            s["primary"].update(control=primary + CONTROL, vs_control=headline[primary + CONTROL]["ci"],
                                bootstrap_vs_control=headline[primary + CONTROL]["bootstrap"])
        s["holm"] = holm({arm: acc[arm] - acc[BASELINE] for arm in cfg.diffusion_arms})
        if any("quality" in u for u in rows):
            q = [u["quality"] for u in rows if "quality" in u]
            s["quality"] = {m: float(np.mean([x[m] for x in q]))
                            for m in ("cas", "fid_own", "kid_own", "precision", "recall", "memorization_rate")}
        kept = [u["perturb_label_kept"] for u in rows if "perturb_label_kept" in u]
        if kept:
            s["perturb_label_kept"] = {st: float(np.mean([x[st] for x in kept])) for st in kept[0]}
        summary[str(k)] = s
    _correct_headlines(summary, units, cfg)
    return summary


def _correct_headlines(summary: dict, units: list, cfg: EvalConfig) -> None:
    """Holm over every headline comparison of the evaluation (the primary arm against each opponent, in every
    regime): each gets its adjusted p-value and a Bonferroni interval, the family's size, and the smallest gain
    these seeds detect at 80% power from the spread they showed (plain paired t: the power to tell)."""
    diffs = {}
    for k, s in summary.items():
        rows = sorted((u for u in units if str(u["k"]) == k), key=lambda u: u["seed"])
        for opp in s["primary"]["headline"]:
            diffs[k, opp] = [u["arms"][cfg.primary]["accuracy"] - u["arms"][opp]["accuracy"] for u in rows]
    for (k, opp), h in holm(diffs).items():
        summary[k]["primary"]["headline"][opp].update(holm=h, family=len(diffs),
                                                      detectable_80=detectable(h["std"], h["n"]))


def _correct(rows: list, arm: str, n_test: int) -> np.ndarray:
    """(seeds, test images): the share of the arm's classifiers that got each test image right."""
    return np.stack([np.mean([unpack_bits(b, n_test) for b in u["arms"][arm]["correct"]], 0) for u in rows])
