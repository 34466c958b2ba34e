"""The evaluation protocol (benchmarks/README.md section 1): regimes x seeds x arms, fairly, with paired statistics.

One *unit* is a (real images per class k, seed) pair: draw the stratified subset, fit a generator on that
subset only, build the synthetic pools, then train the same classifier for every arm with the same
optimizer steps, batch size and seed. Units are independent: they run in parallel (joblib) and each
finished unit is cached as JSON in `out_dir/runs/`, so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .._version import __version__, source_digest
from ..data import ImageData
from ..diffusion.distributed import from_env, rank_device
from ..diffusion.step import resolve_device
from ..errors import DataError
from ..generator import Generator
from ..loading import is_builtin, load_data
from .cache import cached, gather_units, store
from .config import BASELINE, EvalConfig
from .metrics import holm, paired_ci
from .unit import reference_for, run_unit

@dataclass
class EvalResult:
    config: dict
    units: list
    summary: dict = field(default_factory=dict)
    out_dir: str | None = None

    def table(self) -> str:
        from .report import markdown_table
        return markdown_table(self)


def summarize(units: list, cfg: EvalConfig) -> dict:
    """Per regime: mean/std of every arm's accuracy, the paired difference against the baseline, the declared
    primary arm's gain, and Holm-corrected comparisons of every diffusion arm."""
    summary = {}
    for k in cfg.per_class:
        rows = sorted((u for u in units if u["k"] == k), key=lambda u: u["seed"])
        if not rows:
            continue
        s = {"arms": {}, "vs_" + BASELINE: {}}
        diffs = {}
        for arm in cfg.arms:
            accs = [u["arms"][arm]["accuracy"] for u in rows]
            s["arms"][arm] = {"mean": float(np.mean(accs)), "std": float(np.std(accs, ddof=1)) if len(accs) > 1
                              else math.nan, "ci": paired_ci(accs), "n": len(accs)}
            if arm != BASELINE:
                diffs[arm] = [u["arms"][arm]["accuracy"] - u["arms"][BASELINE]["accuracy"] for u in rows]
                s["vs_" + BASELINE][arm] = paired_ci(diffs[arm])
        s["primary"] = {"arm": cfg.primary, "gain": s["vs_" + BASELINE][cfg.primary]}
        s["holm"] = holm({arm: diffs[arm] for arm in cfg.diffusion_arms})
        if any("quality" in u for u in rows):
            q = [u["quality"] for u in rows if "quality" in u]
            s["quality"] = {m: float(np.mean([x[m] for x in q]))
                            for m in ("cas", "fid_own", "kid_own", "precision", "recall", "memorization_rate")}
        summary[str(k)] = s
    return summary


