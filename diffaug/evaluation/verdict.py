"""Whether a comparison makes a claim, decided in one place.

A comparison is two arms scored on the same test images by the classifiers of several seeds: a (seeds x test
images) matrix of paired differences. Two sources of error move its mean: the seeds (subset, generator, classifier)
and the finite test split, on which accuracy moves in steps of one image. The verdict rests on two numbers:

- **the exact sign-flip test over seeds** (Fisher's randomization test of the seeds' paired differences): under
  "no difference" each seed's difference is as likely negative as positive, so its p-value is the share of the
  2^S sign patterns whose mean is at least as far from 0 as the one observed. Equal differences cannot fool it: its
  smallest p is 2^(1-S), so three seeds can never support a claim. Holm's correction runs over these p-values.
- **the two-level interval** (seeds and test images crossed, random effects): Var(mean) = (MS_seed + MS_image -
  MS_resid) / (S N) from the two-way ANOVA of the difference matrix, each variance component floored at zero, with
  Satterthwaite's degrees of freedom. It carries the test split's sampling error that a t-interval over seeds
  computed on one test split leaves out.

A gain is claimed when the Holm-adjusted sign-flip p is below alpha and the two-level interval lies above 0 (a
loss, below); otherwise no claim. The t-interval over seeds stays in the report, named for what it is: the spread
given this test split.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

ALPHA = 0.05
GAIN, LOSS, NO_CLAIM, TOO_FEW, NO_ESTIMATE = "gain", "loss", "no claim", "no claim possible", "no estimate"
EXACT_UP_TO = 16   # seeds: all 2^S sign patterns enumerated; beyond, a seeded Monte Carlo of MONTE_CARLO patterns
MONTE_CARLO = 200_000
TIE = 1e-12   # differences this close count as equal (they come from integer counts of test images)


def sign_flip_p(diffs) -> float:
    """Two-sided p-value of the exact sign-flip (randomization) test that the seeds' paired differences are
    symmetric about 0: the share of sign patterns whose |mean| is at least the observed |mean|. 1 for no seeds
    or an observed mean of 0."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) == 0:
        return math.nan
    observed = abs(d.mean())
    if observed <= TIE:
        return 1.0
    if len(d) <= EXACT_UP_TO:
        signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))[None, :]) & 1)
        return float(np.mean(np.abs(signs @ d) / len(d) >= observed - TIE))
    rng = np.random.default_rng(0)
    signs = rng.choice((-1.0, 1.0), size=(MONTE_CARLO, len(d)))
    return float((1 + np.sum(np.abs(signs @ d) / len(d) >= observed - TIE)) / (1 + MONTE_CARLO))


def seeds_needed(family: int, alpha: float = ALPHA) -> int:
    """The fewest seeds whose sign-flip test can clear Holm's first step in a family of `family` comparisons:
    the smallest S with 2^(1-S) <= alpha / family."""
    return max(2, 1 + math.ceil(math.log2(max(1, family) / alpha) - 1e-12))


def two_level(diff, confidence: float = 0.95) -> dict:
    """The mean of a (seeds, test images) matrix of paired differences with an interval over both levels, crossed
    (random-effects two-way ANOVA; Satterthwaite's degrees of freedom). One seed: the test images' level only,
    said in `levels`. A matrix with no spread at all gives no interval (`ci_low` and `ci_high` NaN)."""
    d = np.asarray(diff, dtype=np.float64)
    s, n = d.shape
    mean = float(d.mean())
    rows, cols = d.mean(1), d.mean(0)
    ms_image = s * np.sum((cols - mean) ** 2) / (n - 1) if n > 1 else 0.0
    if s > 1:
        ms_seed = n * np.sum((rows - mean) ** 2) / (s - 1)
        ms_resid = np.sum((d - rows[:, None] - cols[None, :] + mean) ** 2) / ((s - 1) * (n - 1)) if n > 1 else 0.0
        # sigma_seed^2 / S + sigma_image^2 / N + sigma_resid^2 / (S N), each component floored at 0
        parts = [(max(ms_seed - ms_resid, 0.0), s - 1), (max(ms_image - ms_resid, 0.0), n - 1),
                 (ms_resid, (s - 1) * (n - 1))]
        levels = "seeds and test images"
    else:
        parts, levels = [(ms_image, n - 1)], "test images only (one seed)"
    var = sum(p for p, _ in parts) / (s * n)
    out = {"mean": mean, "se": math.sqrt(var), "levels": levels, "confidence": confidence}
    if var <= TIE ** 2:
        return {**out, "df": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    denominator = sum((p / (s * n)) ** 2 / df for p, df in parts if p > 0 and df > 0)
    df = var ** 2 / denominator if denominator > 0 else math.inf
    half = stats.t.ppf(0.5 + confidence / 2, df) * math.sqrt(var)
    return {**out, "df": float(df), "ci_low": mean - half, "ci_high": mean + half}


def t_given_split(diffs, confidence: float = 0.95) -> dict:
    """The t-interval over seeds of their paired differences, with its p-value: the spread between seeds on this
    one test split. Differences with no spread give no estimate (NaN interval and p), never p = 0."""
    x = np.asarray(diffs, dtype=np.float64)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    if n < 2 or not std > TIE:
        return {"n": n, "mean": mean, "std": std, "ci_low": math.nan, "ci_high": math.nan, "confidence": confidence,
                "p_value": math.nan}
    se = std / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * se)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half,
            "confidence": confidence, "p_value": float(2 * stats.t.sf(abs(mean) / se, n - 1))}


