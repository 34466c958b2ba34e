"""The evaluation protocol (benchmarks/README.md section 1): regimes x seeds x arms, fairly, with paired statistics.

One *unit* is a (real images per class k, seed) pair: draw the stratified subset, fit a generator on that
subset only, build the synthetic pools, then train the same classifier for every arm with the same
optimizer steps, batch size and seed. Units are independent: they run in parallel (joblib) and each
finished unit is cached as JSON in `out_dir/runs/`, so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..data import ImageData, is_builtin, load_data
from ..diffusion.distributed import from_env, rank_device
from ..diffusion.trainer import DEFAULT_STEPS, resolve_device
from ..errors import DataError
from ..generator import Generator, _weights_fingerprint, check_sampling, fit, is_number, whole_number
from ..io import atomic_path
from .batched import POLICIES, BatchAugment
from .classical import CLASSICAL, augment_batch, classical_augment
from .classifier import accuracy, embed, predict_proba, random_batches, train_classifier
from .metrics import cas, fid_own, kid_own, holm, memorization, paired_ci, precision_recall

ARMS = ("real", "classical", "synthesize", "perturb", "classical+synthesize")
BASELINE = "classical"
PRIMARY_ORDER = ("classical+synthesize", "synthesize", "perturb")   # the default headline arm, fixed before any run
# Classifier steps when not given: 50 epochs of the real subset, at least 500 (low-data regimes converge well
# within that) and at most 5000 (~11 epochs of Fashion-MNIST's 60k at batch 128).
STEPS_PER_EPOCHS, STEPS_MIN, STEPS_MAX = 50, 500, 5000
# Generator fit steps when not given: GEN_EPOCHS passes over the real subset, at least GEN_STEPS_MIN and at most the
# preset's default. Chosen on a validation split of digits (never the test split): on 100 images, 250 steps
# memorized 1.9% of samples, 500 steps 34%, the old fixed 2000 steps 97% (benchmarks/gen_budget.py); on 500
# images, 625 steps (160 epochs) gave a better own-feature FID and recall than 1250 at the same CAS, in half
# the time (benchmarks/knobs.py).
GEN_EPOCHS, GEN_STEPS_MIN = 160, 250


@dataclass
class EvalConfig:
    """Everything that decides an evaluation's numbers; recorded in results.json."""

    per_class: tuple = (10, 50, 100)       # real images per class; 0 means all
    seeds: int = 5
    arms: tuple = ARMS
    classical: str = "trivialaugment"      # see classical.CLASSICAL
    hflip: bool = False
    classifier_steps: int | None = None    # optimizer steps, identical for every arm; None: scaled with the
                                           # real subset (steps_for), so "all" is not trained for 2 epochs
    batch_size: int = 128
    synthetic_share: float = 0.5           # share of each batch drawn from the synthetic pool (diffusion arms)
    augment_synthetic: bool = False        # classical+synthesize: the classical augmentation on the synthetic rows
                                           # too; False: on the real rows only. Cross-validated within the digits
                                           # training pool: +0.61 points over classical at 50/class, CI [+0.20,
                                           # +1.02], against -0.42 when it augments every row; +1.00 vs +0.42 at
                                           # 10/class (benchmarks/results/mixing_digits.md)
    classifier_repeats: int = 2            # classifiers trained per arm and unit (replicate r: same init and
                                           # batches in every arm); a unit's accuracy is their mean. In the same
                                           # study, one classifier's paired gain moved 0.6-1.3 points between
                                           # replicates, as much as between units
    synthetic_per_class: int = 500
    perturb_copies: int = 4
    strength: tuple = (0.3, 0.6)           # perturb: copies spread evenly over this range
    guidance: float = 1.0                  # no classifier-free guidance: on a digits validation split, guidance 1
                                           # gave half the own-feature FID and twice the recall of guidance 2 at the
                                           # same CAS (benchmarks/results/knobs_digits.md), and one network call per step
    sample_steps: int = 10                 # DPM-Solver++(2M), Karras spacing: 10 steps match 20 and 250-step ancestral
                                           # in own-feature FID (benchmarks/results/sampler_steps_digits.md)
    filter_confidence: float | None = None  # keep synthetic images a real-trained classifier gives >= this
    preset: str = "tiny"
    gen_steps: int | None = None           # generator fit steps per unit; None: scaled with the subset (gen_steps_for)
    gen_batch_size: int = 128
    metrics: bool = True                   # CAS, own-feature FID/KID, precision/recall, memorization
    cas_steps: int = 400
    reference_steps: int = 1000            # the fixed feature network for FID/KID/precision/recall (trained once)
    primary: str | None = None             # the diffusion arm whose gain is the headline, declared in advance;
                                           # None: the first of PRIMARY_ORDER among the arms run

    def __post_init__(self):
        per_class = (self.per_class,) if isinstance(self.per_class, (int, np.integer)) else tuple(self.per_class)
        self.per_class = tuple(dict.fromkeys(whole_number(k, "per_class", low=0) for k in per_class))   # no repeats
        if not self.per_class:
            raise DataError("per_class must name at least one regime (images per class; 0 = all)")
        self.arms = tuple(dict.fromkeys(self.arms))
        for name in ("seeds", "batch_size", "synthetic_per_class", "perturb_copies", "sample_steps", "cas_steps",
                     "reference_steps", "gen_batch_size", "classifier_steps", "gen_steps", "classifier_repeats"):
            if getattr(self, name) is not None:
                whole_number(getattr(self, name), name, low=1)
        check_sampling(self.sample_steps, "dpmpp_2m", self.guidance)
        lo, hi = (self.strength, self.strength) if np.isscalar(self.strength) else tuple(self.strength)
        if not (is_number(lo) and is_number(hi)) or not 0 < lo <= hi <= 1:
            raise DataError(f"strength must be a number or a (low, high) range within (0, 1], got {self.strength!r}")
        self.strength = (float(lo), float(hi))
        if not isinstance(self.synthetic_share, (int, float)) or not 0.0 <= self.synthetic_share < 1.0:
            raise DataError(f"synthetic_share must lie in [0, 1), got {self.synthetic_share!r}")
        if not isinstance(self.augment_synthetic, (bool, np.bool_)):
            raise DataError(f"augment_synthetic must be True or False, got {self.augment_synthetic!r}")
        unknown = set(self.arms) - set(ARMS)
        if unknown:
            raise DataError(f"unknown arm(s) {sorted(unknown)}; choose from {ARMS}")
        if BASELINE not in self.arms:
            raise DataError(f"the arms must include {BASELINE!r}: every gain is measured against it")
        if self.classical not in CLASSICAL:
            raise DataError(f"unknown classical augmentation {self.classical!r}; choose one of {CLASSICAL}")
        if self.primary is None:
            self.primary = next((a for a in PRIMARY_ORDER if a in self.arms), None)
        if self.primary not in self.arms or self.primary in (BASELINE, "real"):
            raise DataError(f"primary must be one of the diffusion arms run, {self.diffusion_arms}; got {self.primary!r}")
        if self.preset not in DEFAULT_STEPS:
            raise DataError(f"unknown preset {self.preset!r}; choose one of {sorted(DEFAULT_STEPS)}")
        if self.filter_confidence is not None and not 0.0 < self.filter_confidence <= 1.0:
            raise DataError(f"filter_confidence must lie in (0, 1], got {self.filter_confidence}")

    @property
    def diffusion_arms(self) -> tuple:
        return tuple(a for a in self.arms if a not in (BASELINE, "real"))

    def steps_for(self, n_real: int) -> int:
        """Classifier optimizer steps for a real subset of n_real images: `classifier_steps` if set, else
        STEPS_PER_EPOCHS epochs of the real subset at this batch size, clipped to [STEPS_MIN, STEPS_MAX]."""
        if self.classifier_steps is not None:
            return self.classifier_steps
        return int(min(STEPS_MAX, max(STEPS_MIN, round(STEPS_PER_EPOCHS * n_real / self.batch_size))))

    def gen_steps_for(self, n_real: int) -> int:
        """Generator fit steps on a subset of n_real images: `gen_steps` if set, else GEN_EPOCHS epochs at
        `gen_batch_size`, clipped to [GEN_STEPS_MIN, the preset's default] (longer fits of a small subset only
        memorize it)."""
        if self.gen_steps is not None:
            return self.gen_steps
        cap = DEFAULT_STEPS[self.preset]
        return int(min(cap, max(GEN_STEPS_MIN, round(GEN_EPOCHS * n_real / self.gen_batch_size))))

    def key(self, **context) -> str:
        """Names a unit's cache file: every setting that changes a (k, seed) run and the `context` it ran in
        (training and test data, classifier, library version, given generator), but not the list of regimes,
        the number of seeds or the headline's arm (so widening an evaluation reuses the runs it has)."""
        unit = {k: v for k, v in asdict(self).items() if k not in ("per_class", "seeds", "primary")}
        return hashlib.sha256(json.dumps({**unit, **context}, sort_keys=True).encode()).hexdigest()[:12]