def evaluate(data="digits", test=None, *, gen: Generator | None = None, out_dir=None, n_jobs: int | str = 1,
             device="auto", classifier: Callable | None = None, progress: bool = True, resume: bool = True,
             **options) -> EvalResult:
    """Measure downstream gains of diffusion augmentation against classical augmentation.

    data: the training pool (ImageData, a built-in name or a path); test: the test split (default: the
    built-in's test split, else a stratified half of `data`, seed 0). `gen`: a generator used as-is in every
    unit (only fair if it saw nothing but training data); by default each unit fits its own on its subset.
    `classifier`: a factory (in_channels, num_classes) -> nn.Module replacing the reference CNN.
    `n_jobs`: units run at once in separate processes, or "auto" (see `jobs_for`).
    `options` are `EvalConfig` fields. With `out_dir`, finished units are cached there and a report is written.
    """
    unknown = set(options) - set(EvalConfig.__dataclass_fields__)
    if unknown:
        raise DataError(f"unknown evaluation option(s) {sorted(unknown)}; see diffaug.evaluation.EvalConfig")
    cfg = EvalConfig(**options)
    if not (n_jobs == "auto" or (isinstance(n_jobs, (int, np.integer)) and not isinstance(n_jobs, bool)
                                 and n_jobs >= 1)):
        raise DataError(f"n_jobs must be a whole number >= 1 or 'auto', got {n_jobs!r}")
    train, test, split_note = _splits(data, test)
    if gen is not None and (gen.image_size != train.size or gen.channels != train.channels):
        raise DataError(f"the generator makes {gen.channels}x{gen.image_size} images, the data is "
                        f"{train.channels}x{train.size}")
    if gen is not None:
        check_leakage(gen, train, test)
    classifier_name = "SmallCNN" if classifier is None else f"{classifier.__module__}.{classifier.__qualname__}"
    context = {"train": train.fingerprint(), "test": test.fingerprint(), "classifier": classifier_name,
               "diffaug": __version__, "source": source_digest(),
               "generator": gen.fingerprint if gen is not None else None}
    tag = cfg.key(**context)
    runs = Path(out_dir) / "runs" if out_dir is not None else None
    ranks = from_env()   # under torchrun each rank runs its share of the units; all of them then read every unit
    if ranks.active and runs is None:
        raise DataError("an evaluation spread over torchrun's ranks needs out_dir (the ranks share units through it)")
    device = rank_device(device, ranks)
    everything = [(k, seed) for k in cfg.per_class for seed in range(cfg.seeds)]
    todo, units = [], []
    for i, (k, seed) in enumerate(everything):
        if i % ranks.world != ranks.rank:
            continue
        unit = cached(runs, k, seed, tag, train) if resume else None
        (units.append(unit) if unit else todo.append((k, seed)))
    n_jobs = jobs_for(len(todo), device) if n_jobs == "auto" else n_jobs
    _note_shared_gpu(n_jobs, device)
    reference = reference_for(train, test, cfg, device)
    threads = max(1, (os.cpu_count() or 1) // max(1, n_jobs)) if n_jobs != 1 else None
    for unit in _run_all(todo, train, test, cfg, gen, device, classifier, n_jobs, threads, progress, reference):
        if runs is not None:
            store(runs, unit, tag)
        units.append(unit)
    if ranks.active:
        units = gather_units(runs, everything, tag, train)
    units.sort(key=lambda u: (u["k"], u["seed"]))
    result = EvalResult(config={**asdict(cfg), "baseline": BASELINE, "data": split_note, "generator_given": gen is not None,
                                "classifier": classifier_name, "reference_network": reference.info,
                                "device": str(resolve_device(device)), "cache_key": tag,
                                "headline": f"primary arm declared in advance: {cfg.primary}; all diffusion arms "
                                            "also compared with Holm correction"},
                        units=units, summary=summarize(units, cfg), out_dir=str(out_dir) if out_dir else None)
    if out_dir is not None and ranks.main:
        from .report import write_report
        write_report(result, train, gen)
    return result


def jobs_for(units: int, device) -> int:
    """n_jobs="auto": on a CPU one process per core, at most one per unit; on a GPU one (see _note_shared_gpu).
    Under torchrun the ranks on one machine share its cores.

    A unit's steps are small (8x8 to 28x28 images, batch 128) and use a second thread poorly: on 2 cores, two
    one-thread units at once ran at 1.47x the throughput of one two-thread unit (digits, 10 per class: 91 s
    each side by side against 67 s alone)."""
    if resolve_device(device).type != "cpu":
        return 1
    cores = (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(units, cores))


def _note_shared_gpu(n_jobs: int, device) -> None:
    """Several units on one GPU is allowed (it pays for small presets) but never silent."""
    if n_jobs > 1 and resolve_device(device).type == "cuda" and torch.cuda.device_count() == 1:
        warnings.warn(f"{n_jobs} evaluation units at once share one GPU: each process holds its own CUDA context and "
                      "takes turns on the card. That pays for small presets, whose steps leave the card idle "
                      "(measured: 5 `tiny` units on one H200, benchmarks/results/gains_fashion-mnist.md); with large "
                      "presets or little GPU memory use n_jobs=1", stacklevel=3)


def check_leakage(gen: Generator, train: ImageData, test: ImageData) -> None:
    """Refuse a given generator that saw test images: it would make the diffusion arms look better than they are.

    Compares image hashes (the generator file records one per training image), not only whole-set fingerprints,
    so a generator fitted on train + test, or on any set holding test images, is caught. A test image that also
    lies in the training pool (a duplicate across the split) is no leak: any fair generator may have seen it."""
    if gen.config.get("data_fingerprint") == test.fingerprint():
        raise DataError("the given generator was fitted on the test data itself; fit it on the training data only")
    if gen.data_hashes is None:
        warnings.warn("the given generator's file records no training-image hashes (written by an older diffaug): "
                      "evaluate cannot check that it never saw a test image", stacklevel=3)
        return
    seen = {bytes(h) for h in gen.data_hashes}
    allowed = {bytes(h) for h in train.image_hashes()}
    leaked = [i for i, h in enumerate(test.image_hashes()) if bytes(h) in seen and bytes(h) not in allowed]
    if leaked:
        raise DataError(f"the given generator saw {len(leaked)} of the {len(test)} test images during fitting "
                        f"(test rows {leaked[:5]}{' ...' if len(leaked) > 5 else ''}): its gains would be "
                        "inflated; fit it on training images only (diffaug fit DATA --split train)")


def _splits(data, test):
    if isinstance(data, ImageData):
        train = data
    else:
        train = load_data(data, "train")
        if test is None and is_builtin(data):
            test = load_data(data, "test")
            return train, test, f"{data}: built-in train/test split"
    if test is None:
        train, test = train.split(0.5, seed=0)
        return train, test, "stratified 50/50 split of the given data, seed 0"
    test = test if isinstance(test, ImageData) else load_data(test, "test")
    if test.size != train.size or test.channels != train.channels or test.num_classes != train.num_classes:
        raise DataError("the test data differs from the training data in image size, channels or classes")
    return train, test, f"train: {train.source or 'given in memory'}; test: {test.source or 'given in memory'}"


def _run_all(todo, train, test, cfg, gen, device, classifier, n_jobs, threads, progress, reference):
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="evaluate", unit="run", disable=not progress or not todo)
    if n_jobs == 1 or len(todo) <= 1:
        for k, seed in todo:
            bar.set_postfix(k=k, seed=seed)
            yield run_unit(train, test, k, seed, cfg, gen, device, classifier, reference=reference)
            bar.update(1)
    else:
        from joblib import Parallel, delayed
        jobs = (delayed(run_unit)(train, test, k, seed, cfg, gen, device, classifier, threads, reference.to("cpu"))
                for k, seed in todo)
        for unit in Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs):
            yield unit
            bar.update(1)
    bar.close()
