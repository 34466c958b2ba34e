"""The evaluation protocol (benchmarks/README.md section 1): regimes x seeds x arms, fairly, with paired statistics.

One *unit* is a (real images per class k, seed) pair: draw the stratified (or long-tailed) subset, fit a
generator on that subset only, build the synthetic pools, then train the same classifier for every arm with the
same optimizer steps, batch size and seed (summary.py turns the units into the paired statistics). Units run in
parallel (joblib) and each finished unit is cached as JSON in `out_dir/runs/`, so an interrupted evaluation resumes
where it stopped; a unit under way keeps its finished parts there too (cache.UnitParts), so a resumed one starts at
its next arm, not at its start. What units share is named: the reference
feature network (metrics only) and, labelled-only, each regime's classical choice; with unlabelled images the
pool generator is fitted once per seed (shared by that seed's regimes) and the classical choice is made per unit.
"""

from __future__ import annotations

import datetime
import os
import shutil
import sys
import time
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
from ..fitting import fit
from ..generator import Generator
from ..loading import is_builtin, load_data
from ..workers import in_processes, sigterm_as_interrupt
from .cost import after_choices, describe as describe_cost, describe_after_choices, estimate as estimate_cost
from .export import check_exportable, export_recipe
from .cache import (UnitParts, cached, gather_units, load_json, machine, mixed_machines, parts_path, pool_path, store,
                    using_threads)
from .config import BASELINE, EvalConfig
from .summary import claims, opponents, summarize
from .choices import choice_path, classical_for, network_for
from .unitplan import pool_seed, short_classes
from ..classify.networks import check_factory, factory_key, resolve_classifier
from ..classify.policies import AUTO, MENU, Policy, rule
from .registry import check_preregistered, preregister, record_look
from .reference import reference_for
from .unit import run_unit

@dataclass
class EvalResult:
    config: dict
    units: list
    summary: dict = field(default_factory=dict)
    out_dir: str | None = None

    def table(self) -> str:
        from .report import markdown_table
        return markdown_table(self)


