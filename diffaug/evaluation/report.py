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


def markdown_table(result) -> str:
    """Accuracy per arm (mean +- std over seeds); the declared primary arm's paired gain over the tuned classical
    arm and over its dose control, each with its t-interval over seeds and a bootstrap interval over seeds and test
    images; every diffusion arm's gain with Holm-adjusted p-values; the classical choice; generator quality."""
    cfg = result.config
    arms = list(cfg["arms"])
    primary, baseline = cfg["primary"], cfg["baseline"]
    fmt = lambda d: f"{100 * d['mean']:+.2f} [{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}]"   # noqa: E731
    repeats = cfg.get("classifier_repeats", 1)
    each = f" (each seed: the mean of {repeats} classifiers trained per arm)" if repeats > 1 else ""
    seeds = cfg.get("seed_start", 0)
    looks = cfg.get("looks_at_test_split")
    imbalance = cfg.get("imbalance")
    what = (f"Test balanced accuracy (%, the mean of the per-class recalls), long-tailed training subsets (imbalance "
            f"{imbalance:g}: the head class's images per class given below, the tail's that / {imbalance:g}, class "
            "order drawn per seed)" if imbalance else "Test accuracy (%)")
    lines = [f"{what} over {cfg['seeds']} seeds ({seeds}..{seeds + cfg['seeds'] - 1}){each}. "
             f"`{baseline}` = {cfg.get('baseline_rule', cfg['classical'])}. Gains are paired differences in points, "
             "95% t-interval over seeds in brackets, then a 95% paired bootstrap over seeds and test images; a gain "
             f"whose interval includes 0 is not a gain. Headline: the primary arm, declared in advance: {primary}."
             + (f" This test split has been looked at {looks} time(s), this run included." if looks else "")
             + (f" Preregistered: `{cfg['preregistration']['file']}`." if cfg.get("preregistration") else ""), ""]
    opponents = list(dict.fromkeys(o for s in result.summary.values() for o in s["primary"]["headline"]))
    lines += ["| real / class | " + " | ".join(arms) + " | " + " | ".join(_versus(primary, o) for o in opponents)
              + " | strongest opponent |",
              "| --- | " + " | ".join("---" for _ in arms + opponents) + " | --- |"]
    for k, s in result.summary.items():
        cells = [f"{_pct(s['arms'][a]['mean'])} ± {_pct(s['arms'][a]['std'])}" for a in arms]
        h = s["primary"]["headline"]
        cells += [f"{fmt(h[o]['ci'])}; {fmt(h[o]['bootstrap'])}" if o in h else "n/a" for o in opponents]
        lines.append(f"| {_k(k)} | " + " | ".join(cells) + f" | {s['primary']['strongest']} |")
    family = next((h["family"] for s in result.summary.values() for h in s["primary"]["headline"].values()), 0)
    lines += ["", f"The headline comparisons, Holm-corrected as one family of {family} (the primary arm against each "
                  "opponent, every regime; Bonferroni intervals, simultaneous 95%), and the smallest gain in points "
                  "these seeds would detect at 80% power given the spread they showed (paired t, uncorrected):", "",
              "| real / class | comparison | gain (points) [simultaneous CI] | p | p (Holm) | detectable at 80% power |",
              "| --- | --- | --- | --- | --- | --- |"]
    for k, s in result.summary.items():
        for o, h in s["primary"]["headline"].items():
            lines.append(f"| {_k(k)} | {_versus(primary, o)} | {fmt(h['holm'])} | {h['holm']['p_value']:.3g} | "
                         f"{h['holm']['p_holm']:.3g} | {100 * h['detectable_80']:.2f} |")
    lines += ["", f"Every diffusion arm against {baseline}, corrected for the number of arms (Holm-adjusted p-values; "
                  "Bonferroni intervals, simultaneous 95%):", "",
              "| real / class | arm | gain (points) [simultaneous CI] | p | p (Holm) |", "| --- | --- | --- | --- | --- |"]
    for k, s in result.summary.items():
        for arm, h in s["holm"].items():
            lines.append(f"| {_k(k)} | {arm} | {fmt(h)} | {h['p_value']:.3g} | {h['p_holm']:.3g} |")
    controlled = [(k, arm, ci) for k, s in result.summary.items() for arm, ci in s["vs_control"].items()]
    if any(arm != primary for _, arm, _ in controlled):   # the primary's is a headline comparison, above
        lines += ["", "Every mixing arm against its own dose control (95% t-interval over seeds, uncorrected: for "
                      "reading, not a claim unless it is the primary arm's):", "",
                  "| real / class | comparison | gain (points) [95% CI] |", "| --- | --- | --- |"]
        lines += [f"| {_k(k)} | {_versus(arm, arm + '-control')} | {fmt(ci)} |" for k, arm, ci in controlled]
    if imbalance:
        lines += ["", "Accuracy (%) of the many-, medium- and few-shot classes (the first, middle and last third of "
                      "each run's classes by training images), mean over seeds:", "",
                  "| real / class | " + " | ".join(arms) + " |", "| --- | " + " | ".join("---" for _ in arms) + " |"]
        for k, s in result.summary.items():
            cells = ("/".join(_pct(s["arms"][a]["groups"][g]) for g in ("many", "medium", "few")) for a in arms)
            lines.append(f"| {_k(k)} | " + " | ".join(cells) + " |")
        lines += ["", f"The few-shot classes' accuracy, {primary} against each opponent (points, paired 95% "
                      "t-interval over seeds, uncorrected):", "",
                  "| real / class | " + " | ".join(_versus(primary, o) for o in opponents) + " |",
                  "| --- | " + " | ".join("---" for _ in opponents) + " |"]
        for k, s in result.summary.items():
            h = s["primary"]["headline"]
            lines.append(f"| {_k(k)} | " + " | ".join(fmt(h[o]["few"]) if o in h else "n/a" for o in opponents) + " |")
    for k, classes in (cfg.get("short_classes") or {}).items():
        lines += ["", f"Short classes at {_k(k)} per class: " + "; ".join(
            f"`{c}` holds {held} training images, fewer than the {asked} asked: its subsets took all {held}"
            for c, (asked, held) in classes.items()) + "."]
    selection = cfg.get("classical_selection") or {}
    if selection:
        menu, folds = (next(iter(selection.values()))[key] for key in ("menu", "folds"))
        scored = ("validation balanced accuracy %, the folds' training subsets long-tailed as the runs'"
                  if imbalance else "validation accuracy %")
        lines += ["", f"The classical baseline's choice ({scored}, {folds}-fold cross-validation inside "
                      "the training pool; the test split is not used):", "",
                  "| real / class | " + " | ".join(f"`{m}`" for m in menu) + " | chosen |",
                  "| --- | " + " | ".join("---" for _ in menu) + " | --- |"]
        for k, sel in selection.items():
            lines.append(f"| {_k(str(k))} | " + " | ".join(_pct(sel["mean"][m]) for m in menu) +
                         f" | `{sel['winner']}` |")
    networks = cfg.get("classifier_selection") or {}
    if networks:
        first = next(iter(networks.values()))
        menu = first["menu"]
        lines += ["", "The downstream network every arm trains, chosen per regime by the same cross-validation: "
                      f"{first['rule']} (validation accuracy %):",
                  "", "| real / class | policy | " + " | ".join(f"`{m}`" for m in menu) + " | one standard error | chosen |",
                  "| --- | --- | " + " | ".join("---" for _ in menu) + " | --- | --- |"]
        for k, choice in networks.items():
            lines.append(f"| {_k(str(k))} | `{choice['policy']}` | " +
                         " | ".join(_pct(choice["mean"][m]) for m in menu) +
                         f" | {_pct(choice['standard_error'])} | `{choice['winner']}` |")
    quality = {k: s["quality"] for k, s in result.summary.items() if "quality" in s}
    if quality:
        lines += ["", "Generator quality (mean over seeds; own-feature FID/KID and precision/recall use the features "
                      "of one reference classifier trained once on the whole training pool, not Inception):", "",
                  "| real / class | CAS | FID (own) | KID (own) | precision | recall | memorization rate |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for k, q in quality.items():
            lines.append(f"| {_k(k)} | {_pct(q['cas'])} | {q['fid_own']:.2f} | {q['kid_own']:.4f} | "
                         f"{q['precision']:.2f} | {q['recall']:.2f} | {_pct(q['memorization_rate'])}% |")
    kept = {k: s["perturb_label_kept"] for k, s in result.summary.items() if "perturb_label_kept" in s}
    if kept:
        strengths = list(next(iter(kept.values())))
        lines += ["", "Perturbed copies the reference classifier still assigns to their label (%, mean over seeds), "
                      "per strength:", "", "| real / class | " + " | ".join(strengths) + " |",
                  "| --- | " + " | ".join("---" for _ in strengths) + " |"]
        lines += [f"| {_k(k)} | " + " | ".join(_pct(v[st]) for st in strengths) + " |" for k, v in kept.items()]
    return "\n".join(lines)


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
    """A forest plot: per regime, every arm's paired difference against the baseline, each mixing arm's against its
    dose control, and the primary arm's against every other headline opponent (the semi-supervised learners), with
    95% t-intervals over seeds: the quantities the report claims."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:   # the report still has the table and the JSON
        return
    baseline, primary = result.config["baseline"], result.config["primary"]
    rows = [(k, f"{arm} vs {baseline}", d) for k, s in result.summary.items() for arm, d in s[f"vs_{baseline}"].items()]
    rows += [(k, f"{arm} vs its control", d) for k, s in result.summary.items() for arm, d in s["vs_control"].items()]
    rows += [(k, f"headline: {_versus(primary, o)}", h["ci"]) for k, s in result.summary.items()
             for o, h in s["primary"]["headline"].items() if o != baseline and o != primary + "-control"]
    rows.sort(key=lambda r: (int(r[0]), r[1]))
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.2))
    for i, (k, label, d) in enumerate(rows):
        lo, hi = 100 * d["ci_low"], 100 * d["ci_high"]
        colour = "tab:green" if lo > 0 else "tab:red" if hi < 0 else "tab:gray"
        if not math.isnan(lo):
            ax.plot([lo, hi], [i, i], color=colour, lw=2)
        ax.plot(100 * d["mean"], i, "o", color=colour)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [f"{_k(k)}/class: {label}" for k, label, _ in rows], fontsize=7)
    ax.invert_yaxis()
    metric = "balanced accuracy" if result.config.get("imbalance") else "accuracy"
    ax.set_xlabel(f"paired difference in test {metric} (points), 95% CI over seeds")
    ax.set_title("Gains (green: interval above 0)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
