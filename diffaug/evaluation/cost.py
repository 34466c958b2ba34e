"""What an evaluation will cost, said before it starts: each part's work (classifier steps, generator steps, sampled
network rows) times a few steps of each, timed on this machine at the threads each process will have.

An estimate, not a promise: it counts the work the defaults schedule and times it on random images of the data's
size; the scoring of validation folds, the pools' perturbed copies and process start-up are counted roughly.
benchmarks/results/estimate_check.md holds it beside measured wall times.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from ..classify.networks import resolve_classifier
from ..classify.policies import AUTO, FOLDS, MENU, selection_fits
from ..classify.training import as_input, new_classifier, training_logits
from ..data import ImageData
from .cache import using_threads
from .config import CONTROL, FIXMATCH, PLAN, SELF_TRAINING, EvalConfig
from .unitplan import selection_rows, unit_plan

TIMED_STEPS = 4   # after one warm-up step


def classifier_step(spec, train: ImageData, batch: int, threads: int | None) -> float:
    """Seconds of one SGD step (forward, backward, update) of network `spec` on a batch of the data's size."""
    with using_threads(threads):
        model = new_classifier(resolve_classifier(spec), train.channels, train.num_classes, 0, "cpu")
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = as_input(torch.randint(0, 256, (batch, train.channels, *train.size), dtype=torch.uint8), "cpu")
        y = torch.randint(train.num_classes, (batch,))
        model.train()
        for i in range(TIMED_STEPS + 1):
            if i == 1:
                t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(training_logits(model, x), y).backward()
            opt.step()
        return (time.perf_counter() - t0) / TIMED_STEPS


def augment_step(train: ImageData, batch: int, threads: int | None) -> float:
    """Seconds of the classical policy on one batch, the mean over the policy menu (the choice tries them all; a
    regime then runs the one it chose)."""
    with using_threads(threads):
        x = torch.randint(0, 256, (batch, train.channels, *train.size), dtype=torch.uint8)
        g = torch.Generator().manual_seed(0)
        seconds = []
        for policy in MENU:
            aug = policy.build(train.size)
            aug(x, g)   # warm-up
            t0 = time.perf_counter()
            for _ in range(2):
                aug(x, g)
            seconds.append((time.perf_counter() - t0) / 2)
        return sum(seconds) / len(seconds)


def generator_step(cfg: EvalConfig, train: ImageData, threads: int | None) -> float:
    """Seconds of one training step of the evaluation's generator (its preset, at gen_batch_size)."""
    from ..fitting import fit

    with using_threads(threads):
        few = train.subset(per_class=2, seed=0)
        seconds = []
        for steps in (1, 1 + TIMED_STEPS):
            t0 = time.perf_counter()
            fit(few, cfg.preset, steps, progress=False, batch_size=cfg.gen_batch_size, distributed=False)
            seconds.append(time.perf_counter() - t0)
        return max(seconds[1] - seconds[0], 1e-4) / TIMED_STEPS


def estimate(train: ImageData, cfg: EvalConfig, todo: list, menu: tuple, choices: list, n_jobs: int,
             threads: int | None, timings: dict | None = None, kept: dict | None = None,
             fitted: set | None = None) -> dict:
    """Seconds per part of this run: the classical choice and the network choice of the regimes in `choices` (those
    not cached; the network choice's walk scores the menu's second entry, and the wider ones only in the widest
    case), the units in `todo` ((k, seed) pairs) with the networks of `menu` (names or factories, cheapest
    first), and the total wall time over `n_jobs` processes. `timings` ({"classifier": {network: seconds per step},
    "generator": seconds per step, "augment": seconds of the classical policy per batch}) skips the timing, for tests
    and for a caller that has them. A resumed run's work done is left out: `kept` ({(k, seed): the part names a
    killed unit kept, cache.UnitParts.finished}) and `fitted` (the seeds whose pool generator is cached)."""
    timings = dict(timings or {})
    menu = tuple(menu)
    if "classifier" not in timings:
        timings["classifier"] = {spec: classifier_step(spec, train, cfg.batch_size, threads) for spec in menu}
    if "generator" not in timings:
        timings["generator"] = generator_step(cfg, train, threads)
    if "augment" not in timings:
        timings["augment"] = augment_step(train, cfg.batch_size, threads)
    t_aug = timings["augment"]
    t_cls = {spec: t + t_aug for spec, t in timings["classifier"].items()}   # a step of an augmented arm
    t_gen = timings["generator"]
    first, widest = menu[0], menu[-1]
    parts = {"classical choice": 0.0, "network choice": 0.0}
    wider = 0.0   # the network choice's walk past its second entry: counted only where the widest is chosen
    held_out = len(train) / FOLDS   # each fit of a choice scores one fold: forward passes only
    score = lambda spec: held_out / cfg.batch_size * t_cls[spec] / 3   # noqa: E731 (a forward ~ 1/3 of a step)
    for k in choices:
        steps = cfg.steps_for(selection_rows(cfg, k, train))
        parts["classical choice"] += selection_fits(cfg.selection_survivors) * (steps * t_cls[first] + score(first))
        networks = [FOLDS * (steps * t_cls[spec] + score(spec)) for spec in menu[1:]]
        parts["network choice"] += sum(networks[:1])
        wider += sum(networks[1:])
    unit_low = unit_high = 0.0
    for k, seed in todo:
        low, high = _unit(train, cfg, k, seed, t_cls[first], t_cls[widest], t_gen, (kept or {}).get((k, seed), set()))
        unit_low, unit_high = unit_low + low, unit_high + high
    if cfg.unlabeled:   # one pool generator per seed, on the whole pool
        unit_low += len({seed for _, seed in todo} - set(fitted or ())) * cfg.gen_steps_for(len(train)) * t_gen
        unit_high = max(unit_high, unit_low)
    jobs = max(1, n_jobs)
    choices = (parts["classical choice"] + parts["network choice"]) / jobs
    waves = math.ceil(len(todo) / jobs) / max(1, len(todo))   # units run in waves of n_jobs
    return {"seconds": {"classical choice": parts["classical choice"] / jobs,
                        "network choice": parts["network choice"] / jobs,
                        "units": unit_low * waves, "units (widest network)": unit_high * waves},
            "total": choices + unit_low * waves, "total_widest": choices + wider / jobs + unit_high * waves,
            "units": len(todo), "n_jobs": jobs, "threads": threads, "step_seconds": timings,
            "networks": [getattr(spec, "__name__", str(spec)) for spec in (first, widest)]}


