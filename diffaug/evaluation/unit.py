"""One evaluation unit, a (real images per class k, seed) pair: draw the stratified subset, fit a generator on
that subset only, build the synthetic pools, then train the same classifier for every arm with the same optimizer
steps, batch size and seeds, and score the generator's samples."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data import ImageData, rebalance_gaps
from ..diffusion.sampling import strengths_for
from ..diffusion.step import resolve_device
from ..errors import DataError
from ..fitting import fit
from ..generator import Generator
from ..classify.policies import AUTO, Policy, select
from ..classify.semi import self_train, with_rows
from ..classify.training import confident, embed, fit_classifier, new_classifier, predict_proba
from .config import BASELINE, LOGIT_ADJUST, PLAN, REBALANCE, RESAMPLE, SELF_TRAINING, EvalConfig
from .cache import UnitParts, machine
from .reference import Reference, reference_for
from .unitplan import unit_plan
from .metrics import (cas, fid_own, kid_own, memorization, pack_bits, per_class_accuracy, precision_recall,
                      shot_groups)


def train_arm(arm: str, subset: ImageData, pool, aug, cfg: EvalConfig, replicates: list, steps: int, test_images,
              test_labels, device, factory: Callable | None = None, unlabeled: torch.Tensor | None = None,
              teachers: list | None = None, share: float | None = None) -> tuple[list, list[dict]]:
    """One arm of one unit: a classifier per replicate seed pair, trained by the arm's learner (PLAN: supervised on
    the real `subset`, class-balanced or with the logit-adjusted loss for the long-tail opponents; self-training
    from `teachers[r]`; FixMatch on `unlabeled`) with the rows of `pool`, if any, at `share` (None:
    `cfg.synthetic_share`) and the classical augmentation `aug` (or None), each for exactly `steps` optimizer
    steps and scored on the test images. Replicate r has the same seeds in every arm (weights, batch indices and
    augmentation draws; fit_classifier seeds torch's RNG for the per-image reference augmentation): the arms stay
    paired. Returns the models and, per replicate, its accuracy, which test images it got right, the optimizer
    steps its loop counted and what its learner reports."""
    learner = PLAN[arm][2]
    share = (cfg.synthetic_share if share is None else share) if pool else 0.0
    mixing = dict(pool=pool, share=share, factory=factory)
    models, records = [], []
    for r, seeds in enumerate(replicates):
        extra = {}
        if learner in (None, RESAMPLE, LOGIT_ADJUST):
            model = fit_classifier(subset, aug, seeds, steps, cfg.batch_size, device,
                                   augment_synthetic=cfg.augment_synthetic, balanced=learner == RESAMPLE,
                                   logit_adjustment=_tau(cfg, learner, pool), **mixing)
        elif learner == SELF_TRAINING:
            model, _, rounds = self_train(subset, unlabeled, teachers[r], aug, seeds, steps, cfg.batch_size, device,
                                          threshold=cfg.self_training_threshold, rounds=cfg.self_training_rounds,
                                          augment_synthetic=cfg.augment_synthetic, **mixing)
            extra = {"kept_per_round": [h["kept"] for h in rounds]}
        else:
            model, mask = cfg.fixmatch.train(subset, unlabeled, seeds, steps, cfg.batch_size, device, **mixing)
            extra = {"mask_rate": mask}
        correct = predict_proba(model, test_images, device).argmax(1) == test_labels.cpu()
        recall = per_class_accuracy(correct, test_labels.cpu(), subset.num_classes)
        models.append(model)
        # float64 from the count of images: equal counts give equal accuracies, bit for bit
        records.append({"accuracy": int(correct.sum()) / len(correct), "balanced_accuracy": float(np.nanmean(recall)),
                        "correct": correct, "optimizer_steps": model.optimizer_steps, **extra})
    return models, records


def _tau(cfg: EvalConfig, learner: str | None, pool) -> float:
    """The logit adjustment of an arm's loss: none, the logit-adjust arm's tau, or the stack's own."""
    if learner != LOGIT_ADJUST:
        return 0.0
    return cfg.rebalance_tau if pool is not None else cfg.logit_tau


def _pools(gen: Generator, subset: ImageData, cfg: EvalConfig, seed: int, device) -> dict:
    """Synthetic images by class and perturbed copies of the subset, made once per unit in big batches and
    kept on the unit's device; the "mix" pool is both, in equal numbers (the perturbed copies cycled up to the
    synthetic images' count), so a row drawn from it is synthetic or perturbed with probability 1/2 each."""
    pools = {}
    needs = {PLAN[a][0] for a in cfg.arms}
    if needs & {"synthesize", "mix"}:
        labels = torch.arange(subset.num_classes).repeat_interleave(cfg.synthetic_per_class)
        images = gen.sample(labels, **cfg.sampling.fields(), seed=seed, device=device, progress=False)
        pools["synthesize"] = (images.to(device), labels.to(device))
    if needs & {"perturb", "mix"}:
        copies = [gen.perturb(subset.images, subset.labels, strength=s, **cfg.sampling.fields(), seed=seed, copy=m,
                              device=device, progress=False)
                  for m, s in enumerate(strengths_for(cfg.strength, cfg.perturb_copies))]
        pools["perturb"] = (torch.cat(copies).to(device), subset.labels.repeat(cfg.perturb_copies).to(device))
    if "mix" in needs:
        (synthetic, synthetic_labels), (perturbed, perturbed_labels) = pools["synthesize"], pools["perturb"]
        cycled = torch.arange(len(synthetic), device=perturbed.device) % len(perturbed)
        pools["mix"] = (torch.cat([synthetic, perturbed[cycled]]),
                        torch.cat([synthetic_labels, perturbed_labels[cycled]]))
    if REBALANCE in needs:
        pools.update(_rebalance(gen, subset, cfg, seed, device))
    return pools


def rebalance_rows(counts: list[int], fill: float, most: int) -> tuple[list[int], list[int]]:
    """(each class's gap to the head that synthetic rows fill, the synthetic images drawn for it): gap_c =
    round(fill * (head - n_c)); the class with the widest gap gets `most` images, the others in proportion, so
    the pool's class shares are the gaps' and the images are many more than the gaps (diversity, not repeats)."""
    gaps = rebalance_gaps(counts, fill)
    if not any(gaps):
        raise DataError(f"the classes hold {counts} images: none is short of the head, so there is nothing to "
                        "rebalance")
    widest = max(gaps)
    return gaps, [max(1, int(round(most * g / widest))) if g else 0 for g in gaps]


def _rebalance(gen: Generator, subset: ImageData, cfg: EvalConfig, seed: int, device) -> dict:
    """The rebalancing pool (synthetic rows filling each class's gap to the head) and its dose control's twin: the
    same labels, each generated row swapped for a real image of its class (cycled in a seeded order). Drawn
    beside the subset at share S / (N + S), S the gaps' sum and N the subset's size, a batch holds every class
    at the rate (n_c + gap_c) / (N + S): uniform when the fill is whole."""
    counts = subset.class_counts()
    gaps, rows = rebalance_rows(counts, cfg.rebalance_fill, cfg.synthetic_per_class)
    labels = torch.arange(subset.num_classes).repeat_interleave(torch.tensor(rows))
    images = gen.sample(labels, **cfg.sampling.fields(), seed=seed, device=device, progress=False)
    g = torch.Generator().manual_seed(seed)
    real = torch.empty_like(images)
    for c, m in enumerate(rows):
        own = torch.nonzero(subset.labels == c).flatten()
        order = own[torch.randperm(len(own), generator=g)]
        real[labels == c] = subset.images[order[torch.arange(m) % len(own)]]
    share = sum(gaps) / (len(subset) + sum(gaps))
    info = {"gaps": gaps, "rows": rows, "share": share, "fill": cfg.rebalance_fill}
    labels = labels.to(device)
    return {REBALANCE: (images.to(device), labels), REBALANCE + "-real": (real.to(device), labels), "_rebalance": info}


def _rest(train: ImageData, subset: ImageData) -> torch.Tensor:
    """The unlabelled images of a unit: the training pool less the subset's images (no label is read)."""
    known = {bytes(x.numpy()) for x in subset.images}
    return train.images[[i for i, x in enumerate(train.images) if bytes(x.numpy()) not in known]]


def _pseudo_labels(model, unlabeled: torch.Tensor, threshold: float, num_classes: int, device):
    """The unlabelled images `model` labels with confidence >= threshold, with those labels: as DPT does, more
    labelled rows for the generator."""
    keep, labels = confident(model, unlabeled, threshold, device)
    info = {"share_kept": float(keep.float().mean()), "kept": int(keep.sum()), "unlabeled": len(unlabeled),
            "threshold": threshold, "per_class": torch.bincount(labels[keep], minlength=num_classes).tolist()}
    return (unlabeled[keep], labels[keep]), info


def _target(pool, model, num_classes: int):
    """The synthetic pool with each class's rows repeated in proportion to (the classifier's error on that class's
    synthetic images + the mean error): the classes it confuses are drawn more often; the pool keeps its size."""
    images, labels = pool
    classes = labels.cpu()
    wrong = (predict_proba(model, images, images.device).argmax(1) != classes).float()
    error = torch.stack([wrong[classes == c].mean() for c in range(num_classes)])
    weight = error + error.mean() if error.sum() > 0 else torch.ones(num_classes)
    counts = (weight / weight.sum() * len(labels)).round().long().clamp(min=1)
    rows = []
    for c in range(num_classes):
        own = torch.nonzero(classes == c).flatten()
        rows.append(own[torch.arange(int(counts[c])) % len(own)])   # cycle through the class's images
    rows = torch.cat(rows).to(images.device)
    return (images[rows], labels[rows]), {"error": error.tolist(), "rows": counts.tolist()}


def _filter(pool, model, threshold):
    """Keep the synthetic images the real-trained classifier gives their own class with p >= threshold."""
    images, labels = pool
    p = predict_proba(model, images, images.device)[torch.arange(len(labels)), labels.cpu()]
    keep = (p >= threshold).to(images.device)
    if keep.sum() == 0:   # training on an empty pool is no arm at all: use the whole pool and say so
        return pool, {"share_kept": 0.0, "used": "whole pool (nothing passed the filter)"}
    return (images[keep], labels[keep]), {"share_kept": keep.float().mean().item(), "used": "kept images"}


def run_unit(train: ImageData, test: ImageData, k: int, seed: int, cfg: EvalConfig, gen: Generator | None = None,
             device="cpu", factory: Callable | None = None, threads: int | None = None,
             reference: Reference | None = None, classical: Policy | None = None,
             pool_gen: Generator | None = None, parts: Path | None = None) -> dict:
    """One (k, seed) unit: the subset; the arms that need no generator (real, classical, dose controls, the
    semi-supervised learners); the generator, fitted on the subset only or, with cfg.unlabeled, fine-tuned from
    `pool_gen` on the subset plus the labeller's confident pseudo-labels and the unlabelled pool; its pools; the
    arms that mix them in; metrics. `classical`: this regime's tuned baseline policy (None: cfg.classical; with
    unlabelled images and cfg.classical "auto", chosen here by cross-validation within the labelled subset).
    `parts`: a folder where the unit keeps each part as it ends and finds those a killed run kept (UnitParts)."""
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device)
    reference = reference.to(device) if reference is not None else reference_for(train, test, cfg, device)
    plan = unit_plan(cfg, k, seed, train.num_classes)
    streams, subset = plan.streams, plan.subset(train)
    counts = subset.class_counts()
    groups = shot_groups(counts) if cfg.imbalance is not None else {}
    done = UnitParts(parts, machine(device))   # what a killed run of this unit finished
    t0 = time.perf_counter() - done.seconds
    unlabeled = _rest(train, subset) if cfg.unlabeled else None
    steps = cfg.steps_for(len(subset) + (len(unlabeled) if unlabeled is not None else 0))
    selection = None
    if classical is None and cfg.classical == AUTO:   # labels withheld: only the subset's labels choose
        selection = done.get("selection")
        if selection is None:
            selection = select(subset, 0, steps, cfg.batch_size, cfg.hflip, device, factory,
                               survivors=cfg.selection_survivors)
            done.keep(time.perf_counter() - t0, selection=selection)
        classical = Policy.parse(selection["winner"])
    policy = classical or Policy.parse(cfg.classical)
    aug = policy.build(train.size, cfg.hflip)
    pools = {"real": (subset.images.to(device), subset.labels.to(device))}   # what a dose control mixes in
    arms, models, kept, rebalance = {}, {}, dict(done.get("kept") or {}), {}
    read_later = {"real", BASELINE, cfg.labeller}   # the models later parts use: the filter, the teacher, the labeller

    def run(arm: str) -> None:
        pool_name, augmented, learner = PLAN[arm]
        if (record := done.arm(arm)) is not None:
            arms[arm] = record
            found = done.models(arm, lambda: new_classifier(factory, train.channels, train.num_classes, 0, device))
            if found is not None:
                models[arm] = found
            return
        pool = pools.get(pool_name)
        generated = pool_name in ("synthesize", "perturb", "mix", REBALANCE)
        if pool is not None and generated and cfg.filter_confidence is not None:
            if "real" not in models:
                raise DataError("filter_confidence needs the 'real' arm (its classifier does the filtering)")
            pool, kept[arm] = _filter(pool, models["real"][0], cfg.filter_confidence)
        share = rebalance["share"] if pool_name in (REBALANCE, REBALANCE + "-real") else cfg.synthetic_share
        # two dose controls draw the same batches (the same clean real rows at the same share): one set of fits
        twin = (next((a for a in arms if PLAN[a] == PLAN[arm] and arms[a]["synthetic_share"] == share), None)
                if pool_name == "real" else None)
        if twin is not None:
            arms[arm] = {**arms[twin], "seconds": 0.0, "same_batches_as": twin}
            if twin in models:
                models[arm] = models[twin]
            return
        t1 = time.perf_counter()
        models[arm], records = train_arm(arm, subset, pool, aug if augmented else None, cfg, streams["replicates"],
                                         steps, reference.test_images, reference.test_labels, device, factory,
                                         unlabeled, models.get(BASELINE), share)
        correct = torch.stack([r["correct"] for r in records]).float().mean(0)   # per test image, over replicates
        recall = per_class_accuracy(correct, reference.test_labels.cpu(), train.num_classes)
        arms[arm] = {"accuracy": float(np.mean([r["accuracy"] for r in records])),
                     "balanced_accuracy": float(np.mean([r["balanced_accuracy"] for r in records])),
                     "replicates": [r["accuracy"] for r in records], "per_class": recall,
                     "groups": {g: float(np.mean([recall[c] for c in members])) for g, members in groups.items()},
                     "correct": [pack_bits(r["correct"]) for r in records],
                     "optimizer_steps": [r["optimizer_steps"] for r in records], "batch_size": cfg.batch_size,
                     "synthetic_share": share if pool else 0.0, "learner": learner,
                     "classical": policy.label if augmented else None, "seconds": round(time.perf_counter() - t1, 2),
                     **{key: [r[key] for r in records] for key in ("kept_per_round", "mask_rate") if key in records[0]}}
        done.keep(time.perf_counter() - t0, arm=arm, record=arms[arm],
                  models=models[arm] if arm in read_later else None, kept=kept)

    # the real-only model filters the pools; the classical arm's models teach self-training's first round
    first = [a for a in ("real", BASELINE) if a in cfg.arms]
    for arm in first:
        run(arm)
    for arm in (a for a in cfg.arms if a not in first and PLAN[a][0] in (None, "real")):
        run(arm)
    if done.get("pools") is None:
        made, about = _generate(train, subset, unlabeled, cfg, streams, device, gen, pool_gen, models, kept)
        done.keep(time.perf_counter() - t0, pools=made, about_pools=about, kept=kept)
    else:   # the generator's pools, kept by a killed run
        made, about = done.pools(device), done.get("pools")
    pools.update(made)
    rebalance.update(about["rebalance"])
    for arm in (a for a in cfg.arms if a not in arms):
        run(arm)
    unit = {"k": k, "seed": seed, "streams": {n: streams[n] for n in ("subset", "generator", "pools")},
            "replicate_seeds": [list(p) for p in streams["replicates"]], "classical": policy.label,
            "arms": {arm: arms[arm] for arm in cfg.arms}, "kept_after_filter": kept, "subset_size": len(subset),
            "class_counts": counts, "groups": groups, **({"rebalance": rebalance} if rebalance else {}),
            "subset_fingerprint": subset.fingerprint(), "test_fingerprint": test.fingerprint(), "device": str(device),
            "machine": machine(device), "generator": about["generator"], "pools_seconds": about["pools_seconds"],
            "classifier_steps": steps,
            "unlabeled": len(unlabeled) if unlabeled is not None else 0}
    if selection is not None:
        unit["classical_selection"] = selection
    if "synthesize" in pools:   # a preview grid for the report: the first 8 synthetic images of every class
        images, labels = (t.cpu() for t in pools["synthesize"])
        unit["_arrays"] = {"samples": torch.cat([images[labels == c][:8] for c in range(train.num_classes)])}
    if cfg.metrics and "synthesize" in pools:
        t1 = time.perf_counter()
        unit["quality"] = _quality(pools["synthesize"], subset, reference, cfg, streams["pools"], device)
        unit["quality_seconds"] = round(time.perf_counter() - t1, 1)
        worst = [w["synthetic"] for w in unit["quality"]["memorization_worst"]]
        nearest = [w["nearest_train"] for w in unit["quality"]["memorization_worst"]]
        unit["_arrays"].update(memorized=pools["synthesize"][0][worst].cpu(), nearest_train=subset.images[nearest])
    if cfg.metrics and "perturb" in pools:   # where perturbing starts to change the class
        unit["perturb_label_kept"] = _label_kept(pools["perturb"], reference, cfg)
    unit["seconds"] = round(time.perf_counter() - t0, 1)
    return unit


