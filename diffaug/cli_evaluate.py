"""`diffaug evaluate`: its options and the call into the evaluation; the work is done by the library."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from .diffusion.unet import PRESETS
from .cli_args import HelpFormatter, data_args, ints, jobs, load, specs, strength
from .errors import DiffaugError


UNLABELED_OPTIONS = (   # evaluate's knobs under --unlabeled: (EvalConfig field, type, help)
    ("pseudo_label_threshold", float, "pseudo-labels of at least this confidence train the generator's classes (the "
                                      "labeller: the primary arm's learner)"),
    ("self_training_threshold", float, "the self-training arm keeps pseudo-labels of at least this confidence"),
    ("self_training_rounds", int, "self-training relabels with its student this many times"),
    ("fixmatch_threshold", float, "FixMatch's confidence mask"),
    ("fixmatch_ratio", int, "FixMatch's unlabelled images per labelled one in each step"))
LONGTAIL_OPTIONS = (   # and under --imbalance
    ("logit_tau", float, "the logit-adjusted loss's tau (1: balanced softmax)"),
    ("rebalance_tau", float, "the logit-adjust+rebalance stack's tau"),
    ("rebalance_fill", float, "the share of each class's gap to the head that the rebalancing arms' synthetic rows "
                              "fill"))


def imbalance_ratio(text: str) -> float:
    """--imbalance's value: a number >= 1, or one clear line saying what it takes."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 1 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"takes a number >= 1 (head images / tail images, e.g. 10), got {text!r}")
    return value


def cmd_evaluate(args) -> None:
    from .diffusion.distributed import from_env
    from .evaluation import evaluate
    from .generator import Generator

    out = Path(args.out)
    if args.export and Path(args.export).exists():
        raise DiffaugError(f"{args.export} already exists; the recipe goes to a new folder (--export)")
    if out.exists() and not (args.resume or args.overwrite) and not args.preregister:
        raise DiffaugError(f"{out} already exists; pass --resume to continue it (finished runs are reused) "
                           "or --overwrite to start again")
    from .loading import is_builtin

    gen = Generator.load(args.gen) if args.gen else None
    test = None
    if args.test:
        test = load(args, args.test, "test")
    elif is_builtin(args.data) and args.split == "train":   # a built-in's own test split, as --help says
        test = load(args, args.data, "test")
    options = dict(per_class=ints(args.per_class), seeds=args.seeds, seed_start=args.seed_start,
                   classical=args.classical,
                   classifier_steps=args.classifier_steps, classifier_budget=args.classifier_budget,
                   classifier_menu=args.classifier_menu,
                   batch_size=args.batch_size,
                   synthetic_share=args.synthetic_share, synthetic_per_class=args.synthetic_per_class,
                   perturb_copies=args.perturb_copies, strength=strength(args.strength), guidance=args.guidance,
                   sample_steps=args.sample_steps, filter_confidence=args.filter_confidence, preset=args.preset,
                   gen_steps=args.gen_steps, gen_epochs=args.gen_epochs, metrics=not args.no_metrics,
                   primary=args.primary,
                   augment_synthetic=args.augment_synthetic, classifier_repeats=args.classifier_repeats,
                   unlabeled=args.unlabeled, imbalance=args.imbalance,
                   **{name: getattr(args, name) for name, _, _ in UNLABELED_OPTIONS + LONGTAIL_OPTIONS})
    if args.arms:
        options["arms"] = tuple(args.arms.split(","))
    if args.preregister:   # write the plan and stop: commit it, then run with --preregistered
        from .evaluation.protocol import plan_of
        plan_of(args.preregister, load(args), test, gen=gen, classifier=args.classifier, overwrite=args.overwrite,
                **options)
        print(f"wrote {args.preregister}: commit it, then run the same command with --preregistered "
              f"{args.preregister} instead of --preregister", file=sys.stderr)
        return
    result = evaluate(load(args), test, gen=gen, classifier=args.classifier, out_dir=out, n_jobs=args.n_jobs,
                      device=args.device,
                      progress=not args.quiet, resume=not args.overwrite, preregistered=args.preregistered,
                      looks=args.looks, allow_mixed_machines=args.allow_mixed_machines, export=args.export, **options)
    if from_env().main:   # under torchrun every rank ends with the whole result; rank 0 reports it
        print(result.table())
        print(f"\nreport: {out}/results.md, results.json and plots", file=sys.stderr)


def _knobs(p, options: tuple, regime: str, defaults: dict) -> None:
    """One option per (EvalConfig field, type, help) of a regime's knobs, its default the Python API's."""
    for name, kind, text in options:
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=defaults[name], help=f"{regime}: {text}")


