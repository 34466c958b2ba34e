"""`diffaug demo`: the whole story on the built-in digits in a few minutes of CPU.

fit a generator -> a sample grid -> an expanded Hugging Face dataset -> a small evaluation whose
generators are refitted on each low-data subset, as the protocol demands. Every number it prints comes
from runs made in this command.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .loading import load_data
from .errors import DiffaugError
from .fitting import fit
from .grid import save_grid

# Sized for two minutes on a slow 2-core CPU (measured part by part: benchmarks/results/demo_cost.md). The network is
# fixed at the menu's cheapest: the evaluation's own choice among widths 16-64 picked width 64 on a slower machine
# (747 s) and is no part of the story a demo tells. Three seeds make no claim, and the report says so.
DEMO_FIT_STEPS = 400
DEMO_EVAL = dict(per_class=(10,), seeds=2, gen_steps=200, gen_batch_size=32, classifier_steps=150, batch_size=64,
                 synthetic_per_class=100, perturb_copies=2, cas_steps=100, classifier_menu=("smallcnn",))


def run_demo(out: Path, overwrite: bool = False, progress: bool = True) -> None:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DiffaugError(f"{out} already exists and is not empty; pass --overwrite or another --out")
    out.mkdir(parents=True, exist_ok=True)
    say = lambda msg: print(msg, file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    train, test = load_data("digits", "train"), load_data("digits", "test")

    say(f"[1/4] fitting a tiny generator on the digits training half ({len(train)} images, {DEMO_FIT_STEPS} steps)")
    gen = fit(train, "tiny", DEMO_FIT_STEPS, seed=0, progress=progress)
    gen.save(out / "digits.safetensors", overwrite=True)

    say("[2/4] sampling a grid, one row per class")
    save_grid(gen.sample(per_class=10, seed=0, progress=False), 10, out / "samples.png")

    say("[3/4] expanding the training set with 100 synthetic images per class (Hugging Face datasets)")
    try:
        from .hf import expand_dataset, to_hf_dataset
        expanded = expand_dataset(to_hf_dataset(train), gen, per_class=100, progress=progress)
        expanded.save_to_disk(str(out / "digits-expanded"))
        say(f"      {len(train)} real + {len(expanded) - len(train)} synthetic rows -> {out / 'digits-expanded'}")
    except ImportError as e:   # the hf extra is optional; the rest of the story does not need it
        say(f"      skipped: {e}")

    say("[4/4] evaluating: 10 real images per class, 3 seeds, a generator refitted on each subset")
    from .evaluation import evaluate
    result = evaluate(train, test, out_dir=out / "evaluation", progress=progress, n_jobs="auto", **DEMO_EVAL)
    print(result.table())
    say(f"\ndone in {time.perf_counter() - t0:.0f} s. Generator: {out / 'digits.safetensors'}; grid: "
        f"{out / 'samples.png'}; report: {out / 'evaluation' / 'results.md'} (+ plots, results.json)")