def replicate_seed(seed: int, replicate: int) -> int:
    """The seed of a unit's classifier replicate: replicate 0 is the unit's own seed; every arm's replicate r
    uses the same one (same initial weights, same batch indices), so the arms stay paired."""
    return seed + 10_000 * replicate


def train_arm(subset: ImageData, pool, aug, cfg: EvalConfig, seed: int, test_images, test_labels, device,
              factory: Callable | None = None) -> tuple[torch.nn.Module, list[float]]:
    """One arm of one unit: `cfg.classifier_repeats` classifiers on batches of the real `subset` (plus the
    synthetic `pool`, if any, at `cfg.synthetic_share`) with the classical augmentation `aug` (or None), each
    scored on the test images. Replicate r has seed replicate_seed(seed, r) in every arm, for its weights, its
    batches and (train_classifier seeds torch's RNG) the per-image reference augmentation: the arms stay paired.
    Returns replicate 0's model and every replicate's accuracy."""
    share = cfg.synthetic_share if pool else 0.0
    first, accuracies = None, []
    for r in range(cfg.classifier_repeats):
        s = replicate_seed(seed, r)
        batches = _batches(subset, pool, share, cfg.batch_size, aug, s, device, cfg.augment_synthetic)
        model = train_classifier(batches, subset.channels, subset.num_classes, steps=cfg.steps_for(len(subset)),
                                 seed=s, device=device, factory=factory)
        if r == 0:
            first = model
        accuracies.append(accuracy(model, test_images, test_labels, device))
    return first, accuracies


