"""The evaluation report: results.json, results.md (the table) and PNG plots, written into one folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..grid import save_grid
from ..io import atomic_path


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def markdown_table(result) -> str:
    """Accuracy per arm (mean +- std over seeds), the declared primary arm's paired gain over the classical arm
    with its 95% CI, and every diffusion arm's gain with Holm-adjusted p-values and simultaneous intervals."""
    cfg = result.config
    arms = list(cfg["arms"])
    primary, baseline = cfg["primary"], cfg["baseline"]
    fmt = lambda d: f"{100 * d['mean']:+.2f} [{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}]"   # noqa: E731
    repeats = cfg.get("classifier_repeats", 1)
    each = f" (each seed: the mean of {repeats} classifiers trained per arm)" if repeats > 1 else ""
    lines = [f"Test accuracy (%) over {cfg['seeds']} seeds{each}; gain = paired difference against `{baseline}` "
             f"({cfg['classical']}), 95% CI in brackets. A gain whose interval includes 0 is not a gain. "
             f"Headline: primary arm (declared in advance): {primary}.", "",
             "| real / class | " + " | ".join(arms) + f" | gain of {primary} vs classical (points) |",
             "| --- | " + " | ".join("---" for _ in arms) + " | --- |"]
    for k, s in result.summary.items():
        cells = [f"{_pct(s['arms'][a]['mean'])} ± {_pct(s['arms'][a]['std'])}" for a in arms]
        lines.append(f"| {'all' if k == '0' else k} | " + " | ".join(cells) + f" | {fmt(s['primary']['gain'])} |")
    lines += ["", "Every diffusion arm against classical, corrected for the number of arms (Holm-adjusted p-values; "
                  "Bonferroni intervals, simultaneous 95%):", "",
              "| real / class | arm | gain (points) [simultaneous CI] | p | p (Holm) |", "| --- | --- | --- | --- | --- |"]
    for k, s in result.summary.items():
        for arm, h in s["holm"].items():
            lines.append(f"| {'all' if k == '0' else k} | {arm} | {fmt(h)} | {h['p_value']:.3g} | {h['p_holm']:.3g} |")
    quality = {k: s["quality"] for k, s in result.summary.items() if "quality" in s}
    if quality:
        lines += ["", "Generator quality (mean over seeds; own-feature FID/KID and precision/recall use the features "
                      "of one reference classifier trained once on the whole training pool, not Inception):", "",
                  "| real / class | CAS | FID (own) | KID (own) | precision | recall | memorization rate |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for k, q in quality.items():
            lines.append(f"| {'all' if k == '0' else k} | {_pct(q['cas'])} | {q['fid_own']:.2f} | {q['kid_own']:.4f} | "
                         f"{q['precision']:.2f} | {q['recall']:.2f} | {_pct(q['memorization_rate'])}% |")
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
    _plot_accuracy(result, out / "accuracy_vs_real_per_class.png")
    return out


def _plot_accuracy(result, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:   # the report still has the table and the JSON
        return
    ks = [k for k in result.summary]
    xs = np.arange(len(ks))
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in result.config["arms"]:
        m = np.array([result.summary[k]["arms"][arm]["ci"]["mean"] for k in ks])
        lo = np.array([result.summary[k]["arms"][arm]["ci"]["ci_low"] for k in ks])
        hi = np.array([result.summary[k]["arms"][arm]["ci"]["ci_high"] for k in ks])
        ax.plot(xs, 100 * m, marker="o", label=arm)
        if not np.isnan(lo).any():
            ax.fill_between(xs, 100 * lo, 100 * hi, alpha=0.2)
    ax.set_xticks(xs, ["all" if k == "0" else k for k in ks])
    ax.set_xlabel("real images per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Downstream accuracy, 95% CI over seeds")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