HELP = "measure the downstream gain over tuned classical augmentation"


def add_evaluate(sub) -> None:
    """The `evaluate` sub-command, on the parser's sub-commands."""
    from .classify import training
    from .classify.classical import CLASSICAL
    from .classify.networks import BUILT_IN, DEFAULT
    from .evaluation.config import ARMS
    from .evaluation import config as evaluation
    EVAL = {f.name: f.default for f in fields(evaluation.EvalConfig)}   # one source for the defaults: the Python API's
    p = sub.add_parser("evaluate", help=HELP,
                       description="Measure whether diffusion augmentation beats the classical augmentation you "
                       "would tune instead: per regime and seed, a generator fitted on the regime's subset, every arm "
                       "trained alike, verdicts by the sign-flip test over seeds and the two-level interval.",
                       epilog="example: diffaug evaluate my_folder --image-size 32 --per-class 10,50 --out report/",
                       formatter_class=HelpFormatter)
    data = p.add_argument_group("data")
    generator = p.add_argument_group("generator (one fitted per regime and seed)")
    classifier = p.add_argument_group("classifier and arms")
    statistics = p.add_argument_group("statistics and preregistration")
    unlabeled = p.add_argument_group("unlabelled images (--unlabeled)")
    longtail = p.add_argument_group("long-tailed classes (--imbalance)")
    execution = p.add_argument_group("output and execution")
    data_args(data)
    execution.add_argument("--out", required=True, help="report folder (results.json, results.md, plots, runs/)")
    generator.add_argument("--gen", help="use this generator in every run (only fair if it saw only training data); "
                           "default: fit one per regime and seed on that regime's images only")
    data.add_argument("--test", help="test data (default: the built-in's test split, else a 50/50 split of DATA)")
    data.add_argument("--per-class", default=",".join(map(str, EVAL["per_class"])),
                      help="real images per class, comma-separated ('all' ok)")
    statistics.add_argument("--seeds", type=int, default=EVAL["seeds"], help="seeds per regime (each: a subset, a "
                            "generator, a classifier per arm); a claim needs enough of them (the report says how many)")
    statistics.add_argument("--seed-start", type=int, default=EVAL["seed_start"],
                            help="the runs' seeds are SEED_START .. "
                            "SEED_START + SEEDS - 1: a confirmatory run takes seeds no earlier run used (default: "
                            "%(default)s)")
    classifier.add_argument("--arms",
                            help=f"comma-separated subset of {','.join(ARMS)} (default: {','.join(EVAL['arms'])})")
    classifier.add_argument("--classical", default=EVAL["classical"],
                            help="the classical baseline: 'auto' (the best of a "
                            "menu, chosen per regime by cross-validation inside the training pool) or a policy, one of "
                            f"{', '.join(CLASSICAL)}, optionally with (m=MAGNITUDE,p=SHARE) (default: %(default)s)")
    execution.add_argument("--allow-mixed-machines", action="store_true",
                           help="with --resume: finish a run whose cached "
                           "units were made on another machine (torch version, device, CPU or threads); refused by "
                           "default")
    statistics.add_argument("--preregister", metavar="FILE",
                            help="write this evaluation's plan (every setting, the data, "
                            "the code's hash and commit) to FILE and stop; commit it before the run")
    statistics.add_argument("--preregistered", metavar="FILE", help="run the evaluation FILE describes (refused if any "
                            "setting, the data or the code differ) and record it in the report")
    unlabeled.add_argument("--unlabeled", choices=evaluation.UNLABELED,
                           help="rest: the training pool, labels withheld, is "
                           "unlabelled data; a generator is fitted on it per seed and each run fine-tunes it on its "
                           "labelled "
                           "images and the labeller's confident pseudo-labels; the arms add self-training and "
                           "FixMatch (the "
                           "opponents) and the generator stacked on each; the classical policy is chosen within each "
                           "run's "
                           "labelled images")
    _knobs(unlabeled, UNLABELED_OPTIONS, "--unlabeled", EVAL)
    longtail.add_argument("--imbalance", type=imbalance_ratio, metavar="R", help="long-tailed classes: each run draws "
                          "--per-class images of its head class down to per-class / R of its tail (an exponential "
                          "profile, "
                          "as CIFAR-10-LT; the class order drawn per seed); the test split is unchanged; the arms add "
                          "class-balanced re-sampling and the logit-adjusted loss (the opponents) and synthetic rows "
                          "that "
                          "rebalance the classes; the headline is balanced accuracy, with the few-shot classes "
                          "beside it")
    _knobs(longtail, LONGTAIL_OPTIONS, "--imbalance", EVAL)
    statistics.add_argument("--looks", metavar="LEDGER",
                            help="a JSON ledger of the runs that scored on this test split: "
                            "this run is added, and the report says how many looks the split has had")
    classifier.add_argument("--classifier-steps", type=int, help="classifier optimizer steps, the same for every arm "
                            f"(default: {training.STEPS_PER_EPOCHS} epochs of the rows an arm learns from, "
                            f"{training.STEPS_MIN} "
                            f"to {training.STEPS_MAX})")
    classifier.add_argument("--classifier-budget", type=float, metavar="B",
                            help="without --classifier-steps, every arm "
                            "trains for B times the default steps (default: the regime's, chosen for its strongest "
                            "opponent: "
                            f"{evaluation.UNLABELED_BUDGET:g} with --unlabeled, else 1)")
    classifier.add_argument("--classifier", help=f"the downstream network of every arm: {', '.join(BUILT_IN)} (keyword "
                            "numbers allowed, e.g. 'smallcnn(width=32)'), or MODULE:FUNCTION, a factory (in_channels, "
                            f"num_classes) -> torch.nn.Module (default: {DEFAULT})")
    classifier.add_argument("--classifier-menu", type=specs, default=EVAL["classifier_menu"], metavar="NETS",
                            help="without --classifier, where the classical policy is chosen (labelled images, "
                                 "--classical "
                            "auto): the networks each regime chooses its classifier from by the same "
                            "cross-validation, cheapest "
                            f"first (default: {','.join(EVAL['classifier_menu'])}); one name: that network")
    classifier.add_argument("--primary", help="the diffusion arm whose gain is the headline, declared before the run "
                            "(default: the first run of classical+synthesize, classical+perturb, "
                            "classical+mix, synthesize, perturb; "
                            "with --unlabeled self-training+synthesize; with --imbalance classical+rebalance)")
    classifier.add_argument("--batch-size", type=int, default=EVAL["batch_size"], help="the classifiers' batch")
    classifier.add_argument("--synthetic-share", type=float, default=EVAL["synthetic_share"],
                            help="share of each batch that is synthetic")
    classifier.add_argument("--augment-synthetic", action=argparse.BooleanOptionalAction,
                            default=EVAL["augment_synthetic"],
                            help="classical+synthesize: the classical augmentation on the synthetic rows too, not "
                                 "only the "
                            "real ones")
    classifier.add_argument("--classifier-repeats", type=int, default=EVAL["classifier_repeats"],
                            help="classifiers trained per arm and run; a run's accuracy is their mean")
    generator.add_argument("--synthetic-per-class", type=int, default=EVAL["synthetic_per_class"],
                           help="synthetic images per class in each run's pool")
    generator.add_argument("--perturb-copies", type=int, default=EVAL["perturb_copies"],
                           help="perturbed copies of each real image, strengths spread over --strength")
    generator.add_argument("--strength", default=",".join(map(str, EVAL["strength"])),
                           help="perturb strength, or low,high")
    generator.add_argument("--guidance", type=float, default=EVAL["guidance"],
                           help="classifier-free guidance of the synthetic pools (1 = none)")
    generator.add_argument("--sample-steps", type=int, default=EVAL["sample_steps"], help="sampler steps of the pools")
    generator.add_argument("--filter-confidence", type=float, help="keep synthetic images a real-trained classifier "
                           "gives at least this probability of their class")
    generator.add_argument("--preset", default=EVAL["preset"], choices=list(PRESETS), help="the generator's size")
    generator.add_argument("--gen-steps", type=int, help="generator fit steps per run (default: "
                           f"{evaluation.GEN_EPOCHS} epochs of the real subset, {evaluation.GEN_STEPS_MIN} to the "
                           f"preset's "
                           "default; longer fits of small subsets memorize)")
    generator.add_argument("--gen-epochs", type=float,
                           help="or the fit budget in passes over the images each generator fits "
                           "(uncapped); not with --gen-steps")
    statistics.add_argument("--no-metrics", action="store_true", help="skip CAS/FID/KID/precision/recall/memorization")
    execution.add_argument("--export", metavar="DIR", help="write the primary arm as a recipe to use: its generator, "
                           "a SampleBank, the tuned policy and share, recipe.py (torchvision) and pipeline.json "
                           "(albumentations), with the verdict in recipe.py's header")
    execution.add_argument("--n-jobs", type=jobs, default="auto", help="runs in parallel processes (joblib); auto: one "
                           "per CPU core on a CPU, one on a GPU (default: %(default)s)")
    execution.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    execution.add_argument("--resume", action="store_true",
                           help="continue in an existing --out, reusing finished runs and the finished arms of a run "
                                "under way")
    execution.add_argument("--overwrite", action="store_true", help="start again in an existing --out")
    execution.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate)