def bootstrap(diff, draws: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Paired bootstrap of the mean of a (seeds, test images) matrix of differences: each draw resamples the seeds
    and, independently, the test images. With one seed it resamples the test images only, and says so."""
    d = np.asarray(diff, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n_seeds, n_images = d.shape
    means = np.empty(draws)
    for i in range(draws):
        means[i] = d[rng.integers(n_seeds, size=n_seeds)][:, rng.integers(n_images, size=n_images)].mean()
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"mean": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi), "confidence": confidence,
            "draws": draws, "levels": "seeds and test images" if n_seeds > 1 else "test images only (one seed)"}


def compare(correct_a, correct_b, weights=None, with_bootstrap: bool = False) -> dict:
    """Arm a against arm b: `correct_*` (seeds, test images) are the shares of each arm's classifiers that got each
    test image right (0/1 with one classifier per seed); `weights` (test images,), mean 1, weight each image (balanced
    accuracy). Per seed: the paired difference and the discordant images (a right where b is wrong, and the
    reverse); over seeds: the sign-flip p, the two-level interval and the t-interval given this test split. Holm
    and the verdict come from `decide`, which knows the family."""
    a, b = np.asarray(correct_a, dtype=np.float64), np.asarray(correct_b, dtype=np.float64)
    diff = a - b
    if weights is not None:
        diff = diff * np.asarray(weights, dtype=np.float64)[None, :]
    per_seed = diff.mean(1)
    wins, losses = np.clip(a - b, 0, None).sum(1), np.clip(b - a, 0, None).sum(1)
    interval = two_level(diff)
    out = {"mean": float(diff.mean()), "n": len(per_seed), "per_seed": per_seed.tolist(),
           "discordant": [[_count(w), _count(l)] for w, l in zip(wins, losses)],
           "sign_flip_p": sign_flip_p(per_seed), "two_level": interval, "t_given_split": t_given_split(per_seed),
           "detectable_80": detectable(interval)}
    if with_bootstrap:
        out["bootstrap"] = bootstrap(diff)
    return out


def _count(x: float) -> float | int:
    return int(round(x)) if abs(x - round(x)) < 1e-9 else float(x)


def detectable(interval: dict, power: float = 0.8, confidence: float = 0.95) -> float:
    """The smallest true mean difference found with probability `power` by an interval with this standard error and
    degrees of freedom (the normal-shift approximation: (t_{1 - alpha/2, df} + t_{power, df}) * se). NaN without
    an estimate."""
    if not math.isfinite(interval["ci_low"]):
        return math.nan
    df = interval["df"]
    return float((stats.t.ppf(0.5 + confidence / 2, df) + stats.t.ppf(power, df)) * interval["se"])


def holm_adjust(pvalues: dict) -> dict:
    """Holm's step-down adjustment (Holm 1979) of a family of p-values: {name: adjusted p} (NaN stays NaN, last)."""
    m = len(pvalues)
    order = sorted(pvalues, key=lambda k: (math.isnan(pvalues[k]), pvalues[k]))
    out, running = {}, 0.0
    for i, name in enumerate(order):
        p = pvalues[name]
        running = max(running, min(1.0, (m - i) * p)) if not math.isnan(p) else math.nan
        out[name] = running
    return out


def decide(family: dict, seeds: int, alpha: float = ALPHA) -> dict:
    """Holm over `family` ({name: compare(...)}), each entry updated with its adjusted p, the family's size, the
    seeds a claim needs and its verdict: GAIN or LOSS (adjusted sign-flip p < alpha and the two-level interval
    clear of 0 on that side), NO_ESTIMATE (no spread at all), TOO_FEW (fewer seeds than any claim needs), else
    NO_CLAIM. Returns the family."""
    adjusted = holm_adjust({name: c["sign_flip_p"] for name, c in family.items()})
    needed = seeds_needed(len(family), alpha)
    for name, c in family.items():
        interval = c["two_level"]
        if not math.isfinite(interval["ci_low"]):
            verdict = NO_ESTIMATE
        elif seeds < needed:
            verdict = TOO_FEW
        elif adjusted[name] < alpha and interval["ci_low"] > 0:
            verdict = GAIN
        elif adjusted[name] < alpha and interval["ci_high"] < 0:
            verdict = LOSS
        else:
            verdict = NO_CLAIM
        c.update(p_holm=adjusted[name], family=len(family), seeds_needed=needed, alpha=alpha, verdict=verdict)
    return family


def strongest(means: dict, versus) -> dict:
    """The opponent with the highest mean (NaN means excluded; equal means go by name, so the order of the arms
    never decides), and the others whose two-level interval against it includes 0: a tie within noise.
    `versus(a, b)` is compare's result for arm a against arm b."""
    finite = {a: m for a, m in means.items() if math.isfinite(m)}
    if not finite:
        return {"arm": None, "tied_with": []}
    best = max(sorted(finite), key=lambda a: finite[a])
    tied = []
    for other in sorted(finite):
        if other == best:
            continue
        interval = versus(best, other)["two_level"]
        if not math.isfinite(interval["ci_low"]) or interval["ci_low"] <= 0:
            tied.append(other)
    return {"arm": best, "tied_with": tied}
