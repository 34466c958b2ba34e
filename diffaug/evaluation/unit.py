"""One evaluation unit, a (real images per class k, seed) pair: draw the stratified subset, fit a generator on
that subset only, build the synthetic pools, then train the same classifier for every arm with the same optimizer
steps, batch size and seeds, and score the generator's samples."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..data import ImageData
from ..diffusion.sampling import strengths_for
from ..diffusion.step import resolve_device
from ..errors import DataError
from ..fitting import fit
from ..generator import Generator
from ..io import digest
from .batched import POLICIES, BatchAugment
from .classical import augment_batch, classical_augment
from .classifier import accuracy, embed, predict_proba, random_batches, train_classifier
from .config import EvalConfig
from .metrics import cas, fid_own, kid_own, memorization, precision_recall

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
        images = gen.sample(labels, **cfg.sampling.fields(), seed=seed, device=device, progress=False)
        pools["synthesize"] = (images.to(device), labels.to(device))
    if "perturb" in arms:
        copies = [gen.perturb(subset.images, subset.labels, strength=s, **cfg.sampling.fields(), seed=seed, copy=m,
                              device=device, progress=False)
                  for m, s in enumerate(strengths_for(cfg.strength, cfg.perturb_copies))]
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
    ref.info["fingerprint"] = digest({"info": ref.info, "weights": ref.network.state_dict()})[:16]
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
