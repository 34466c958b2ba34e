"""The classical baseline: named augmentation policies, the menu the tuned baseline is chosen from, and the choice
itself, by cross-validation inside the training pool (the test split is never passed in).

A diffusion arm has to beat the strongest classical augmentation a user would have tuned, not one fixed policy:
`classical="auto"` (the default) picks, per regime, the menu entry whose classifiers do best on held-out folds
of the training pool, trained exactly as the evaluation's arms are (same classifier, steps and batch size)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..checks import call_spec
from ..data import ImageData, longtail_counts
from ..errors import DataError
from ..workers import in_processes
from .batched import POLICIES, BatchAugment
from .classical import CLASSICAL, classical_augment
from .training import accuracy, class_recalls, fit_classifier

AUTO = "auto"
FOLDS = 3          # each pool image validated on once; 3 folds of digits' 898 images hold ~300 each
SELECTION_SEED = 20261127   # the folds' split: fixed, so a regime's choice is one cached fact


@dataclass(frozen=True)
class Policy:
    """A classical augmentation: a policy of POLICIES (or CLASSICAL's per-image ones), its magnitude scaled to the
    image (None: torchvision's own magnitudes) and the share `p` of images it touches."""

    name: str
    magnitude: float | None = None
    p: float = 1.0

    @property
    def label(self) -> str:
        extras = ([f"m={self.magnitude:g}"] if self.magnitude is not None else []) + \
                 ([f"p={self.p:g}"] if self.p != 1.0 else [])
        return self.name + (f"({','.join(extras)})" if extras else "")

    @classmethod
    def parse(cls, text: str) -> "Policy":
        """'trivialaugment', 'trivialaugment(m=0.5)', 'crop(p=0.5)', 'randaugment(m=1,p=0.5)'."""
        spec = call_spec(text, float, "number")
        if not spec or spec[0] not in CLASSICAL:
            raise DataError(f"unknown classical augmentation {text!r}; choose one of {CLASSICAL} (optionally with "
                            f"(m=..., p=...), e.g. 'trivialaugment(m=0.5,p=0.5)') or {AUTO!r}")
        name, values = spec
        if set(values) - {"m", "p"}:
            raise DataError(f"{text!r}: a policy takes m= (magnitude) and p= (share of images), not {sorted(values)}")
        policy = cls(name, values.get("m"), values.get("p", 1.0))
        if (policy.magnitude is not None and not 0 < policy.magnitude <= 1) or not 0 < policy.p <= 1:
            raise DataError(f"{text!r}: m and p must lie in (0, 1]")
        if policy.name not in POLICIES and (policy.magnitude is not None or policy.p != 1.0):
            raise DataError(f"{text!r}: {policy.name} has no batched version, so no m= or p=")
        return policy

    def build(self, size: tuple[int, int], hflip: bool = False):
        """The augmentation: batched on the device where there is a batched version, else per image on the CPU."""
        if self.name in POLICIES:
            return BatchAugment(self.name, size, hflip, self.magnitude, self.p)
        return classical_augment(self.name, size, hflip)


# Small on purpose (every entry costs FOLDS classifier fits per regime): crop alone, and the two automatic
# policies with magnitudes scaled to the image at half and full strength, each on every image or on half of them.
MENU = tuple(Policy(name, m, p) for name, m in (("crop", None), ("trivialaugment", 0.5), ("trivialaugment", 1.0),
                                                ("randaugment", 1.0))
             for p in (1.0, 0.5))


def rule(within: str, k="k", imbalance: float | None = None, survivors: int | None = None) -> str:
    """What `select(pool, k, ..., imbalance=, survivors=)` does, in words, for a pool described by `within` (the
    report's description of the classical baseline)."""
    metric = "balanced accuracy (mean per-class recall)" if imbalance is not None else "accuracy"
    if imbalance is not None:
        train = f"a long-tailed subset from the other folds ({k} images of the head class down to {k} / {imbalance:g})"
    else:
        train = "all the images of the other folds" if k == 0 else f"{k} per class from the other folds"
    fits = (f"every entry on the first fold and, by successive halving, the best {survivors} on the other two"
            if survivors is not None else "one classifier per entry and fold")
    return (f"the menu entry with the highest mean validation {metric} over {FOLDS} stratified folds of {within} "
            f"(trained on {train}; {fits}; the evaluation's classifier, steps and batch size; ties go to the "
            "earlier entry); the test split is not used")


def folds(labels: torch.Tensor, n: int = FOLDS) -> list[np.ndarray]:
    """Stratified folds of a pool (indices), from SELECTION_SEED."""
    from sklearn.model_selection import StratifiedKFold

    y = labels.numpy()
    split = StratifiedKFold(n_splits=n, shuffle=True, random_state=SELECTION_SEED).split(np.zeros(len(y)), y)
    return [val for _, val in split]


def selection_tasks(pool: ImageData, k: int, imbalance: float | None = None) -> list[tuple[int, ImageData, ImageData]]:
    """(fold, training subset, validation images) per fold: k per class from the other folds (all when k = 0),
    or with `imbalance` the long-tailed profile from k (data.longtail_counts, its class order drawn per fold)."""
    tasks = []
    for f, val in enumerate(folds(pool.labels)):
        rest = pool.select(np.setdiff1d(np.arange(len(pool)), val))
        held = rest.class_counts()
        if imbalance is not None:
            wanted = longtail_counts(k, imbalance, pool.num_classes, seed=SELECTION_SEED + f)
            train = rest.subset(per_class=[min(n, h) for n, h in zip(wanted, held)], seed=SELECTION_SEED + f)
        else:
            train = rest.subset(per_class=min(k, min(held)), seed=SELECTION_SEED + f) if k else rest
        tasks.append((f, train, pool.select(val)))
    return tasks


def score(policy: Policy, fold: int, train: ImageData, val: ImageData, steps: int, batch_size: int, hflip: bool,
          device, factory=None, threads: int | None = None, balanced: bool = False) -> float:
    """Validation accuracy (`balanced`: mean per-class recall) of one classifier trained on `train` with `policy`
    (seeded by the fold: every entry of the menu sees the same initial weights and batch indices)."""
    if threads:
        torch.set_num_threads(threads)
    seed = SELECTION_SEED + fold
    model = fit_classifier(train, policy.build(train.size, hflip), (seed, seed + 1), steps, batch_size, device,
                           factory=factory)
    if not balanced:
        return accuracy(model, val.images, val.labels, device)
    return float(np.mean(class_recalls(model, val.images, val.labels, val.num_classes, device)))


def finalists(first_fold: dict, survivors: int) -> list[str]:
    """Successive halving's second stage: the `survivors` entries with the best first-fold scores (ties: the
    earlier entry), in menu order (the dict's)."""
    order = list(first_fold)
    best = sorted(order, key=lambda label: (-first_fold[label], order.index(label)))[:survivors]
    return [label for label in order if label in best]


def halving_winner(per_fold: dict, survivors: int | None) -> str:
    """The classical choice's winner from its per-fold scores ({label: [score per fold]}, in menu order): the best
    mean (ties: the earlier entry), among the first fold's best `survivors` when halving (None: every entry)."""
    labels = list(per_fold) if survivors is None else finalists({k: v[0] for k, v in per_fold.items()}, survivors)
    return max(labels, key=lambda label: (float(np.mean(per_fold[label])), -labels.index(label)))


def network_winner(per_fold: dict, n_val: int | None = None) -> dict:
    """The one-standard-error rule over a menu ordered by cost ({spec: [score per fold]}): the cheapest entry whose
    mean is within one standard error of the best mean. The error is the best entry's over its fold means; with
    `n_val` (the validation images all folds hold together) it is floored at the binomial error of an accuracy
    over that many images, sqrt(p (1 - p) / n_val): three fold means (two degrees of freedom) can agree by chance
    to a tenth of a point, and a wider network must then beat the cheaper one by more than a few images."""
    menu = list(per_fold)
    means = {spec: float(np.mean(v)) for spec, v in per_fold.items()}
    best = max(menu, key=lambda spec: (means[spec], -menu.index(spec)))
    fold_se = float(np.std(per_fold[best], ddof=1) / np.sqrt(len(per_fold[best])))
    se = fold_se if n_val is None else max(fold_se, float(np.sqrt(means[best] * (1 - means[best]) / n_val)))
    winner = next(spec for spec in menu if means[spec] >= means[best] - se)
    return {"winner": winner, "best": best, "se": se, "fold_se": fold_se}


def walk(menu: tuple, scores_of: Callable[[str], list], n_val: int | None = None) -> dict:
    """The network choice's walk over `menu` (cheapest first): {spec: per-fold scores} of the entries it scored.
    `scores_of(spec)` scores one entry; the walk stops at the first entry that does not beat the best of those before
    it by more than their standard error (`network_winner`'s), so the wider ones are not scored."""
    per_fold = {}
    for spec in menu:
        per_fold[spec] = scores_of(spec)
        if len(per_fold) > 1:
            earlier = network_winner({s: v for s, v in per_fold.items() if s != spec}, n_val)
            if float(np.mean(per_fold[spec])) <= float(np.mean(per_fold[earlier["best"]])) + earlier["se"]:
                break
    return per_fold


def selection_fits(survivors: int | None) -> int:
    """Classifier fits of one classical choice: every entry on every fold, or by successive halving every entry on
    the first fold and `survivors` of them on the others."""
    kept = len(MENU) if survivors is None else min(survivors, len(MENU))
    return len(MENU) + kept * (FOLDS - 1)


def select(pool: ImageData, k: int, steps: int, batch_size: int, hflip: bool, device, factory=None,
           n_jobs: int = 1, threads: int | None = None, imbalance: float | None = None,
           survivors: int | None = None, progress: bool = False) -> dict:
    """Choose the classical baseline for regime k from MENU by cross-validation inside `pool` (the training
    pool; nothing else is passed in). Returns the menu, each entry's per-fold and mean scores, and the winner.
    With `imbalance` the folds' training subsets are long-tailed and the score is balanced accuracy.
    `survivors`: successive halving; every entry is scored on the first fold, the best `survivors` of them
    (ties: the earlier entry) on the others, and the winner is the survivor with the best mean. `progress`: a bar
    over the classifier fits (a regime's choice is the first long wait of an evaluation)."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    tasks = selection_tasks(pool, k, imbalance)
    args = (steps, batch_size, hflip, device, threads, imbalance is not None)
    per_fold = {p.label: [] for p in MENU}
    stages = [(MENU, tasks)] if survivors is None else [(MENU, tasks[:1]), (None, tasks[1:])]
    entries = list(MENU)
    bar = tqdm(total=selection_fits(survivors), desc=f"classical choice, {k or 'all'} per class", unit="fit",
               disable=not progress)
    for chosen, fold_tasks in stages:
        if chosen is None:   # the second stage of halving: the best of the first fold go on
            keep = finalists({label: v[0] for label, v in per_fold.items()}, survivors)
            entries = [p for p in MENU if p.label in keep]
        jobs = [(policy, *task, factory) for policy in entries for task in fold_tasks]
        for (policy, *_), acc in zip(jobs, _scores(jobs, args, n_jobs)):
            per_fold[policy.label].append(acc)
            bar.update(1)
    bar.close()
    means = {label: float(np.mean(v)) for label, v in per_fold.items()}
    return {"k": k, "imbalance": imbalance, "menu": list(means), "per_fold": per_fold, "mean": means,
            "winner": halving_winner(per_fold, survivors), "rule": rule("the images given", k, imbalance, survivors),
            "folds": FOLDS, "survivors": survivors, "finalists": [p.label for p in entries],
            "steps": steps, "seconds": round(time.perf_counter() - t0, 1)}


NETWORK_RULE = ("the cheapest network (the menu is ordered by cost) whose mean validation score is within one "
                "standard error of the best network's mean (the error over folds, at least the binomial error of an "
                "accuracy over all the validation images), with the regime's classical policy; the menu is walked "
                "cheapest first and stops at the first network no better than the ones before it by more than "
                "that error")


def select_classifier(pool: ImageData, k: int, policy: Policy, menu: tuple, steps: int, batch_size: int,
                      hflip: bool, device, n_jobs: int = 1, threads: int | None = None,
                      imbalance: float | None = None, known: list | None = None, progress: bool = False) -> dict:
    """Choose regime k's downstream network from `menu` (classifier specs, cheapest first, e.g. 'smallcnn',
    'smallcnn(width=32)') by the cross-validation `select` runs, on the same folds, with the regime's classical
    `policy`: the network the tuned classical arm does best with is the one every arm trains (a gain over an
    under-sized classifier is not one a user with a real network sees). The winner is the cheapest entry whose mean
    is within one standard error of the best mean (`network_winner`): the one-standard-error rule of
    cross-validation (Hastie, Tibshirani & Friedman, ESL 7.10), since a wider network that scores the same costs
    several times the fits of every arm. The menu is walked cheapest first and stops at the first entry that does
    not beat the best before it by more than that error: the wider entries, the costliest fits of the choice, are
    then not scored (they could only win by beating every cheaper one by more than the error).
    `known`: the first entry's per-fold scores with this policy, from the policy's own choice (the same fits, not
    run twice)."""
    from tqdm.auto import tqdm

    from .networks import resolve_classifier

    t0 = time.perf_counter()
    menu = tuple(menu)
    tasks = selection_tasks(pool, k, imbalance)
    n_val = sum(len(val) for _, _, val in tasks)
    given = {}
    if known is not None:
        if len(known) != len(tasks):
            raise DataError(f"known scores cover {len(known)} folds, the choice has {len(tasks)}")
        given[menu[0]] = [float(x) for x in known]
    args = (steps, batch_size, hflip, device, threads, imbalance is not None)
    bar = tqdm(total=len(tasks) * (len(menu) - len(given)), desc=f"classifier choice, {k or 'all'} per class",
               unit="fit", disable=not progress)

    def scores_of(spec) -> list:
        if spec in given:   # the first entry's, from the policy's choice
            return given[spec]
        scores = []
        for acc in _scores([(policy, *task, resolve_classifier(spec)) for task in tasks], args, n_jobs):
            scores.append(acc)
            bar.update(1)
        return scores
    per_fold = walk(menu, scores_of, n_val)
    bar.close()
    choice = network_winner(per_fold, n_val)
    return {"k": k, "policy": policy.label, "menu": list(menu), "per_fold": per_fold,
            "mean": {spec: float(np.mean(v)) for spec, v in per_fold.items()}, "best": choice["best"],
            "standard_error": choice["se"], "fold_standard_error": choice["fold_se"], "winner": choice["winner"],
            "not_scored": [spec for spec in menu if spec not in per_fold], "rule": NETWORK_RULE, "folds": FOLDS,
            "steps": steps, "seconds": round(time.perf_counter() - t0, 1)}


def _scores(jobs: list, args: tuple, n_jobs: int):
    """Each job's score as it finishes, in the jobs' order. A job is (policy, fold, train, val, factory); `args`
    are score's (steps, batch_size, hflip, device, threads, balanced), shared by every job."""
    steps, batch_size, hflip, device, threads, balanced = args
    if n_jobs > 1 and len(jobs) > 1:
        from joblib import delayed
        return in_processes(n_jobs, (
            delayed(score)(*job[:4], steps, batch_size, hflip, device, job[4], threads, balanced) for job in jobs))
    return (score(*job[:4], steps, batch_size, hflip, device, job[4], balanced=balanced) for job in jobs)