def _unit(train: ImageData, cfg: EvalConfig, k: int, seed: int, t_first: float, t_widest: float,
          t_gen: float, kept: set) -> tuple[float, float]:
    """Seconds of one unit, with the menu's first and its widest network, less the parts in `kept`."""
    plan = unit_plan(cfg, k, seed, train.num_classes)
    n = len(train) if not k else (sum(plan.counts) if isinstance(plan.counts, list) else k * train.num_classes)
    rows = n + (len(train) - n if cfg.unlabeled else 0)
    steps = cfg.steps_for(rows)
    trained = [a for a in cfg.arms if a not in kept and not (a.endswith(CONTROL) and a != cfg.primary + CONTROL
                                                             and PLAN[a][0] == "real" and PLAN[a][2] is None)]
    unlabeled = len(train) - n if cfg.unlabeled else 0
    passes = sum(step_passes(cfg, PLAN[arm][2], steps, unlabeled) for arm in trained)
    if cfg.unlabeled and cfg.classical == AUTO and "selection" not in kept:   # the unit's own choice, in its subset
        passes += selection_fits(cfg.selection_survivors) * cfg.steps_for(rows) / max(1, steps)
    gen_steps = cfg.gen_steps_for(n + unlabeled)   # unlabelled: the subset and the pseudo-labelled rows (at most all)
    pool = cfg.synthetic_per_class * train.num_classes + cfg.perturb_copies * n * sum(cfg.strength) / 2
    sampling = pool * cfg.sample_steps * t_gen / (3 * cfg.gen_batch_size)   # a forward row ~ 1/3 of a training row
    quality = (cfg.cas_steps if cfg.metrics else 0) * t_first
    common = (gen_steps * t_gen + sampling if "pools" not in kept else 0.0) + quality
    return common + passes * steps * t_first, common + passes * steps * t_widest


def step_passes(cfg: EvalConfig, learner: str | None, steps: int, unlabeled: int) -> float:
    """An arm's work per step, in supervised batches of `cfg.batch_size` rows through forward and backward (a
    forward alone counts 1/3): FixMatch's one batch holds the labelled rows and, per labelled row,
    `fixmatch_ratio` unlabelled images in two views, all through forward and backward; self-training fits
    `self_training_rounds` students of `steps` each, labelling the `unlabeled` images before each."""
    if learner == FIXMATCH:
        return 1.0 + 2 * cfg.fixmatch_ratio
    if learner == SELF_TRAINING:
        return cfg.self_training_rounds * (1.0 + unlabeled / (3 * cfg.batch_size * max(1, steps)))
    return 1.0


def after_choices(train: ImageData, cfg: EvalConfig, todo: list, networks: dict, n_jobs: int, threads: int | None,
                  timings: dict) -> dict:
    """The units' seconds once every regime has chosen its network (`networks`: {k: spec}), each regime's units at
    its own network's timed step (`timings`, an estimate's "step_seconds"): the forecast the first estimate could
    only bracket between the menu's first and widest networks."""
    seconds = {k: estimate(train, cfg, [u for u in todo if u[0] == k], (spec,), [], n_jobs, threads,
                           timings)["seconds"]["units"] for k, spec in networks.items() if any(u[0] == k for u in todo)}
    return {"units": sum(seconds.values()), "per_regime": seconds, "networks": networks}


def describe_after_choices(forecast: dict) -> str:
    chosen = ", ".join(f"{k or 'all'}/class {spec}" for k, spec in forecast["networks"].items())
    return f"with the networks chosen ({chosen}), the units are estimated at {forecast['units'] / 60:.1f} min"


def describe(est: dict) -> str:
    """One line for the terminal: the total and its parts, in minutes."""
    m = lambda s: f"{s / 60:.1f} min"   # noqa: E731
    parts = ", ".join(f"{name} {m(s)}" for name, s in est["seconds"].items() if s and "widest" not in name)
    wide = (f"; up to {m(est['total_widest'])} if every regime chooses {est['networks'][1]}"
            if est["total_widest"] > 1.05 * est["total"] else "")
    return (f"estimated cost on this machine: {m(est['total'])} ({est['units']} units over {est['n_jobs']} "
            f"process(es); {parts}{wide}), from {TIMED_STEPS} timed steps of each network and of the generator")
