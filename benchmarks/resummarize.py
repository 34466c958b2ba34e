"""Re-summarise committed evaluations under today's claim rule (diffaug/evaluation/verdict.py): the units of a
results.json are unchanged (per-image `correct` bits, per-seed metrics); only the statistics are recomputed.

    python benchmarks/resummarize.py benchmarks/results/gains_digits_menu [...] --out benchmarks/results/resummarized

Writes OUT.json (every headline comparison: verdict, two-level interval, sign-flip p, Holm p) and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffaug.evaluation.config import EvalConfig  # noqa: E402
from diffaug.evaluation.summary import claims, summarize  # noqa: E402
from diffaug.loading import load_data  # noqa: E402


def test_split(config: dict):
    """The test split a run was scored on, from the data note it recorded (built-in data only)."""
    for name in ("fashion-mnist", "digits"):
        if config["data"].startswith(name) or f"test: {name} (built-in)" in config["data"]:
            return load_data(name, "test")
    raise SystemExit(f"cannot tell the test split of {config['data']!r}")


def resummarize(folder: Path) -> dict:
    payload = json.loads((folder / "results.json").read_text())
    config = payload["config"]
    known = {f.name for f in fields(EvalConfig)}
    cfg = EvalConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items() if k in known})
    test = test_split(config)
    summary = summarize(payload["units"], cfg, len(test), test.labels.numpy())
    rows = []
    for k, s in summary.items():
        recorded = payload["summary"][k]["primary"]
        old = recorded.get("headline") or {"classical": {"ci": recorded.get("gain")},   # before the headline family
                                           cfg.primary + "-control": {"ci": recorded.get("vs_control")}}
        for opponent, h in s["primary"]["headline"].items():
            before = old.get(opponent, {}).get("ci") or {}
            rows.append({"run": folder.name, "k": k, "primary": cfg.primary, "opponent": opponent, "mean": h["mean"],
                         "two_level": [h["two_level"]["ci_low"], h["two_level"]["ci_high"]],
                         "sign_flip_p": h["sign_flip_p"], "p_holm": h["p_holm"], "family": h["family"],
                         "verdict": h["verdict"], "seeds": cfg.seeds,
                         "t_interval_before": [before.get("ci_low"), before.get("ci_high")],
                         "holm_p_before": (old.get(opponent, {}).get("holm") or {}).get("p_holm")})
    return {"run": folder.name, "claims": claims(cfg), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = [resummarize(f) for f in args.folders]
    args.out.with_suffix(".json").write_text(json.dumps(runs, indent=1) + "\n")
    pct = lambda x: f"{100 * x:+.2f}"  # noqa: E731
    lines = ["Committed evaluations under the claim rule of verdict.py (sign-flip test over seeds, Holm over the "
             "headline family, two-level interval over seeds and test images); the units are unchanged.", "",
             f"`python benchmarks/resummarize.py {' '.join(map(str, args.folders))} --out {args.out}`", "",
             "| run | real / class | comparison | seeds | gain [two-level 95% CI] | sign-flip p | p (Holm, family) | "
             "verdict | before: t-interval over seeds, Holm p |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in runs:
        for r in run["rows"]:
            lo, hi = r["two_level"]
            before = r["t_interval_before"]
            was = (f"[{pct(before[0])}, {pct(before[1])}], {r['holm_p_before']:.3g}" if before[0] is not None and
                   r["holm_p_before"] is not None else "n/a")
            lines.append(f"| {r['run']} | {r['k']} | {r['primary']} vs {r['opponent']} | {r['seeds']} | "
                         f"{pct(r['mean'])} [{pct(lo)}, {pct(hi)}] | {r['sign_flip_p']:.3g} | "
                         f"{r['p_holm']:.3g} ({r['family']}) | **{r['verdict']}** | {was} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
