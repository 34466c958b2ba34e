"""A unit's plan, in one place: its random streams, its subset of the training pool (and the classes the pool cannot
fill), and the rows its classifiers learn from. The run, the cache and the report all draw a unit's subset here, so a
resumed run finds exactly the units an uninterrupted one made (a long-tailed subset included)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import ImageData, longtail_counts
from .config import EvalConfig

UNIT_ENTROPY = 0x6469666661756700   # "diffaug": keeps these streams apart from any other use of SeedSequence
POOL_WORD = 0x706f6f6c   # "pool": the pool generator's stream of a seed, apart from every unit's


def pool_seed(seed: int) -> int:
    """The fit seed of seed `seed`'s unlabelled pool generator (shared by that seed's regimes)."""
    return int(np.random.SeedSequence([UNIT_ENTROPY, seed, POOL_WORD]).generate_state(1, dtype=np.uint64)[0]) >> 1


def unit_streams(k: int, seed: int, replicates: int) -> dict:
    """Every random stream of unit (k, seed), from numpy's SeedSequence([UNIT_ENTROPY, seed, k]): the subset draw,
    the generator fit, the synthetic pools, and per classifier replicate a (weights and batches, augmentation)
    pair of seeds. Units get independent streams: no unit's seed is another's plus one."""
    words = [int(w) >> 1 for w in   # < 2**63: what every torch seed takes
             np.random.SeedSequence([UNIT_ENTROPY, seed, k]).generate_state(3 + 2 * replicates, dtype=np.uint64)]
    return {"subset": words[0], "generator": words[1], "pools": words[2],
            "replicates": [(words[3 + 2 * r], words[4 + 2 * r]) for r in range(replicates)]}


def counts_for(cfg: EvalConfig, k: int, num_classes: int, seed: int) -> int | list[int]:
    """Images per class of regime k's subset: k of every class, or the long-tailed profile from k (class order drawn
    from `seed`)."""
    return longtail_counts(k, cfg.imbalance, num_classes, seed) if cfg.imbalance is not None else k


@dataclass(frozen=True)
class UnitPlan:
    """Unit (k, seed) of an evaluation: its streams and the images per class its subset draws."""

    k: int
    seed: int
    streams: dict
    counts: int | list | None   # None: the whole pool (k = 0)

    def subset(self, train: ImageData) -> ImageData:
        return train.subset(per_class=self.counts, seed=self.streams["subset"]) if self.k else train


def unit_plan(cfg: EvalConfig, k: int, seed: int, num_classes: int) -> UnitPlan:
    streams = unit_streams(k, seed, cfg.classifier_repeats)
    return UnitPlan(k, seed, streams, counts_for(cfg, k, num_classes, streams["subset"]) if k else None)


def selection_rows(cfg: EvalConfig, k: int, train: ImageData) -> int:
    """The rows a regime's classifiers learn from, which set their steps in the classical and network choices."""
    return (sum(counts_for(cfg, k, train.num_classes, 0)) if cfg.imbalance is not None else
            k * train.num_classes if k else len(train))


def short_classes(train: ImageData, cfg: EvalConfig) -> dict:
    """{regime: {class: [most images any of its subsets asks of it, images the pool holds]}} for every class
    the pool cannot fill: such a subset takes all the class holds, and the report says so."""
    out = {}
    for k in (k for k in cfg.per_class if k):
        found = {}
        for seed in cfg.seed_list:
            wanted = unit_plan(cfg, k, seed, train.num_classes).counts
            for name, (asked, held) in train.short_classes(wanted).items():
                found[name] = [max(asked, found.get(name, [0])[0]), held]
        if found:
            out[str(k)] = found
    return out