def _pools(gen: Generator, subset: ImageData, cfg: EvalConfig, seed: int, device) -> dict:
    """Synthetic images by class and perturbed copies of the subset, made once per unit in big batches and
    kept on the unit's device."""
    pools = {}
    arms = set(cfg.arms)
    if arms & {"synthesize", "classical+synthesize"}:
        labels = torch.arange(subset.num_classes).repeat_interleave(cfg.synthetic_per_class)
        images = gen.sample(labels, steps=cfg.sample_steps, guidance=cfg.guidance, seed=seed, device=device,
                            progress=False)
        pools["synthesize"] = (images.to(device), labels.to(device))
    if "perturb" in arms:
        lo, hi = cfg.strength
        copies = [gen.perturb(subset.images, subset.labels, strength=lo + (hi - lo) * (m + 0.5) / cfg.perturb_copies,
                              steps=cfg.sample_steps, guidance=cfg.guidance, seed=seed + 1 + m, device=device,
                              progress=False) for m in range(cfg.perturb_copies)]
        pools["perturb"] = (torch.cat(copies).to(device), subset.labels.repeat(cfg.perturb_copies).to(device))
    return pools


def _filter(pool, model, threshold):
    """Keep the synthetic images the real-trained classifier gives their own class with p >= threshold."""
    images, labels = pool
    p = predict_proba(model, images, images.device)[torch.arange(len(labels)), labels.cpu()]
    keep = (p >= threshold).to(images.device)
    if keep.sum() == 0:   # training on an empty pool is no arm at all: use the whole pool and say so
        return pool, {"share_kept": 0.0, "used": "whole pool (nothing passed the filter)"}
    return (images[keep], labels[keep]), {"share_kept": keep.float().mean().item(), "used": "kept images"}