def _generate(train: ImageData, subset: ImageData, unlabeled, cfg: EvalConfig, streams: dict, device,
              gen: Generator | None, pool_gen: Generator | None, models: dict, kept: dict) -> tuple[dict, dict]:
    """A unit's generator (`gen` if given, else fitted on the subset; with unlabelled images fine-tuned from
    `pool_gen` on the subset plus the labeller's confident pseudo-labels, recorded in `kept`) and its pools:
    ({name: (images, labels)}, what the unit records of them: the generator, the seconds, the rebalancing)."""
    t_fit = time.perf_counter()
    given = gen is not None
    if gen is None:
        labelled = subset
        if cfg.unlabeled:   # DPT: the labeller's confident pseudo-labels train the generator's classes too
            labeller = models[cfg.labeller][0] if cfg.labeller in models else models[BASELINE][0]
            rows, kept["pseudo_labels"] = _pseudo_labels(labeller, unlabeled, cfg.pseudo_label_threshold,
                                                         subset.num_classes, device)
            kept["pseudo_labels"]["labeller"] = cfg.labeller if cfg.labeller in models else BASELINE
            labelled = with_rows(subset, *rows)
        gen = unit_generator(labelled, cfg, streams, device, unlabeled=train.images if cfg.unlabeled else None,
                             init=pool_gen)   # "rest": labels withheld
    fit_s = time.perf_counter() - t_fit
    pools = _pools(gen, subset, cfg, streams["pools"], device)
    rebalance = pools.pop("_rebalance", {})
    if cfg.target_classes and "synthesize" in pools and BASELINE in models:
        pools["synthesize"], kept["targeted"] = _target(pools["synthesize"], models[BASELINE][0], subset.num_classes)
    return pools, {"generator": {"given": given, "fingerprint": gen.fingerprint,
                                 "data_fingerprint": gen.config["data_fingerprint"], "fit_seconds": round(fit_s, 1),
                                 "steps": gen.config["train"]["steps"],
                                 "init": gen.config.get("init", {}).get("fingerprint")},
                   "pools_seconds": round(time.perf_counter() - t_fit - fit_s, 1), "rebalance": rebalance}


