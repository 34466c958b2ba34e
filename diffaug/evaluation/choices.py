"""A regime's choices, made on the training pool's folds and never on a test image: the tuned classical policy
(policies.select, with the evaluation's halving) and then the downstream network (policies.select_classifier over
the evaluation's menu, with that policy). `evaluate` caches each choice in runs/ and makes it on one rank; a
benchmark that wants the network and policy `evaluate` would choose calls `choose_regime` and gets them by
construction, not by a copy of the sequence."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ..classify.networks import resolve_classifier
from ..classify.policies import Policy, select, select_classifier
from ..data import ImageData
from ..diffusion.step import resolve_device
from .cache import load_json, store_json
from .config import EvalConfig
from .unitplan import selection_rows


def choose_classical(train: ImageData, k: int, cfg: EvalConfig, device="cpu", classifier=None, n_jobs: int = 1,
                     threads: int | None = None, progress: bool = False) -> dict:
    """Regime k's tuned classical policy, as `evaluate` chooses it (policies.select's result), with `classifier`
    (a factory) or, as `evaluate` without one, the first network of cfg.classifier_menu."""
    factory = classifier if classifier is not None else resolve_classifier(cfg.classifier_menu[0])
    return select(train, k, cfg.steps_for(selection_rows(cfg, k, train)), cfg.batch_size, cfg.hflip,
                  resolve_device(device), factory, n_jobs=n_jobs, threads=threads, imbalance=cfg.imbalance,
                  survivors=cfg.selection_survivors, progress=progress)


def choose_network(train: ImageData, k: int, cfg: EvalConfig, selection: dict, device="cpu", n_jobs: int = 1,
                   threads: int | None = None, progress: bool = False) -> dict:
    """Regime k's downstream network from cfg.classifier_menu, trained with the policy `selection` chose. The first
    entry's scores are the policy choice's own (the same fits, not run twice)."""
    known = selection["per_fold"][selection["winner"]]   # a winner is scored on every fold, halving or not
    return select_classifier(train, k, Policy.parse(selection["winner"]), cfg.classifier_menu,
                             cfg.steps_for(selection_rows(cfg, k, train)), cfg.batch_size, cfg.hflip,
                             resolve_device(device), n_jobs=n_jobs, threads=threads, imbalance=cfg.imbalance,
                             known=known, progress=progress)


def choose_regime(train: ImageData, k: int, cfg: EvalConfig, device="cpu", n_jobs: int = 1,
                  threads: int | None = None, progress: bool = False) -> tuple[dict, dict]:
    """(classical choice, network choice) of regime k, uncached: what `evaluate` would choose for it."""
    selection = choose_classical(train, k, cfg, device, None, n_jobs, threads, progress)
    return selection, choose_network(train, k, cfg, selection, device, n_jobs, threads, progress)


def classical_for(k: int, train: ImageData, cfg: EvalConfig, tag: str, runs, ranks, device, classifier,
                  n_jobs: int, threads, progress: bool = False) -> dict:
    """choose_classical, cached in runs/ and computed by one rank."""
    return cached_choice(choice_path(runs, "classical", k, tag), ranks, lambda: choose_classical(
        train, k, cfg, device, classifier, n_jobs, threads, progress and ranks.main))


def network_for(k: int, train: ImageData, cfg: EvalConfig, selection: dict, tag: str, runs, ranks, device,
                n_jobs: int, threads, progress: bool = False) -> dict:
    """choose_network, cached in runs/ and computed by one rank."""
    return cached_choice(choice_path(runs, "classifier", k, tag), ranks, lambda: choose_network(
        train, k, cfg, selection, device, n_jobs, threads, progress and ranks.main))


def choice_path(runs, kind: str, k: int, tag: str) -> Path | None:
    """Where regime k's `kind` choice ("classical" or "classifier") is cached, or None without a cache."""
    return runs / f"{kind}-k{k}-{tag}.json" if runs is not None else None


def cached_choice(path: Path | None, ranks, choose: Callable[[], dict]) -> dict:
    """A regime's choice read from `path` if it is there, else made by `choose` on rank 0 and stored (the other ranks
    wait for rank 0's file)."""
    choice = load_json(path)
    while choice is None and ranks.active and not ranks.main:
        time.sleep(1.0)
        choice = load_json(path)
    if choice is None:
        choice = choose()
        if path is not None:
            store_json(path, choice)
    return choice