def _batches(real: ImageData, pool, share: float, batch_size: int, aug, seed: int, device,
             augment_synthetic: bool = True):
    """Batch maker for one arm: (1 - share) real images and share synthetic ones, all on `device`, plus the
    classical augmentation `aug` (batched: one call per batch; per-image: the CPU reference) on the real rows,
    and on the synthetic rows too when `augment_synthetic`."""
    g = torch.Generator().manual_seed(seed)
    g_aug = torch.Generator().manual_seed(seed + 1)   # its own stream: the arms' batch indices stay paired
    n_syn = int(round(share * batch_size)) if pool is not None else 0
    n_aug = batch_size if augment_synthetic else batch_size - n_syn
    images, labels = real.images.to(device), real.labels.to(device)

    def next_batch(step):
        idx = torch.randint(len(images), (batch_size - n_syn,), generator=g).to(device)
        x, y = images[idx], labels[idx]
        if n_syn:
            j = torch.randint(len(pool[0]), (n_syn,), generator=g).to(device)
            x, y = torch.cat([x, pool[0][j]]), torch.cat([y, pool[1][j]])
        if aug is not None and n_aug:
            head = aug(x[:n_aug], g_aug) if isinstance(aug, BatchAugment) else augment_batch(aug, x[:n_aug].cpu())
            x = torch.cat([head.to(device), x[n_aug:]])
        return x, y
    return next_batch


@dataclass
class Reference:
    """What every unit of one evaluation shares: the test split on the device and the fixed feature network
    (trained once on the whole training pool, never on test) with the test split's features."""

    test_images: torch.Tensor
    test_labels: torch.Tensor
    network: torch.nn.Module | None = None
    test_features: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    def to(self, device) -> "Reference":
        net = self.network.to(device) if self.network is not None else None
        return Reference(self.test_images.to(device), self.test_labels.to(device), net, self.test_features, self.info)


def reference_for(train: ImageData, test: ImageData, cfg: EvalConfig, device) -> Reference:
    device = resolve_device(device)
    ref = Reference(test.images.to(device), test.labels.to(device))
    if not cfg.metrics:
        return ref
    ref.network = train_classifier(random_batches(train.images, train.labels, cfg.batch_size, seed=0), train.channels,
                                   train.num_classes, steps=cfg.reference_steps, seed=0, device=device)
    ref.test_features = embed(ref.network, ref.test_images, device)
    ref.info = {"trained_on": train.fingerprint(), "steps": cfg.reference_steps, "network": type(ref.network).__name__}
    ref.info["fingerprint"] = _weights_fingerprint(ref.network, ref.info)
    return ref