def unit_generator(labelled: ImageData, cfg: EvalConfig, streams: dict, device, unlabeled=None,
                   init: Generator | None = None) -> Generator:
    """A unit's generator: fitted on its labelled images (and, with unlabelled images, fine-tuned from `init` on
    them too) with the unit's generator stream; the same call for the run and for an exported recipe."""
    return fit(labelled, cfg.preset, cfg.gen_steps_for(len(labelled)), seed=streams["generator"], device=device,
               progress=False, batch_size=cfg.gen_batch_size, augment=cfg.gen_augment,
               distributed=False,   # one process, even under torchrun
               unlabeled=unlabeled, init=init, unlabeled_share=cfg.unlabeled_share)


def _label_kept(pool, ref: Reference, cfg: EvalConfig) -> dict:
    """Per perturbation strength, the share of perturbed copies the reference classifier (trained on real images)
    still assigns to their label."""
    images, labels = pool
    right = predict_proba(ref.network, images, images.device).argmax(1) == labels.cpu()
    strengths = strengths_for(cfg.strength, cfg.perturb_copies)
    return {f"{s:g}": float(part.float().mean()) for s, part in zip(strengths, right.chunk(len(strengths)))}


PR_SAMPLES = 2000   # precision/recall: k-NN radii cost O(n^2); a stratified random subsample of each set


def _quality(pool, subset: ImageData, ref: Reference, cfg: EvalConfig, seed: int, device) -> dict:
    images, labels = pool
    feats_syn = embed(ref.network, images, device)
    prec, rec = precision_recall(ref.test_features, feats_syn, real_labels=ref.test_labels.cpu(),
                                 fake_labels=labels.cpu(), max_samples=PR_SAMPLES, seed=seed)
    mem = memorization(images, subset.images.to(images.device))
    return {"cas": cas(images, labels, ref.test_images, ref.test_labels, num_classes=subset.num_classes,
                       steps=cfg.cas_steps, seed=seed, device=device),
            "fid_own": fid_own(ref.test_features, feats_syn),
            "kid_own": kid_own(ref.test_features, feats_syn, seed=seed),
            "precision": prec, "recall": rec, "memorization_rate": mem["rate"], "memorization_worst": mem["worst"],
            "reference_network": ref.info["fingerprint"]}