@sigterm_as_interrupt()   # the whole run: SIGTERM between two pools (the reference network) ends the idle workers too
def evaluate(data="digits", test=None, *, gen: Generator | None = None, out_dir=None, n_jobs: int | str = 1,
             device="auto", classifier: Callable | None = None, progress: bool = True, resume: bool = True,
             preregistered=None, looks=None, allow_mixed_machines: bool = False, export=None,
             **options) -> EvalResult:
    """Measure downstream gains of diffusion augmentation against the tuned classical augmentation.

    data: the training pool (ImageData, a built-in name or a path); test: the test split (default: the
    built-in's test split, else a stratified half of `data`, seed 0). `gen`: a generator used as-is in every
    unit (only fair if it saw nothing but training data); by default each unit fits its own on its subset.
    `classifier`: the downstream network of every arm: a name ('smallcnn', 'smallcnn(width=32)', 'resnet18'),
    'module:function', or a factory (in_channels, num_classes) -> nn.Module (functools.partial and closures too);
    built once before any work to check it. A factory whose identity cannot be written down (a closure over an
    object) runs uncached: no unit is read from or written to out_dir/runs.
    `n_jobs`: units run at once in separate processes, or "auto" (see `jobs_for`).
    `preregistered`: a file `plan_of` wrote before the run; the run must be the one it describes.
    `looks`: a ledger file of the runs that scored on this test split; this run is added and counted.
    `export`: a folder to write the primary arm's recipe to (export.py: the first unit's generator, pool and a
    SampleBank, recipe.py and pipeline.json), with its verdict; refused before any work if it exists.
    `allow_mixed_machines`: resume from cached units made on another machine (torch version, device, CPU or
    threads); refused by default, since the result would not be the one an uninterrupted run on either makes.
    `options` are `EvalConfig` fields. With `out_dir`, finished units are cached there and a report is written.
    """
    named = classifier if isinstance(classifier, str) or classifier is None else None   # a recipe can name it
    cfg, train, test, split_note, context, classifier = _prepare(data, test, gen, classifier, options)
    if not (n_jobs == "auto" or (isinstance(n_jobs, (int, np.integer)) and not isinstance(n_jobs, bool)
                                 and n_jobs >= 1)):
        raise DataError(f"n_jobs must be a whole number >= 1 or 'auto', got {n_jobs!r}")
    prereg = check_preregistered(preregistered, asdict(cfg), context) if preregistered is not None else None
    if export is not None:
        check_exportable(cfg, export)
    if gen is not None:
        check_leakage(gen, train, test)
    short = short_classes(train, cfg)
    for k, classes in short.items():
        warnings.warn(f"regime {k} per class: " + "; ".join(f"class {c!r} holds {held} training images, fewer than the "
                                                            f"{asked} asked, so its subsets take all {held}"
                                                            for c, (asked, held) in classes.items()), stacklevel=2)
    tag = cfg.key(**{k: v for k, v in context.items() if k not in ("data", "baseline", "baseline_rule")},
                  generator=gen.fingerprint if gen is not None else None)
    runs = Path(out_dir) / "runs" if out_dir is not None else None
    if context["classifier"] is None and runs is not None:
        warnings.warn("the classifier factory cannot be named for the cache (it closes over something that is not "
                      "a plain value), so this evaluation reads and writes no cached units", stacklevel=2)
        runs = None
    ranks = from_env()   # under torchrun each rank runs its share of the units; all of them then read every unit
    if ranks.active and runs is None:
        raise DataError("an evaluation spread over torchrun's ranks needs out_dir (the ranks share units through it)")
    device = rank_device(device, ranks)
    everything = [(k, seed) for k in cfg.per_class for seed in cfg.seed_list]
    todo, units = [], []
    for i, (k, seed) in enumerate(everything):
        if i % ranks.world != ranks.rank:
            continue
        unit = cached(runs, k, seed, tag, train, cfg) if resume else None
        (units.append(unit) if unit else todo.append((k, seed)))
    # from the whole run, not what is left of it: a resumed run splits the cores as the first one did
    n_jobs = jobs_for(max(len(everything), len(MENU)), device) if n_jobs == "auto" else n_jobs
    _note_shared_gpu(n_jobs, device)
    threads = max(1, (os.cpu_count() or 1) // max(1, n_jobs)) if n_jobs != 1 else None
    here = {**machine(resolve_device(device)), "threads": threads or torch.get_num_threads()}
    mixed = mixed_machines(units, here) if todo else []
    if mixed and not allow_mixed_machines:
        raise DataError(f"{len(mixed)} cached unit(s) in {runs} were made on another machine than this one ("
                        f"{mixed[0]}); finishing the run here would mix machines in one result. Resume on that "
                        "machine (the same n_jobs), write to another out_dir, or allow it (allow_mixed_machines=True, "
                        "CLI --allow-mixed-machines)")
    if mixed:
        warnings.warn(f"mixing machines, as allowed: {'; '.join(mixed[:3])}", stacklevel=2)
    parts = {(k, seed): parts_path(runs, k, seed, tag) for k, seed in todo} if runs is not None else {}
    # a fresh run reads no part an earlier one kept; a finished unit's parts are left by a run killed between
    # storing its JSON and removing them (this rank's units only: another rank's are under way)
    stale = [(u["k"], u["seed"]) for u in units] + ([] if resume else todo)
    for k, seed in stale if runs is not None else ():
        shutil.rmtree(parts_path(runs, k, seed, tag), ignore_errors=True)
    timings = None   # the step timings of the estimate, for the forecast once the networks are chosen
    if progress and todo and ranks.main:   # what the run will cost, before it starts (the user may stop it here)
        choices = [k for k in cfg.per_class if cfg.classical == AUTO and not cfg.unlabeled and
                   load_json(choice_path(runs, "classical", k, tag)) is None]
        kept = {unit: UnitParts.finished(folder, here) for unit, folder in parts.items()}
        fitted = {seed for seed in cfg.seed_list if runs is not None and pool_path(runs, seed, tag).exists()}
        est = estimate_cost(train, cfg, todo, cfg.classifier_menu if context["menu"] else (classifier,), choices,
                            n_jobs, threads, kept=kept, fitted=fitted)
        print(f"diffaug: {describe_cost(est)}", file=sys.stderr, flush=True)
        timings = est["step_seconds"]
    plan = claims(cfg)
    if not plan["possible"] and progress:
        warnings.warn(f"{cfg.seeds} seeds cannot support a claim in a headline family of {plan['family']} "
                      f"comparisons (the sign-flip test needs at least {plan['seeds_needed']}): the report will make "
                      "none", stacklevel=2)
    # with unlabelled images the labels beyond each unit's subset are withheld: each unit chooses within its own
    selection = {str(k): classical_for(k, train, cfg, tag, runs, ranks, device, classifier, n_jobs, threads,
                                       progress)
                 for k in cfg.per_class} if cfg.classical == AUTO and not cfg.unlabeled else {}   # str keys: JSON's
    policies = {int(k): Policy.parse(sel["winner"]) for k, sel in selection.items()}
    networks = {str(k): network_for(k, train, cfg, selection[str(k)], tag, runs, ranks, device, n_jobs, threads,
                                    progress)
                for k in cfg.per_class} if context["menu"] else {}
    factories = {int(k): resolve_classifier(choice["winner"]) for k, choice in networks.items()}
    if timings is not None and networks:
        forecast = after_choices(train, cfg, todo, {int(k): c["winner"] for k, c in networks.items()}, n_jobs,
                                 threads, timings)
        print(f"diffaug: {describe_after_choices(forecast)}", file=sys.stderr, flush=True)
    reference = reference_for(train, test, cfg, device, runs / f"reference-{tag}.safetensors" if runs else None)
    # every seed's pool generator (the finished units' from the cache): the config is the same for a resumed run
    pool_seeds = cfg.seed_list if cfg.unlabeled and gen is None else []
    pool_gens = _pool_generators(train, cfg, tag, runs, ranks, device, progress, pool_seeds, n_jobs, threads)
    for unit in _run_all(todo, train, test, cfg, gen, device, classifier, n_jobs, threads, progress, reference,
                         policies, pool_gens, factories, parts):
        unit["classifier"] = networks[str(unit["k"])]["winner"] if networks else context["classifier"]
        if runs is not None:
            store(runs, unit, tag)
            shutil.rmtree(parts[unit["k"], unit["seed"]], ignore_errors=True)   # the unit's JSON holds them all now
        units.append(unit)
    if ranks.active:
        units = gather_units(runs, everything, tag, train, cfg)
    units.sort(key=lambda u: (u["k"], u["seed"]))
    config = {**asdict(cfg), "baseline": BASELINE, "data": split_note, "generator_given": gen is not None,
              "classifier": context["classifier"], "reference_network": reference.info,
              "device": str(resolve_device(device)), "cache_key": tag, "source": context["source"],
              "classical_selection": selection, "baseline_rule": context["baseline_rule"],
              "classifier_selection": networks, "claims": plan, "mixed_machines": mixed,
              "machine": here,
              "pool_generators": {str(seed): {"fingerprint": g.fingerprint, "steps": g.config["train"]["steps"],
                                              "seconds": g.config["train"]["seconds"]}
                                  for seed, g in pool_gens.items()},
              "preregistration": prereg, "opponents": opponents(cfg), "short_classes": short,
              "headline": f"primary arm declared in advance: {cfg.primary}, against each of {opponents(cfg)} with "
                          "Holm's correction over all of those comparisons in every regime; all diffusion arms also "
                          "compared with the baseline, Holm-corrected"}
    if looks is not None and ranks.main:
        config["looks_at_test_split"] = record_look(looks, context["test"], {
            "date": datetime.date.today().isoformat(), "out": str(out_dir), "seeds": cfg.seed_list,
            "per_class": list(cfg.per_class), "preregistered": prereg["file"] if prereg else None})
    result = EvalResult(config=config, units=units, summary=summarize(units, cfg, len(test), test.labels.numpy()),
                        out_dir=str(out_dir) if out_dir else None)
    if out_dir is not None and ranks.main:
        from .report import write_report
        write_report(result, train, gen)
    if export is not None and ranks.main:
        network = (networks[str(cfg.per_class[0])]["winner"] if networks else
                   cfg.classifier_menu[0] if named is None and not context["menu"] else named)
        export_recipe(export, result, cfg, train, gen, device, network)
    return result


def plan_of(path, data="digits", test=None, *, gen: Generator | None = None, classifier: Callable | None = None,
            overwrite: bool = False, **options) -> dict:
    """Preregister an evaluation: write to `path` everything that will decide its numbers (the EvalConfig with
    every default resolved, the baseline rule, data and test fingerprints, the code's source hash and git
    commit), to be committed before `evaluate(..., preregistered=path)` runs it. Takes evaluate's arguments;
    those that only say how to run it (out_dir, n_jobs, device, progress, resume, looks) are not part of a plan."""
    options = {k: v for k, v in options.items() if k not in ("out_dir", "n_jobs", "device", "progress", "resume",
                                                             "looks")}
    cfg, _, _, _, context, _ = _prepare(data, test, gen, classifier, options)
    return preregister(path, asdict(cfg), context, overwrite=overwrite)


def _prepare(data, test, gen, classifier, options):
    """The checked config, the splits and the context every run of it shares."""
    unknown = set(options) - set(EvalConfig.__dataclass_fields__)
    if unknown:
        raise DataError(f"unknown evaluation option(s) {sorted(unknown)}; see diffaug.evaluation.EvalConfig")
    cfg = EvalConfig(**options)
    train, test, split_note = _splits(data, test)
    if gen is not None and (gen.image_size != train.size or gen.channels != train.channels):
        raise DataError(f"the generator makes {gen.channels}x{gen.image_size} images, the data is "
                        f"{train.channels}x{train.size}")
    # no classifier given: the menu's first network, or with a menu of several, each regime's choice from it
    menu = classifier is None and len(cfg.classifier_menu) > 1   # EvalConfig keeps one where nothing is chosen
    factory = resolve_classifier(classifier if classifier is not None else cfg.classifier_menu[0])
    for built in ([resolve_classifier(spec) for spec in cfg.classifier_menu] if menu else [factory]):
        check_factory(built, train.channels, train.num_classes)
    context = {"data": split_note, "train": train.fingerprint(), "test": test.fingerprint(),
               "classifier": (f"chosen per regime from {', '.join(cfg.classifier_menu)}" if menu else
                              factory_key(factory)),
               "menu": menu, "diffaug": __version__, "source": source_digest(),
               "baseline": BASELINE, "baseline_rule": _baseline_rule(cfg)}
    return cfg, train, test, split_note, context, factory


def _baseline_rule(cfg: EvalConfig) -> str:
    """How the classical baseline is chosen: fixed, per regime within the training pool, or with unlabelled images
    per unit within its labelled subset (labels withheld)."""
    if cfg.classical != AUTO:
        return f"fixed: {Policy.parse(cfg.classical).label}"
    if cfg.unlabeled:
        return "per unit, " + rule("each unit's labelled subset", 0, survivors=cfg.selection_survivors)
    return "per regime, " + rule("the training pool", imbalance=cfg.imbalance, survivors=cfg.selection_survivors)


def _pool_generators(train: ImageData, cfg: EvalConfig, tag: str, runs, ranks, device, progress, seeds: list,
                     n_jobs: int, threads) -> dict:
    """{seed: its pool generator}: fitted in `n_jobs` processes at once where there are several (each with
    `threads` threads, as the units are), one after the other under torchrun (rank 0 fits, the others wait)."""
    if n_jobs > 1 and len(seeds) > 1 and not ranks.active:   # a bar over the fits: minutes of work before any unit
        from joblib import delayed
        from tqdm.auto import tqdm
        jobs = (delayed(_pool_generator)(train, cfg, tag, runs, ranks, device, False, seed, threads) for seed in seeds)
        fits = list(tqdm(in_processes(min(n_jobs, len(seeds)), jobs), total=len(seeds),
                         desc="pool generators", unit="fit", disable=not progress))
    else:
        fits = [_pool_generator(train, cfg, tag, runs, ranks, device, progress, seed) for seed in seeds]
    return dict(zip(seeds, fits))


def _pool_generator(train: ImageData, cfg: EvalConfig, tag: str, runs, ranks, device, progress,
                    seed: int, threads: int | None = None) -> Generator:
    """Seed `seed`'s unlabelled generator: fitted on the training pool's images under the null class
    (unlabeled_share=1: no labelled row is drawn, the labels are never read), cached in runs/; every unit of that
    seed fine-tunes it on its labelled subset. One per seed, so its variability enters the intervals over seeds.
    Never sees a test image."""
    if threads:
        torch.set_num_threads(threads)
    path = pool_path(runs, seed, tag) if runs is not None else None
    while path is not None and not path.exists() and ranks.active and not ranks.main:
        time.sleep(1.0)
    if path is not None and path.exists():
        return Generator.load(path, device=resolve_device(device))
    pool_gen = fit(train, cfg.preset, cfg.gen_steps_for(len(train)), seed=pool_seed(seed), device=device,
                   progress=progress, batch_size=cfg.gen_batch_size, distributed=False, unlabeled=train.images,
                   unlabeled_share=1.0)
    if path is not None:
        pool_gen.save(path, overwrite=True)
    return pool_gen


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


def _run_all(todo, train, test, cfg, gen, device, classifier, n_jobs, threads, progress, reference, policies,
             pool_gens, factories, parts):
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="evaluate", unit="run", disable=not progress or not todo)
    if n_jobs == 1 or len(todo) <= 1:
        with using_threads(threads):   # in this process, with the threads a worker would have had
            for k, seed in todo:
                bar.set_postfix(k=k, seed=seed)
                yield run_unit(train, test, k, seed, cfg, gen, device, factories.get(k, classifier),
                               reference=reference, classical=policies.get(k), pool_gen=pool_gens.get(seed),
                               parts=parts.get((k, seed)))
                bar.update(1)
    else:
        from joblib import delayed
        pool_gens = {seed: g.to("cpu") for seed, g in pool_gens.items()}
        jobs = (delayed(run_unit)(train, test, k, seed, cfg, gen, device, factories.get(k, classifier), threads,
                                  reference.to("cpu"),
                                  policies.get(k), pool_gens.get(seed), parts.get((k, seed))) for k, seed in todo)
        for unit in in_processes(n_jobs, jobs, ordered=False):
            yield unit
            bar.update(1)
    bar.close()
