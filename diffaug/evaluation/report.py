"""The evaluation report: results.json, results.md (the table) and PNG plots, written into one folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..grid import save_grid
from ..io import atomic_path


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _k(k: str) -> str:
    return "all" if k == "0" else k


def _versus(primary: str, opponent: str) -> str:
    return f"{primary} vs " + ("its dose control" if opponent == primary + "-control" else opponent)


def _points(mean: float, low: float, high: float) -> str:
    if not math.isfinite(low):
        return f"{100 * mean:+.2f} [no estimate]"
    return f"{100 * mean:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"


def _interval(d: dict) -> str:
    """A comparison's deciding interval (two-level), or any interval dict with mean, ci_low and ci_high."""
    d = d.get("two_level", d)
    return _points(d["mean"], d["ci_low"], d["ci_high"])


def _p(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def _discordant(c: dict) -> str:
    return " ".join(f"+{w}/-{l}" for w, l in c["discordant"])


def markdown_table(result) -> str:
    """The report's text: what was compared and how a claim is decided, then the sections below in order."""
    return "\n".join(line for section in (_header, _accuracy_table, _headline_table, _arm_tables, _longtail_tables,
                                          _choices, _quality_tables) for line in section(result))


def _header(result) -> list:
    cfg = result.config
    repeats = cfg.get("classifier_repeats", 1)
    each = f" (each seed: the mean of {repeats} classifiers trained per arm)" if repeats > 1 else ""
    seeds, looks, imbalance = cfg.get("seed_start", 0), cfg.get("looks_at_test_split"), cfg.get("imbalance")
    what = (f"Test balanced accuracy (%, the mean of the per-class recalls), long-tailed training subsets (imbalance "
            f"{imbalance:g}: the head class's images per class given below, the tail's that / {imbalance:g}, class "
            "order drawn per seed)" if imbalance else "Test accuracy (%)")
    lines = [f"{what} over {cfg['seeds']} seeds ({seeds}..{seeds + cfg['seeds'] - 1}){each}. "
             f"`{cfg['baseline']}` = {cfg.get('baseline_rule', cfg['classical'])}. Headline: the primary arm, declared "
             f"in advance: {cfg['primary']}."
             + (f" This test split has been looked at {looks} time(s), this run included." if looks else "")
             + (f" Preregistered: `{cfg['preregistration']['file']}`." if cfg.get("preregistration") else ""), "",
             CLAIM_RULE]
    plan = cfg.get("claims")
    if plan and not plan["possible"]:
        lines += ["", f"**No claim possible:** {plan['seeds']} seeds; a headline family of {plan['family']} "
                      f"comparisons needs at least {plan['seeds_needed']} (the sign-flip test's smallest p is "
                      f"2^(1 - seeds)). The numbers below describe this run; none of them is a claim."]
    return lines


CLAIM_RULE = ("How a claim is decided: a gain is claimed when the exact sign-flip test over seeds, Holm-corrected "
              "over the headline family, gives p < 0.05 **and** the two-level 95% interval (seeds and test images "
              "crossed) lies above 0. Intervals in brackets are that two-level interval; the t-interval over seeds "
              "is given too, named for what it is: the spread given this one test split.")


def _accuracy_table(result) -> list:
    arms = list(result.config["arms"])
    lines = ["", "| real / class | " + " | ".join(arms) + " | strongest opponent |",
             "| --- | " + " | ".join("---" for _ in arms) + " | --- |"]
    for k, s in result.summary.items():
        tied = s["primary"].get("strongest_tied_with") or []
        best = s["primary"]["strongest"] + (f" (tied within noise with {', '.join(tied)})" if tied else "")
        cells = [f"{_pct(s['arms'][a]['mean'])} ± {_pct(s['arms'][a]['std'])}" for a in arms]
        lines.append(f"| {_k(k)} | " + " | ".join(cells) + f" | {best} |")
    return lines


def _headline_table(result) -> list:
    primary = result.config["primary"]
    family = next((h["family"] for s in result.summary.values() for h in s["primary"]["headline"].values()), 0)
    lines = ["", f"The headline: {primary} against each opponent, one Holm family of {family} comparisons (every "
                 "regime). Gains in points; per seed, the test images only the primary arm got right / only the "
                 "opponent got right:", "",
             "| real / class | comparison | verdict | gain [two-level 95% CI] | sign-flip p | p (Holm) | "
             "t-interval given this test split | bootstrap (seeds x images) | detectable at 80% power | "
             "discordant images per seed |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k, s in result.summary.items():
        for o, h in s["primary"]["headline"].items():
            boot = h.get("bootstrap")
            lines.append(f"| {_k(k)} | {_versus(primary, o)} | **{h['verdict']}** | {_interval(h)} | "
                         f"{_p(h['sign_flip_p'])} | {_p(h['p_holm'])} | {_interval(h['t_given_split'])} | "
                         f"{_interval(boot) if boot else 'n/a'} | {_pct(h['detectable_80'])} | {_discordant(h)} |")
    return lines


def _arm_tables(result) -> list:
    cfg = result.config
    primary, baseline = cfg["primary"], cfg["baseline"]
    lines = ["", f"Every diffusion arm against {baseline} (Holm over these arms; sign-flip p):", "",
             "| real / class | arm | verdict | gain [two-level 95% CI] | p | p (Holm) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for k, s in result.summary.items():
        lines += [f"| {_k(k)} | {arm} | {h['verdict']} | {_interval(h)} | {_p(h['sign_flip_p'])} | "
                  f"{_p(h['p_holm'])} |" for arm, h in s["holm"].items()]
    controlled = [(k, arm, c) for k, s in result.summary.items() for arm, c in s["vs_control"].items()]
    if any(arm != primary for _, arm, _ in controlled):   # the primary's is a headline comparison, above
        lines += ["", "Every mixing arm against its own dose control (two-level 95% interval, uncorrected: for "
                      "reading, not a claim unless it is the primary arm's):", "",
                  "| real / class | comparison | gain [two-level 95% CI] | sign-flip p |", "| --- | --- | --- | --- |"]
        lines += [f"| {_k(k)} | {_versus(arm, arm + '-control')} | {_interval(c)} | {_p(c['sign_flip_p'])} |"
                  for k, arm, c in controlled]
    return lines


def _longtail_tables(result) -> list:
    cfg = result.config
    if not cfg.get("imbalance"):
        return []
    arms, primary = list(cfg["arms"]), cfg["primary"]
    opponents = list(dict.fromkeys(o for s in result.summary.values() for o in s["primary"]["headline"]))
    lines = ["", "Accuracy (%) of the many-, medium- and few-shot classes (the first, middle and last third of "
                 "each run's classes by training images), mean over seeds:", "",
             "| real / class | " + " | ".join(arms) + " |", "| --- | " + " | ".join("---" for _ in arms) + " |"]
    for k, s in result.summary.items():
        cells = ("/".join(_pct(s["arms"][a]["groups"][g]) for g in ("many", "medium", "few")) for a in arms)
        lines.append(f"| {_k(k)} | " + " | ".join(cells) + " |")
    lines += ["", f"The few-shot classes' accuracy, {primary} against each opponent (points, 95% t-interval over "
                  "seeds given this test split, uncorrected):", "",
              "| real / class | " + " | ".join(_versus(primary, o) for o in opponents) + " |",
              "| --- | " + " | ".join("---" for _ in opponents) + " |"]
    for k, s in result.summary.items():
        h = s["primary"]["headline"]
        lines.append(f"| {_k(k)} | " + " | ".join(_interval(h[o]["few"]) if o in h else "n/a" for o in opponents)
                     + " |")
    return lines


def _choices(result) -> list:
    """Short classes, the classical baseline's choice and the downstream network's, per regime."""
    cfg, lines = result.config, []
    for k, classes in (cfg.get("short_classes") or {}).items():
        lines += ["", f"Short classes at {_k(k)} per class: " + "; ".join(
            f"`{c}` holds {held} training images, fewer than the {asked} asked: its subsets took all {held}"
            for c, (asked, held) in classes.items()) + "."]
    selection = cfg.get("classical_selection") or {}
    if selection:
        menu, folds = (next(iter(selection.values()))[key] for key in ("menu", "folds"))
        scored = ("validation balanced accuracy %, the folds' training subsets long-tailed as the runs'"
                  if cfg.get("imbalance") else "validation accuracy %")
        lines += ["", f"The classical baseline's choice ({scored}, {folds}-fold cross-validation inside "
                      "the training pool; the test split is not used):", "",
                  "| real / class | " + " | ".join(f"`{m}`" for m in menu) + " | chosen |",
                  "| --- | " + " | ".join("---" for _ in menu) + " | --- |"]
        lines += [f"| {_k(str(k))} | " + " | ".join(_pct(sel["mean"][m]) for m in menu) + f" | `{sel['winner']}` |"
                  for k, sel in selection.items()]
    networks = cfg.get("classifier_selection") or {}
    if networks:
        first = next(iter(networks.values()))
        menu = first["menu"]
        lines += ["", "The downstream network every arm trains, chosen per regime by the same cross-validation: "
                      f"{first['rule']} (validation accuracy %):", "",
                  "| real / class | policy | " + " | ".join(f"`{m}`" for m in menu) +
                  " | one standard error | chosen |",
                  "| --- | --- | " + " | ".join("---" for _ in menu) + " | --- | --- |"]
        lines += [f"| {_k(str(k))} | `{c['policy']}` | " +
                  " | ".join(_pct(c["mean"][m]) if m in c["mean"] else "not scored" for m in menu) +
                  f" | {_pct(c['standard_error'])} | `{c['winner']}` |" for k, c in networks.items()]
    return lines


def _quality_tables(result) -> list:
    lines = []
    quality = {k: s["quality"] for k, s in result.summary.items() if "quality" in s}
    if quality:
        lines += ["", "Generator quality (mean over seeds; own-feature FID/KID and precision/recall use the features "
                      "of one reference classifier trained once on the whole training pool, not Inception):", "",
                  "| real / class | CAS | FID (own) | KID (own) | precision | recall | memorization rate |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {_k(k)} | {_pct(q['cas'])} | {q['fid_own']:.2f} | {q['kid_own']:.4f} | {q['precision']:.2f} | "
                  f"{q['recall']:.2f} | {_pct(q['memorization_rate'])}% |" for k, q in quality.items()]
    kept = {k: s["perturb_label_kept"] for k, s in result.summary.items() if "perturb_label_kept" in s}
    if kept:
        strengths = list(next(iter(kept.values())))
        lines += ["", "Perturbed copies the reference classifier still assigns to their label (%, mean over seeds), "
                      "per strength:", "", "| real / class | " + " | ".join(strengths) + " |",
                  "| --- | " + " | ".join("---" for _ in strengths) + " |"]
        lines += [f"| {_k(k)} | " + " | ".join(_pct(v[st]) for st in strengths) + " |" for k, v in kept.items()]
    return lines


def write_report(result, train, gen=None) -> Path:
    """results.json, results.md and the PNG plots (when matplotlib is installed) in result.out_dir."""
    out = Path(result.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"config": result.config, "summary": result.summary,
               "units": [{k: v for k, v in u.items() if k != "_arrays"} for u in result.units]}
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=1))
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(markdown_table(result) + "\n")
    first = {}
    for u in result.units:
        first.setdefault(u["k"], u)
    for k, u in first.items():
        arrays = u.get("_arrays") or {}
        if "samples" in arrays:
            save_grid(arrays["samples"], 8, out / f"samples_k{k}.png")
        if "memorized" in arrays:
            pairs = torch.stack([arrays["memorized"], arrays["nearest_train"]], dim=1).flatten(0, 1)
            save_grid(pairs, 2, out / f"memorization_k{k}.png")   # each row: synthetic | nearest real
    _plot_gains(result, out / "gains_forest.png")
    return out


def _plot_gains(result, path: Path) -> None:
    """A forest plot of the headline comparisons (the primary arm against each opponent, every regime) with the
    two-level 95% interval that decides them, coloured by verdict: green a gain, red a loss, grey no claim (and
    no interval at all where there is no estimate)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:   # the report still has the table and the JSON
        return
    primary = result.config["primary"]
    rows = [(k, _versus(primary, o), h) for k, s in result.summary.items() for o, h in s["primary"]["headline"].items()]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.6))
    colours = {"gain": "tab:green", "loss": "tab:red"}
    for i, (k, label, h) in enumerate(rows):
        d = h["two_level"]
        colour = colours.get(h["verdict"], "tab:gray")
        if math.isfinite(d["ci_low"]):
            ax.plot([100 * d["ci_low"], 100 * d["ci_high"]], [i, i], color=colour, lw=2)
        ax.plot(100 * d["mean"], i, "o", color=colour, mfc=colour if h["verdict"] in colours else "white")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [f"{_k(k)}/class: {label}" for k, label, _ in rows], fontsize=7)
    ax.invert_yaxis()
    metric = "balanced accuracy" if result.config.get("imbalance") else "accuracy"
    ax.set_xlabel(f"paired difference in test {metric} (points), two-level 95% interval")
    ax.set_title("Headline comparisons (green: gain, red: loss, grey: no claim)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
