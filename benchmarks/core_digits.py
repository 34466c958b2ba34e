"""Issue 2's bar: fit the default preset on the digits training half (given as .npz) in <= 5 minutes,
then a logistic regression trained on 500 synthetic samples per class (20 sampler steps) must reach
>= 0.92 on the real test half; and sampling 1,000 digits at 20 steps must take < 30 s.

    python benchmarks/core_digits.py          # ~5 minutes on 2 CPU cores
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffaug  # noqa: E402
from _common import write_results  # noqa: E402


def flat(x: torch.Tensor):
    return x.reshape(len(x), -1).float().numpy() / 255.0


def main() -> None:
    train, test = diffaug.load_data("digits", "all").split(0.5, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        train.to_npz(Path(tmp) / "digits_train.npz")
        data = diffaug.load_data(Path(tmp) / "digits_train.npz")
        t0 = time.perf_counter()
        gen = diffaug.fit(data, preset="tiny", seed=0, progress=False)
        fit_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    gen.sample(per_class=100, steps=20, seed=1)
    sample_s = time.perf_counter() - t0

    synth = gen.sample(per_class=500, steps=20, seed=0)
    labels = torch.arange(10).repeat_interleave(500)
    lr = lambda: LogisticRegression(max_iter=3000)
    synth_acc = lr().fit(flat(synth), labels.numpy()).score(flat(test.images), test.labels.numpy())
    real_acc = lr().fit(flat(train.images), train.labels.numpy()).score(flat(test.images), test.labels.numpy())

    payload = {"fit_seconds": round(fit_s, 1), "fit_steps": gen.config["train"]["steps"],
               "sample_1000_seconds": round(sample_s, 2),
               "logreg_on_synthetic_test_acc": round(synth_acc, 4), "logreg_on_real_test_acc": round(real_acc, 4),
               "bars": {"fit_seconds": 300, "sample_1000_seconds": 30, "logreg_on_synthetic_test_acc": 0.92}}
    table = "\n".join([
        "| what | measured | bar |", "| --- | --- | --- |",
        f"| fit `tiny` on digits train half ({payload['fit_steps']} steps) | {fit_s:.0f} s | <= 300 s |",
        f"| sample 1,000 digits, DPM-Solver++(2M) 20 steps, guidance 2 | {sample_s:.1f} s | < 30 s |",
        f"| logistic regression on 5,000 synthetic -> real test half | {synth_acc:.3f} | >= 0.92 |",
        f"| logistic regression on 898 real -> real test half | {real_acc:.3f} | (reference) |",
    ])
    write_results("core_digits", payload, "Command: `python benchmarks/core_digits.py` (seed 0)\n\n" + table)


if __name__ == "__main__":
    main()