def run_unit(train: ImageData, test: ImageData, k: int, seed: int, cfg: EvalConfig, gen: Generator | None = None,
             device="cpu", factory: Callable | None = None, threads: int | None = None,
             reference: Reference | None = None) -> dict:
    """One (k, seed) unit: subset, generator (fitted on the subset only), pools, every arm, metrics."""
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device)
    reference = reference.to(device) if reference is not None else reference_for(train, test, cfg, device)
    subset = train.subset(per_class=k, seed=seed) if k else train
    t0 = time.perf_counter()
    given = gen is not None
    if gen is None:
        gen = fit(subset, cfg.preset, cfg.gen_steps_for(len(subset)), seed=seed, device=device, progress=False,
                  batch_size=cfg.gen_batch_size, distributed=False)   # a unit is one process, even under torchrun
    fit_s = time.perf_counter() - t0
    pools = _pools(gen, subset, cfg, seed, device) if set(cfg.arms) - {"real", "classical"} else {}
    pools_s = time.perf_counter() - t0 - fit_s

    steps = cfg.steps_for(len(subset))
    if cfg.classical in POLICIES:
        classical = BatchAugment(cfg.classical, train.size, cfg.hflip)
    else:   # no batched version (the albumentations preset): torchvision/albumentations per image, on the CPU
        classical = classical_augment(cfg.classical, train.size, cfg.hflip)
    plan = {"real": (None, None), "classical": (None, classical), "synthesize": ("synthesize", None),
            "perturb": ("perturb", None), "classical+synthesize": ("synthesize", classical)}
    arms, models, kept = {}, {}, {}
    order = sorted(cfg.arms, key=lambda a: a != "real")   # the real-only model filters the pools
    for arm in order:
        pool_name, aug = plan[arm]
        pool = pools.get(pool_name)
        if pool is not None and cfg.filter_confidence is not None:
            if "real" not in models:
                raise DataError("filter_confidence needs the 'real' arm (its classifier does the filtering)")
            pool, kept[arm] = _filter(pool, models["real"], cfg.filter_confidence)
        t1 = time.perf_counter()
        share = cfg.synthetic_share if pool else 0.0
        models[arm], replicates = train_arm(subset, pool, aug, cfg, seed, reference.test_images,
                                            reference.test_labels, device, factory)
        arms[arm] = {"accuracy": float(np.mean(replicates)), "replicates": replicates, "optimizer_steps": steps,
                     "batch_size": cfg.batch_size, "seed": seed, "synthetic_share": share,
                     "seconds": round(time.perf_counter() - t1, 2)}
    unit = {"k": k, "seed": seed, "arms": arms, "kept_after_filter": kept,
            "subset_size": len(subset), "subset_fingerprint": subset.fingerprint(),
            "test_fingerprint": test.fingerprint(), "device": str(device),
            "generator": {"given": given, "fingerprint": gen.fingerprint,
                          "data_fingerprint": gen.config["data_fingerprint"], "fit_seconds": round(fit_s, 1),
                          "steps": gen.config["train"]["steps"]},
            "pools_seconds": round(pools_s, 1)}
    if "synthesize" in pools:   # a preview grid for the report: the first 8 synthetic images of every class
        images, labels = (t.cpu() for t in pools["synthesize"])
        unit["_arrays"] = {"samples": torch.cat([images[labels == c][:8] for c in range(train.num_classes)])}
    if cfg.metrics and "synthesize" in pools:
        t1 = time.perf_counter()
        unit["quality"] = _quality(pools["synthesize"], subset, reference, cfg, seed, device)
        unit["quality_seconds"] = round(time.perf_counter() - t1, 1)
        worst = [w["synthetic"] for w in unit["quality"]["memorization_worst"]]
        nearest = [w["nearest_train"] for w in unit["quality"]["memorization_worst"]]
        unit["_arrays"].update(memorized=pools["synthesize"][0][worst].cpu(), nearest_train=subset.images[nearest])
    unit["seconds"] = round(time.perf_counter() - t0, 1)
    return unit


PR_SAMPLES = 2000   # precision/recall: k-NN radii cost O(n^2); a stratified random subsample of each set


