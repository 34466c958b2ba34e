"""What decides an evaluation's numbers: the arms, the baseline, the budgets, and `EvalConfig`, which checks them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..checks import check_probability, check_strength, is_number, whole_number
from ..diffusion.sampling import SamplingSpec
from ..diffusion.trainer import TrainConfig
from ..diffusion.unet import PRESETS
from ..errors import DataError
from ..io import json_digest
from .policies import AUTO, Policy

MIXING = ("synthesize", "perturb", "classical+synthesize")   # arms that mix generated rows into each batch
CONTROL = "-control"
# Each mixing arm's dose control: the same batches (real rows, indices, augmentation draws) with the generated
# rows replaced by clean real rows of the subset. A gain that does not beat it is augmentation dose.
SELF_TRAINING = "self-training"   # with unlabelled images: classical + the pool's confident pseudo-labels
ARMS = ("real", "classical", *MIXING, *(arm + CONTROL for arm in MIXING), SELF_TRAINING)
DEFAULT_ARMS = ("real", "classical", *MIXING, "classical+synthesize" + CONTROL)
UNLABELED = ("rest",)   # where a regime's unlabelled images come from: the rest of the training pool
BASELINE = "classical"
PRIMARY_ORDER = ("classical+synthesize", "synthesize", "perturb")   # the default headline arm, fixed before any run
# What each arm trains on: (the pool its mixed rows come from, whether the classical augmentation applies).
PLAN = {"real": (None, False), "classical": (None, True), "synthesize": ("synthesize", False),
        "perturb": ("perturb", False), "classical+synthesize": ("synthesize", True),
        **{arm + CONTROL: ("real", arm.startswith("classical")) for arm in MIXING},
        SELF_TRAINING: ("pseudo", True)}   # pseudo-labelled rows are augmented like the real ones
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
    seed_start: int = 0                    # the units' seeds are seed_start .. seed_start + seeds - 1: a
                                           # confirmatory run takes seeds no earlier run used
    arms: tuple = DEFAULT_ARMS
    classical: str = AUTO                  # "auto": per regime, the best of policies.MENU by cross-validation in
                                           # the training pool; or a policy by name, e.g. "trivialaugment(m=0.5)"
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
    target_classes: bool = False           # draw each class's synthetic rows in proportion to the classical
                                           # classifier's error on that class's synthetic images plus the mean
                                           # error: more rows of the classes it confuses (uniform when it errs alike)
    preset: str = "tiny"
    gen_steps: int | None = None           # generator fit steps per unit; None: scaled with the subset (gen_steps_for)
    gen_batch_size: int = 128
    gen_augment: float = 0.0               # the generator fit's non-leaking augmentation probability (TrainConfig)
    metrics: bool = True                   # CAS, own-feature FID/KID, precision/recall, memorization
    cas_steps: int = 400
    reference_steps: int = 1000            # the fixed feature network for FID/KID/precision/recall (trained once)
    primary: str | None = None             # the diffusion arm whose gain is the headline, declared in advance;
                                           # None: the first of PRIMARY_ORDER among the arms run
    unlabeled: str | None = None           # "rest": the training pool, labels withheld, is unlabelled data; one
                                           # generator is fitted on it once (null class) and every unit fine-tunes
                                           # it on its labelled subset plus confident pseudo-labels (DPT); adds the
                                           # self-training arm, the fair opponent
    unlabeled_share: float = TrainConfig.unlabeled_share   # with unlabelled images: their share of each batch of
                                           # the fine-tuning in a unit (the pool generator's batches are all unlabelled)
    pseudo_label_threshold: float = 0.7    # with unlabelled images: the classical classifier's pseudo-labels of at
                                           # least this confidence train the self-training arm and the generator.
                                           # The classifier's label smoothing (0.1) caps its confidence near 0.91,
                                           # so 0.9 kept only ~1/3 of digits' unlabelled images; 0.7 keeps ~3/4, 99%
                                           # right, and gave the primary arm +1.15 [+0.06, +2.24] over 0.9 on a
                                           # validation split (benchmarks/results/sweep_digits_unlabeled.md)

    def __post_init__(self):
        per_class = (self.per_class,) if isinstance(self.per_class, (int, np.integer)) else tuple(self.per_class)
        self.per_class = tuple(dict.fromkeys(whole_number(k, "per_class", low=0) for k in per_class))   # no repeats
        if not self.per_class:
            raise DataError("per_class must name at least one regime (images per class; 0 = all)")
        if self.unlabeled is not None and self.unlabeled not in UNLABELED:
            raise DataError(f"unlabeled must be one of {UNLABELED} or None, got {self.unlabeled!r}")
        if self.unlabeled and tuple(self.arms) == DEFAULT_ARMS:
            self.arms = (*DEFAULT_ARMS, SELF_TRAINING)
        self.arms = tuple(dict.fromkeys(self.arms))
        if SELF_TRAINING in self.arms and not self.unlabeled:
            raise DataError(f"the {SELF_TRAINING!r} arm needs unlabelled images (unlabeled='rest')")
        if not (is_number(self.pseudo_label_threshold) and 0 < self.pseudo_label_threshold <= 1):
            raise DataError(f"pseudo_label_threshold must lie in (0, 1], got {self.pseudo_label_threshold!r}")
        whole_number(self.seed_start, "seed_start", low=0, high=2 ** 32)
        for name in ("seeds", "batch_size", "synthetic_per_class", "perturb_copies", "sample_steps", "cas_steps",
                     "reference_steps", "gen_batch_size", "classifier_steps", "gen_steps", "classifier_repeats"):
            if getattr(self, name) is not None:
                whole_number(getattr(self, name), name, low=1)
        SamplingSpec(self.sample_steps, guidance=self.guidance)   # checks both
        self.strength = check_strength(self.strength)
        if not isinstance(self.synthetic_share, (int, float)) or not 0.0 <= self.synthetic_share < 1.0:
            raise DataError(f"synthetic_share must lie in [0, 1), got {self.synthetic_share!r}")
        check_probability(self.gen_augment, "gen_augment")
        check_probability(self.unlabeled_share, "unlabeled_share")
        for name in ("target_classes", "augment_synthetic"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise DataError(f"{name} must be True or False, got {getattr(self, name)!r}")
        unknown = set(self.arms) - set(ARMS)
        if unknown:
            raise DataError(f"unknown arm(s) {sorted(unknown)}; choose from {ARMS}")
        if BASELINE not in self.arms:
            raise DataError(f"the arms must include {BASELINE!r}: every gain is measured against it")
        if self.classical != AUTO:
            Policy.parse(self.classical)
        if self.primary is None:
            self.primary = next((a for a in PRIMARY_ORDER if a in self.arms), None)
        if self.primary not in self.diffusion_arms:
            raise DataError(f"primary must be one of the diffusion arms run, {self.diffusion_arms}; got {self.primary!r}")
        if self.preset not in PRESETS:
            raise DataError(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        if self.filter_confidence is not None and not 0.0 < self.filter_confidence <= 1.0:
            raise DataError(f"filter_confidence must lie in (0, 1], got {self.filter_confidence}")

    @property
    def sampling(self) -> SamplingSpec:
        """How the synthetic pools are sampled: `sample_steps` of the default sampler at `guidance`."""
        return SamplingSpec(self.sample_steps, guidance=self.guidance)

    @property
    def diffusion_arms(self) -> tuple:
        return tuple(a for a in self.arms if a in MIXING)

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed_start, self.seed_start + self.seeds))

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
        cap = PRESETS[self.preset].steps
        return int(min(cap, max(GEN_STEPS_MIN, round(GEN_EPOCHS * n_real / self.gen_batch_size))))

    def key(self, **context) -> str:
        """Names a unit's cache file: every setting that changes a (k, seed) run and the `context` it ran in
        (training and test data, classifier, library source, given generator), but not the list of regimes,
        the seeds or the headline's arm (so widening an evaluation reuses the runs it has)."""
        unit = {k: v for k, v in asdict(self).items() if k not in ("per_class", "seeds", "seed_start", "primary")}
        return json_digest({**unit, **context}, length=12)


UNIT_ENTROPY = 0x6469666661756700   # "diffaug": keeps these streams apart from any other use of SeedSequence


def unit_streams(k: int, seed: int, replicates: int) -> dict:
    """Every random stream of unit (k, seed), from numpy's SeedSequence([UNIT_ENTROPY, seed, k]): the subset draw,
    the generator fit, the synthetic pools, and per classifier replicate a (weights and batches, augmentation)
    pair of seeds. Units get independent streams: no unit's seed is another's plus one."""
    words = [int(w) >> 1 for w in   # < 2**63: what every torch seed takes
             np.random.SeedSequence([UNIT_ENTROPY, seed, k]).generate_state(3 + 2 * replicates, dtype=np.uint64)]
    return {"subset": words[0], "generator": words[1], "pools": words[2],
            "replicates": [(words[3 + 2 * r], words[4 + 2 * r]) for r in range(replicates)]}
