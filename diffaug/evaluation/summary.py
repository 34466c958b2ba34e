"""The statistics of an evaluation: per regime, every arm's mean and spread, each comparison (an arm against the
baseline, a mixing arm against its dose control, the declared primary arm against each opponent) with its verdict
from verdict.py, on the metric the regime is judged by. The headline family is the plan's: every configured regime
x every opponent, Holm-corrected together."""

from __future__ import annotations

import math

import numpy as np

from ..errors import DataError
from .config import BASELINE, CONTROL, LEARNERS, LONGTAIL_LEARNERS, EvalConfig
from .metrics import unpack_bits
from .verdict import ALPHA, compare, decide, seeds_needed, strongest, t_given_split


def opponents(cfg: EvalConfig) -> list[str]:
    """The arms the primary arm is compared with in the headline: the tuned classical arm, the primary's dose
    control and, with unlabelled images or long-tailed classes, every learner of that regime run (each tuned for
    itself)."""
    found = [BASELINE, cfg.primary + CONTROL, *LEARNERS, *LONGTAIL_LEARNERS]
    return [a for a in found if a in cfg.arms and a != cfg.primary]


def claims(cfg: EvalConfig) -> dict:
    """What this run's seeds can say, known before it runs: the headline family's size (regimes x opponents), the
    fewest seeds whose sign-flip test could clear Holm in it, and whether the run has them."""
    family = len(cfg.per_class) * len(opponents(cfg))
    needed = seeds_needed(family)
    return {"family": family, "seeds": cfg.seeds, "seeds_needed": needed, "possible": cfg.seeds >= needed,
            "alpha": ALPHA}


def _balanced_weights(labels) -> np.ndarray:
    """Per test image, 1 / (its class's share of the test split): a weighted mean of `correct` is then the mean
    per-class recall, so every comparison is on balanced accuracy."""
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    return len(labels) / (np.count_nonzero(counts) * counts[labels])


def summarize(units: list, cfg: EvalConfig, n_test: int, test_labels=None) -> dict:
    """Per regime: mean/std of every arm's metric; every arm against the baseline and each mixing arm against its
    dose control (compare, Holm over the diffusion arms against the baseline); the declared primary arm against each
    opponent, Holm-corrected over every regime's headline comparisons as one family; the strongest opponent, with
    the opponents tied with it within noise. Every number is on cfg.metric (balanced accuracy under imbalance)."""
    weights = _balanced_weights(test_labels) if cfg.imbalance is not None else None
    summary, family = {}, {}
    for k in cfg.per_class:
        rows = sorted((u for u in units if u["k"] == k), key=lambda u: u["seed"])
        if not rows:
            raise DataError(f"no finished unit of regime {k} per class: the headline family is every configured "
                            "regime x opponent, so a summary needs them all")
        missing = sorted({a for u in rows for a in cfg.arms if a not in u["arms"]})
        if missing:
            raise DataError(f"regime {k}: units without the arm(s) {missing} the configuration names")
        correct = {arm: _correct(rows, arm, n_test) for arm in cfg.arms}
        versus = lambda a, b, boot=False: compare(correct[a], correct[b], weights, with_bootstrap=boot)  # noqa: E731
        metric = {arm: np.array([u["arms"][arm][cfg.metric] for u in rows], dtype=np.float64) for arm in cfg.arms}
        s = {"metric": cfg.metric, "arms": {}, "vs_" + BASELINE: {}, "vs_control": {}}
        for arm in cfg.arms:
            s["arms"][arm] = {"mean": float(metric[arm].mean()),
                              "std": float(metric[arm].std(ddof=1)) if len(rows) > 1 else math.nan,
                              "ci": t_given_split(metric[arm]), "n": len(rows),
                              "per_class": np.mean([u["arms"][arm]["per_class"] for u in rows], 0).tolist()}
            if cfg.imbalance is not None:   # by the class's rank in its unit's draw: the tail's own accuracy
                s["arms"][arm]["groups"] = {g: float(np.mean([u["arms"][arm]["groups"][g] for u in rows]))
                                            for g in ("many", "medium", "few")}
            if arm != BASELINE:
                s["vs_" + BASELINE][arm] = versus(arm, BASELINE)
            if arm + CONTROL in cfg.arms:
                s["vs_control"][arm] = versus(arm, arm + CONTROL)
        decide({arm: s["vs_" + BASELINE][arm] for arm in cfg.diffusion_arms}, len(rows))
        s["holm"] = {arm: s["vs_" + BASELINE][arm] for arm in cfg.diffusion_arms}
        primary = cfg.primary
        headline = {opp: versus(primary, opp, boot=True) for opp in opponents(cfg)}
        if cfg.imbalance is not None:
            for opp, h in headline.items():
                h["few"] = t_given_split([u["arms"][primary]["groups"]["few"] - u["arms"][opp]["groups"]["few"]
                                          for u in rows])
        family.update({(str(k), opp): h for opp, h in headline.items()})
        standing = [a for a in (BASELINE, *LEARNERS, *LONGTAIL_LEARNERS) if a in cfg.arms]
        best = strongest({a: s["arms"][a]["mean"] for a in standing}, lambda a, b: versus(a, b))
        s["primary"] = {"arm": primary, "headline": headline, "strongest": best["arm"],
                        "strongest_tied_with": best["tied_with"]}
        if any("quality" in u for u in rows):
            q = [u["quality"] for u in rows if "quality" in u]
            s["quality"] = {m: float(np.mean([x[m] for x in q]))
                            for m in ("cas", "fid_own", "kid_own", "precision", "recall", "memorization_rate")}
        kept = [u["perturb_label_kept"] for u in rows if "perturb_label_kept" in u]
        if kept:
            s["perturb_label_kept"] = {st: float(np.mean([x[st] for x in kept])) for st in kept[0]}
        summary[str(k)] = s
    decide(family, cfg.seeds)
    for s in summary.values():   # the flat view of the two headline comparisons every reader asks for first
        h = s["primary"]["headline"]
        s["primary"]["gain"] = claim_of(h[BASELINE])
        control = s["primary"]["arm"] + CONTROL
        if control in h:
            s["primary"].update(control=control, vs_control=claim_of(h[control]))
    return summary


def claim_of(c: dict) -> dict:
    """A decided comparison as the numbers a reader quotes: the mean, the two-level interval that decides, the
    sign-flip p (plain and Holm-adjusted) and the verdict."""
    return {"mean": c["mean"], "ci_low": c["two_level"]["ci_low"], "ci_high": c["two_level"]["ci_high"],
            "levels": c["two_level"]["levels"], "p_value": c["sign_flip_p"], "p_holm": c["p_holm"],
            "verdict": c["verdict"]}


def _correct(rows: list, arm: str, n_test: int) -> np.ndarray:
    """(seeds, test images): the share of the arm's classifiers that got each test image right."""
    return np.stack([np.mean([unpack_bits(b, n_test) for b in u["arms"][arm]["correct"]], 0) for u in rows])
