"""What decides an evaluation's numbers: the arms, the baseline, the budgets, and `EvalConfig`, which checks them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..checks import check_probability, check_strength, is_number, whole_number
from ..data import longtail_counts
from ..diffusion.sampling import SamplingSpec
from ..diffusion.trainer import TrainConfig
from ..diffusion.unet import PRESETS
from ..errors import DataError
from ..io import json_digest
from ..classify.networks import resolve_classifier
from ..classify.policies import AUTO, Policy
from ..classify.pseudo import THRESHOLD
from ..classify.semi import FixMatch
from ..classify.training import steps_for

SELF_TRAINING, FIXMATCH = "self-training", "fixmatch"   # with unlabelled images: the semi-supervised opponents
LEARNERS = (SELF_TRAINING, FIXMATCH)
# With long-tailed classes (imbalance=R): the opponents a practitioner runs, each with the tuned classical policy:
# class-balanced re-sampling, and the logit-adjusted loss (Menon et al., ICLR 2021; tau 1 is balanced softmax).
RESAMPLE, LOGIT_ADJUST = "resample", "logit-adjust"
LONGTAIL_LEARNERS = (RESAMPLE, LOGIT_ADJUST)
REBALANCE = "rebalance"   # the pool of synthetic rows that fills each short class towards the head's count
# Arms that mix generated rows into each batch; "LEARNER+synthesize" stacks the generator on a semi-supervised
# learner (DPT, You et al. 2023): the learner's own rows and loss, synthetic rows in the labelled part of the batch.
# "...+rebalance" draws each batch from the subset and the rebalancing pool as one data set (real rows at their
# natural rate, synthetic rows filling each class's gap to the head), with the classical policy; stacked on the
# logit-adjusted loss, whose prior is then the batches' (filled) label distribution.
MIXING = ("synthesize", "perturb", "classical+synthesize", "classical+perturb", "classical+mix",
          *(f"{a}+synthesize" for a in LEARNERS),
          f"classical+{REBALANCE}", f"{LOGIT_ADJUST}+{REBALANCE}")
CONTROL = "-control"
# Each mixing arm's dose control: the same batches (real rows, indices, augmentation draws) with the generated
# rows replaced by clean real rows of the subset. A gain that does not beat it is augmentation dose. A rebalancing
# arm's control swaps each generated row for a real image of the same class: it is class-balanced over-sampling
# with exactly the arm's batches.
ARMS = ("real", "classical", *MIXING, *(arm + CONTROL for arm in MIXING), *LEARNERS, *LONGTAIL_LEARNERS)
# Labelled images only: each of the generator's two modes beside the classical policy a user already runs, each with
# its dose control. Synthesize and perturb alone (no classical policy; still arms) lost to the tuned classical arm in
# every run so far (digits and Fashion-MNIST, 10 per class: docs/measured.md), so they answer no question a user has.
DEFAULT_ARMS = ("real", "classical", "classical+synthesize", "classical+synthesize" + CONTROL, "classical+perturb",
                "classical+perturb" + CONTROL)
# With unlabelled images: both opponents, the stack on each, and the primary stack's dose control (self-training with
# its labelled rows at the synthetic share). FixMatch's stack needs no control arm of its own: FixMatch augments every
# labelled row alike, so "fixmatch+synthesize-control" draws exactly the batches of "fixmatch" (tests/test_opponents.py
# checks it).
UNLABELED_ARMS = ("real", "classical", "classical+synthesize", "classical+synthesize" + CONTROL, *LEARNERS,
                  *(f"{a}+synthesize" for a in LEARNERS), f"{SELF_TRAINING}+synthesize" + CONTROL)
LONGTAIL_ARMS = ("real", "classical", *LONGTAIL_LEARNERS, f"classical+{REBALANCE}", f"classical+{REBALANCE}" + CONTROL,
                 f"{LOGIT_ADJUST}+{REBALANCE}")
UNLABELED = ("rest",)   # where a regime's unlabelled images come from: the rest of the training pool
BASELINE = "classical"
# the default headline arm, fixed before any run: the first of these among the arms run
PRIMARY_ORDER = ("classical+synthesize", "classical+perturb", "classical+mix", "synthesize", "perturb")
# With unlabelled images: the generator stacked on self-training. Preregistered on digits (seeds 810-814,
# benchmarks/results/gains_digits_unlabeled_budget): +0.70 [+0.49, +0.91] points over self-training, the strongest
# opponent, at 10 labels per class (Holm p 0.006); the stack on FixMatch, the primary before, did not beat
# self-training on seeds 700-704 (-0.26 [-1.43, +0.91]). Without it among the arms: the FixMatch stack.
UNLABELED_PRIMARY = f"{SELF_TRAINING}+synthesize"
LONGTAIL_PRIMARY = f"classical+{REBALANCE}"   # with long-tailed classes: chosen on a validation split before any
                                              # test run (benchmarks/longtail.py, results/longtail_digits.md)
# What each arm trains on: (the pool its mixed rows come from, whether the classical augmentation applies, the
# learner: None for the supervised loop).
PLAN = {"real": (None, False, None), "classical": (None, True, None), "synthesize": ("synthesize", False, None),
        "perturb": ("perturb", False, None), "classical+synthesize": ("synthesize", True, None),
        "classical+perturb": ("perturb", True, None),   # perturbed copies beside the classical policy a user runs
        "classical+mix": ("mix", True, None),   # both, half and half (DiffusionAugment(mode="mix")'s default mix 0.5)
        **{a: (None, True, a) for a in LEARNERS}, **{f"{a}+synthesize": ("synthesize", True, a) for a in LEARNERS},
        **{a: (None, True, a) for a in LONGTAIL_LEARNERS},
        f"classical+{REBALANCE}": (REBALANCE, True, None),
        f"{LOGIT_ADJUST}+{REBALANCE}": (REBALANCE, True, LOGIT_ADJUST)}
PLAN.update({arm + CONTROL: ("real" if PLAN[arm][0] != REBALANCE else REBALANCE + "-real", *PLAN[arm][1:])
             for arm in MIXING})
# Generator fit steps when not given: GEN_EPOCHS passes over the real subset, at least GEN_STEPS_MIN and at most the
# preset's default. Chosen on a validation split of digits (never the test split): on 100 images, 250 steps
# memorized 1.9% of samples, 500 steps 34%, the old fixed 2000 steps 97% (benchmarks/gen_budget.py); on 500
# images, 625 steps (160 epochs) gave a better own-feature FID and recall than 1250 at the same CAS, in half
# the time (benchmarks/knobs.py).
GEN_EPOCHS, GEN_STEPS_MIN = 160, 250
# With unlabelled images, the classifier budget (a multiple of steps_for's steps, shared by every arm of a unit, so
# chosen for the strongest opponent at its best): on a digits validation split (10 labelled per class, seeds
# 500-504; benchmarks/results/opponents_budget_digits.md) self-training scored 96.13 / 96.51 / 96.21% at budgets
# 1 / 2 / 4, FixMatch 96.28 / 95.61 / 95.91%: the strongest learner, self-training, is at its best at 2 (FixMatch's own
# best, 1, is 0.67 points above its 2, within the seeds' noise: [-0.22, +1.56])
UNLABELED_BUDGET = 2.0
# The downstream networks every regime chooses among (labelled images only), cheapest first: the one the tuned
# classical arm does best with on the regime's cross-validation folds trains every arm. A gain over an under-sized
# classifier is not one a user sees: on digits with 10 per class the classical arm rose from 93.49% at width 16 to
# 94.83% at width 32 on a validation split, and the generator's gain fell from +1.90 to +1.15 points
# (benchmarks/results/sweep_digits_classifier_width.md).
CLASSIFIER_MENU = ("smallcnn", "smallcnn(width=32)", "smallcnn(width=64)")


@dataclass
class EvalConfig:
    """Everything that decides an evaluation's numbers; recorded in results.json."""

    per_class: tuple = (10, 50, 100)       # real images per class; 0 means all
    seeds: int = 10                        # with classifier_repeats 1: at the cost of 5 seeds of 2 classifiers plus
                                           # five generator fits (~1.2x on digits, estimated), the variance of a
                                           # mean gain falls from (s^2 + c^2 / 2) / 5 to (s^2 + c^2) / 10, s the
                                           # spread between units and c between classifiers (measured alike: see
                                           # classifier_repeats)
    seed_start: int = 0                    # the units' seeds are seed_start .. seed_start + seeds - 1: a
                                           # confirmatory run takes seeds no earlier run used
    arms: tuple = DEFAULT_ARMS
    classical: str = AUTO                  # "auto": per regime, the best of policies.MENU by cross-validation in
                                           # the training pool; or a policy by name, e.g. "trivialaugment(m=0.5)"
    hflip: bool = False
    classifier_steps: int | None = None    # optimizer steps, identical for every arm; None: scaled with the
                                           # real subset (steps_for), so "all" is not trained for 2 epochs
    classifier_menu: tuple = CLASSIFIER_MENU   # when evaluate is given no classifier and chooses the classical
                                           # policy (classical "auto", labelled images): each regime's downstream
                                           # network, chosen by the same cross-validation with the regime's policy
                                           # (policies.select_classifier); otherwise, or with one entry, the first
    classifier_budget: float | None = None  # without classifier_steps: every arm trains for this many times
                                           # steps_for's steps (the same for every arm of a unit); None: the
                                           # regime's own, UNLABELED_BUDGET with unlabelled images, else 1
    batch_size: int = 128
    synthetic_share: float = 0.5           # share of each batch drawn from the synthetic pool (diffusion arms)
    augment_synthetic: bool = False        # classical+synthesize: the classical augmentation on the synthetic rows
                                           # too; False: on the real rows only. Cross-validated within the digits
                                           # training pool: +0.61 points over classical at 50/class, CI [+0.20,
                                           # +1.02], against -0.42 when it augments every row; +1.00 vs +0.42 at
                                           # 10/class (benchmarks/results/mixing_digits.md)
    classifier_repeats: int = 1            # classifiers trained per arm and unit (replicate r: same init and
                                           # batches in every arm); a unit's accuracy is their mean. One
                                           # classifier's paired gain moved 0.6-1.3 points between replicates, as
                                           # much as between units (benchmarks/results/mixing_digits.md): seeds,
                                           # which average both, buy more than repeats
    synthetic_per_class: int = 500
    perturb_copies: int = 4
    strength: tuple = (0.3, 0.6)           # perturb: copies spread evenly over this range
    guidance: float = 1.0                  # no classifier-free guidance: on a digits validation split, guidance 1
                                           # gave half the own-feature FID and twice the recall of guidance 2 at the
                                           # same CAS (benchmarks/results/knobs_digits.md), and one network call
                                           # per step
    sample_steps: int = 10                 # DPM-Solver++(2M), Karras spacing: 10 steps match 20 and 250-step ancestral
                                           # in own-feature FID (benchmarks/results/sampler_steps_digits.md)
    filter_confidence: float | None = None  # keep synthetic images a real-trained classifier gives >= this
    target_classes: bool = False           # draw each class's synthetic rows in proportion to the classical
                                           # classifier's error on that class's synthetic images plus the mean
                                           # error: more rows of the classes it confuses (uniform when it errs alike)
    preset: str = "tiny"
    gen_steps: int | None = None           # generator fit steps per unit; None: scaled with the subset (gen_steps_for)
    gen_epochs: float | None = None        # or the fit budget in passes over the images it fits, uncapped, so one
                                           # setting serves every regime (memorization sets in at a step count that
                                           # grows with the data: Favero et al. 2025); not both
    gen_batch_size: int = 128
    gen_augment: float = 0.0               # the generator fit's non-leaking augmentation probability (TrainConfig)
    metrics: bool = True                   # CAS, own-feature FID/KID, precision/recall, memorization
    cas_steps: int = 400
    reference_steps: int = 1000            # the fixed feature network for FID/KID/precision/recall (trained once)
    primary: str | None = None             # the diffusion arm whose gain is the headline, declared in advance;
                                           # None: the first of PRIMARY_ORDER among the arms run (with unlabelled
                                           # images: UNLABELED_PRIMARY, the stack on self-training)
    unlabeled: str | None = None           # "rest": the training pool, labels withheld, is unlabelled data; one
                                           # generator per seed is fitted on it (null class) and each unit fine-tunes
                                           # it on its labelled subset plus the labeller's confident pseudo-labels
                                           # (DPT); the arms become UNLABELED_ARMS, with self-training and FixMatch,
                                           # the opponents, and every choice that needs labels (the classical
                                           # policy) is made within the unit's labelled subset
    selection_survivors: int | None = 4    # the classical choice by successive halving (each regime's, or with
                                           # unlabelled images each unit's): every menu entry on one fold, these
                                           # best on the other two (16 fits, not 24). The full choice's winner was
                                           # kept in 10 of 10 units of the 2026-12-01 digits run (3 survivors: 9)
                                           # and in 4 of 4 regimes of benchmarks/results/choice_cuts_*.md; None: full
    unlabeled_share: float = TrainConfig.unlabeled_share   # with unlabelled images: their share of each batch of
                                           # the fine-tuning in a unit (the pool generator's batches are all unlabelled)
    pseudo_label_threshold: float = THRESHOLD   # with unlabelled images: the generator's labelled rows are the
                                           # labeller's pseudo-labels of at least this confidence (classify/pseudo.py)
    # The opponents' own knobs, each chosen by that learner's own validation accuracy (never a diffusion arm's):
    # benchmarks/opponents.py on a digits validation split, 10 labelled per class, seeds 500-504
    # (benchmarks/results/opponents_digits.md)
    self_training_threshold: float = 0.5   # 96.13% of {0.5, 0.7, 0.9} x {1, 2} rounds; 0.7: 95.54
    self_training_rounds: int = 1          # a second round of relabelling with the student: 95.69
    fixmatch_threshold: float = 0.8        # 96.28% of {0.8, 0.95} x ratio {1, 2}; 0.95 (the paper's): 96.06
    fixmatch_ratio: int = 2                # unlabelled images per labelled one in each step; the paper's 7 costs
                                           # 15x a supervised step on a CPU and was not tried
    fixmatch_weight: float = FixMatch.weight
    imbalance: float | None = None         # long-tailed classes: each subset draws per_class images of its head class
                                           # down to per_class / imbalance of its tail, exponentially (CIFAR-10-LT's
                                           # profile, data.longtail_counts), the class order drawn per seed; the test
                                           # split stays as it is; the headline is balanced accuracy
    # The long-tail arms' knobs, each chosen by that arm's own validation balanced accuracy (benchmarks/longtail.py
    # on a digits validation split, 50 head images, imbalance 10, seeds 500-504; results/longtail_digits.md)
    logit_tau: float = 1.0                 # the logit-adjusted loss's tau (1: balanced softmax): 95.24% of
                                           # {0.5, 1, 1.5, 2}; 0.5: 94.71, 2: 86.87
    rebalance_fill: float = 1.0            # the share of each class's gap to the head that synthetic rows fill:
                                           # 95.82% at 1, 95.50 at 0.5 (classical+rebalance; its control takes it too)
    rebalance_tau: float = 1.5             # the logit-adjust+rebalance stack's own tau: 95.66% at fill 1 (tau 1:
                                           # 95.60); with a whole fill the batches' prior is near uniform, so it
                                           # matters little

    def __post_init__(self):
        per_class = (self.per_class,) if isinstance(self.per_class, (int, np.integer)) else tuple(self.per_class)
        self.per_class = tuple(dict.fromkeys(whole_number(k, "per_class", low=0) for k in per_class))   # no repeats
        if not self.per_class:
            raise DataError("per_class must name at least one regime (images per class; 0 = all)")
        if self.unlabeled is not None and self.unlabeled not in UNLABELED:
            raise DataError(f"unlabeled must be one of {UNLABELED} or None, got {self.unlabeled!r}")
        if self.imbalance is not None:
            if not is_number(self.imbalance) or not 1 <= self.imbalance < float("inf"):
                raise DataError(f"imbalance must be a number >= 1 (head images / tail images), got {self.imbalance!r}")
            if self.unlabeled:
                raise DataError("imbalance and unlabeled are separate regimes; run them one at a time")
            if 0 in self.per_class:
                raise DataError("imbalance needs per_class to name the head class's images (0, all, has no head)")
            for k in self.per_class:
                longtail_counts(k, self.imbalance, 2)   # a tail that rounds to no image is refused here
        if self.classifier_budget is None:
            self.classifier_budget = UNLABELED_BUDGET if self.unlabeled else 1.0
        if not (is_number(self.classifier_budget) and 0 < self.classifier_budget < float("inf")):
            raise DataError(f"classifier_budget must be a positive number, got {self.classifier_budget!r}")
        if self.unlabeled and tuple(self.arms) == DEFAULT_ARMS:
            self.arms = UNLABELED_ARMS
        if self.imbalance is not None and tuple(self.arms) == DEFAULT_ARMS:
            self.arms = LONGTAIL_ARMS
        self.arms = tuple(dict.fromkeys(self.arms))
        menu = (self.classifier_menu,) if isinstance(self.classifier_menu, str) else tuple(self.classifier_menu)
        if not menu or not all(isinstance(spec, str) for spec in menu):
            raise DataError(f"classifier_menu must name one or more networks (e.g. 'smallcnn(width=32)'), got "
                            f"{self.classifier_menu!r}")
        for spec in menu:
            try:
                resolve_classifier(spec)   # a name that builds nothing fails here, before any work
            except DataError as e:
                raise DataError(f"classifier_menu: {e}") from None
        menu = tuple(dict.fromkeys(menu))
        # the network is chosen with the regime's classical policy, where the evaluation chooses that (labelled images,
        # classical "auto"); with unlabelled images the choice is per unit, within its labelled subset: no network menu
        fixed = ("unlabelled images" if self.unlabeled else
                 f"a fixed classical policy ({self.classical})" if self.classical != AUTO else None)
        if fixed and len(menu) > 1:
            if menu != CLASSIFIER_MENU:
                raise DataError(f"with {fixed} no downstream network is chosen: give classifier_menu one network "
                                "(or classical='auto', labelled images only, to choose among several)")
            menu = menu[:1]
        self.classifier_menu = menu
        semi = [a for a in self.arms if a in PLAN and PLAN[a][2] in LEARNERS]
        if semi and not self.unlabeled:
            raise DataError(f"the {', '.join(map(repr, semi))} arm(s) need unlabelled images (unlabeled='rest')")
        longtail = [a for a in self.arms if a in PLAN and (PLAN[a][2] in LONGTAIL_LEARNERS or
                                                           PLAN[a][0] in (REBALANCE, REBALANCE + "-real"))]
        if longtail and self.imbalance is None:
            raise DataError(f"the {', '.join(map(repr, longtail))} arm(s) are for long-tailed classes (imbalance=R)")
        for name in ("logit_tau", "rebalance_tau"):
            if not (is_number(getattr(self, name)) and 0 <= getattr(self, name) < float("inf")):
                raise DataError(f"{name} must be a number >= 0, got {getattr(self, name)!r}")
        if not (is_number(self.rebalance_fill) and 0 < self.rebalance_fill <= 1):
            raise DataError(f"rebalance_fill must lie in (0, 1], got {self.rebalance_fill!r}")
        for name in ("pseudo_label_threshold", "self_training_threshold", "fixmatch_threshold"):
            if not (is_number(getattr(self, name)) and 0 < getattr(self, name) <= 1):
                raise DataError(f"{name} must lie in (0, 1], got {getattr(self, name)!r}")
        if not (is_number(self.fixmatch_weight) and self.fixmatch_weight >= 0):
            raise DataError(f"fixmatch_weight must be a number >= 0, got {self.fixmatch_weight!r}")
        whole_number(self.seed_start, "seed_start", low=0, high=2 ** 32)
        for name in ("seeds", "batch_size", "synthetic_per_class", "perturb_copies", "sample_steps", "cas_steps",
                     "reference_steps", "gen_batch_size", "classifier_steps", "gen_steps", "classifier_repeats",
                     "self_training_rounds", "fixmatch_ratio", "selection_survivors"):
            if getattr(self, name) is not None:
                whole_number(getattr(self, name), name, low=1)
        SamplingSpec(self.sample_steps, guidance=self.guidance)   # checks both
        self.strength = check_strength(self.strength)
        if not isinstance(self.synthetic_share, (int, float)) or not 0.0 <= self.synthetic_share < 1.0:
            raise DataError(f"synthetic_share must lie in [0, 1), got {self.synthetic_share!r}")
        check_probability(self.gen_augment, "gen_augment")
        if self.gen_epochs is not None:
            if self.gen_steps is not None:
                raise DataError("give the generator's fit budget as gen_steps or gen_epochs, not both")
            if not (is_number(self.gen_epochs) and 0 < self.gen_epochs < float("inf")):
                raise DataError(f"gen_epochs must be a positive number, got {self.gen_epochs!r}")
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
            order = ((UNLABELED_PRIMARY, f"{FIXMATCH}+synthesize", *PRIMARY_ORDER) if self.unlabeled else
                     PRIMARY_ORDER)
            order = (LONGTAIL_PRIMARY, f"{LOGIT_ADJUST}+{REBALANCE}", *order) if self.imbalance else order
            self.primary = next((a for a in order if a in self.arms), None)
        if self.primary not in self.diffusion_arms:
            raise DataError(f"primary must be one of the diffusion arms run, {self.diffusion_arms}; "
                            f"got {self.primary!r}")
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
    def metric(self) -> str:
        """What the summaries compare: balanced accuracy (mean per-class recall) with long-tailed classes, where
        plain accuracy would reward a classifier that ignores the tail; else accuracy."""
        return "balanced_accuracy" if self.imbalance is not None else "accuracy"

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed_start, self.seed_start + self.seeds))

    def steps_for(self, n_rows: int) -> int:
        """Classifier optimizer steps for an arm that learns from n_rows images (with unlabelled images: the labelled
        and the unlabelled ones, the same for every arm of a unit): `classifier_steps` if set, else
        `classifier_budget` x classify.training.steps_for (STEPS_PER_EPOCHS epochs at this batch size, clipped)."""
        if self.classifier_steps is not None:
            return self.classifier_steps
        return int(round(self.classifier_budget * steps_for(n_rows, self.batch_size)))

    @property
    def fixmatch(self) -> FixMatch:
        return FixMatch(self.fixmatch_threshold, self.fixmatch_ratio, self.fixmatch_weight)

    @property
    def labeller(self) -> str:
        """Whose pseudo-labels train the generator's classes under unlabelled images: the primary arm's learner
        (DPT: the generator learns from the strongest learner's labels), else the classical arm's classifier."""
        return PLAN[self.primary][2] or BASELINE

    def gen_steps_for(self, n_real: int) -> int:
        """Generator fit steps on a subset of n_real images: `gen_steps` if set, `gen_epochs` passes at
        `gen_batch_size` if set, else GEN_EPOCHS epochs at `gen_batch_size`, clipped to [GEN_STEPS_MIN, the preset's
        default] (longer fits of a small subset only memorize it)."""
        if self.gen_steps is not None:
            return self.gen_steps
        if self.gen_epochs is not None:
            return max(1, int(round(self.gen_epochs * n_real / self.gen_batch_size)))
        cap = PRESETS[self.preset].steps
        return int(min(cap, max(GEN_STEPS_MIN, round(GEN_EPOCHS * n_real / self.gen_batch_size))))

    def key(self, **context) -> str:
        """Names a unit's cache file: every setting that changes a (k, seed) run and the `context` it ran in
        (training and test data, classifier, library source, given generator), but not the list of regimes,
        the seeds or the headline's arm (so widening an evaluation reuses the runs it has). With unlabelled images
        the headline's arm names the labeller, whose pseudo-labels fine-tune the generator: that is in the key."""
        unit = {k: v for k, v in asdict(self).items() if k not in ("per_class", "seeds", "seed_start", "primary")}
        if self.unlabeled:
            unit["labeller"] = self.labeller
        return json_digest({**unit, **context}, length=12)