def _quality(pool, subset: ImageData, ref: Reference, cfg: EvalConfig, seed: int, device) -> dict:
    images, labels = pool
    feats_syn = embed(ref.network, images, device)
    prec, rec = precision_recall(ref.test_features, feats_syn, real_labels=ref.test_labels.cpu(),
                                 fake_labels=labels.cpu(), max_samples=PR_SAMPLES, seed=seed)
    mem = memorization(images, subset.images.to(images.device))
    return {"cas": cas(images, labels, ref.test_images, ref.test_labels, num_classes=subset.num_classes,
                       steps=cfg.cas_steps, seed=seed, device=device),
            "fid_own": fid_own(ref.test_features, feats_syn), "kid_own": kid_own(ref.test_features, feats_syn, seed=seed),
            "precision": prec, "recall": rec, "memorization_rate": mem["rate"], "memorization_worst": mem["worst"],
            "reference_network": ref.info["fingerprint"]}


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
               "diffaug": __version__, "generator": gen.fingerprint if gen is not None else None}
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
        cached = _cached(runs, k, seed, tag, train) if resume else None
        (units.append(cached) if cached else todo.append((k, seed)))
    n_jobs = jobs_for(len(todo), device) if n_jobs == "auto" else n_jobs
    _note_shared_gpu(n_jobs, device)
    reference = reference_for(train, test, cfg, device)
    threads = max(1, (os.cpu_count() or 1) // max(1, n_jobs)) if n_jobs != 1 else None
    for unit in _run_all(todo, train, test, cfg, gen, device, classifier, n_jobs, threads, progress, reference):
        if runs is not None:
            _store(runs, unit, tag)
        units.append(unit)
    if ranks.active:
        units = _gather_units(runs, everything, tag, train)
    units.sort(key=lambda u: (u["k"], u["seed"]))
    result = EvalResult(config={**asdict(cfg), "data": split_note, "generator_given": gen is not None,
                                "classifier": classifier_name, "reference_network": reference.info,
                                "device": str(resolve_device(device)), "cache_key": tag,
                                "headline": f"primary arm declared in advance: {cfg.primary}; all diffusion arms "
                                            "also compared with Holm correction"},
                        units=units, summary=summarize(units, cfg), out_dir=str(out_dir) if out_dir else None)
    if out_dir is not None and ranks.main:
        from .report import write_report
        write_report(result, train, gen)
    return result


def _gather_units(runs: Path, everything: list, tag: str, train: ImageData, poll_s: float = 1.0) -> list:
    """Every unit of the evaluation, waiting for the other ranks' files (torchrun stops all ranks if one fails)."""
    units = {}
    while len(units) < len(everything):
        for k, seed in everything:
            if (k, seed) not in units:
                unit = _cached(runs, k, seed, tag, train)
                if unit is not None:
                    units[k, seed] = unit
        if len(units) < len(everything):
            time.sleep(poll_s)
    return list(units.values())



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


def _unit_path(runs: Path, k: int, seed: int, tag: str) -> Path:
    return runs / f"k{k}-seed{seed}-{tag}.json"


def _cached(runs, k, seed, tag, train: ImageData):
    """A finished unit of this exact evaluation, or None; a file whose subset is not this data's is ignored."""
    if runs is None:
        return None
    path = _unit_path(runs, k, seed, tag)
    if not path.exists():
        return None
    unit = json.loads(path.read_text())
    subset = train.subset(per_class=k, seed=seed) if k else train
    if unit.get("subset_fingerprint") != subset.fingerprint():
        return None
    arrays = path.with_suffix(".npz")
    if arrays.exists():
        with np.load(arrays) as z:
            unit["_arrays"] = {name: torch.from_numpy(z[name]) for name in z.files}
    return unit


def _store(runs: Path, unit: dict, tag: str) -> None:
    """The unit as JSON, its images (preview grid, memorization pairs) as .npz beside it; both atomic."""
    runs.mkdir(parents=True, exist_ok=True)
    path = _unit_path(runs, unit["k"], unit["seed"], tag)
    arrays = unit.get("_arrays")
    if arrays:
        with atomic_path(path.with_suffix(".npz")) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **{name: a.numpy() for name, a in arrays.items()})
    with atomic_path(path) as tmp:   # written last: its presence means the unit is complete
        tmp.write_text(json.dumps({k: v for k, v in unit.items() if k != "_arrays"}, indent=1))


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
