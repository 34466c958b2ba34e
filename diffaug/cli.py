"""The `diffaug` command: argument parsing and progress output; the work is done by the library."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .cli_args import HelpFormatter, data_args as _data_args, load as _load
from .cli_evaluate import HELP as EVALUATE_HELP, add_evaluate
from .errors import DiffaugError
from .workers import Terminated, sigterm_as_interrupt


class _Deprecated(argparse.Action):
    """An old option name that still works and says which name replaced it."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"diffaug: warning: {option_string} is deprecated here (it means optimizer steps in `fit`); use "
              f"{self.metavar}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _gen_args(p: argparse.ArgumentParser) -> None:
    from .diffusion.sampling import GUIDANCE, SAMPLE_STEPS, SAMPLER, SAMPLER_CHOICES
    from .generator import BATCH, CUDA_BATCH_PIXELS
    p.add_argument("--steps", dest="steps", type=int, action=_Deprecated, metavar="--sample-steps",
                   default=argparse.SUPPRESS, help="deprecated alias of --sample-steps")
    p.add_argument("--sample-steps", dest="steps", type=int, default=SAMPLE_STEPS, help="sampler steps")
    p.add_argument("--sampler", default=SAMPLER, choices=SAMPLER_CHOICES, help="the sampler")
    p.add_argument("--guidance", type=float, default=GUIDANCE, help="classifier-free guidance scale (1 = none)")
    p.add_argument("--seed", type=int, default=0, help="the seed every image's noise derives from")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, help=f"images per network call (default: {BATCH} on the CPU; on CUDA "
                   f"a power of two of about {CUDA_BATCH_PIXELS:,} pixels, 1024 images at 32x32)")


def cmd_fit(args) -> None:
    from .diffusion.distributed import from_env
    from .fitting import fit
    from .io import check_writable

    out = check_writable(args.out, args.overwrite)   # fail now, not after an hour of training
    data = _load(args)
    if args.epochs is not None:
        from .diffusion.step import resolve_device
        from .diffusion.trainer import DEFAULT_BATCH

        if args.steps is not None:
            raise DiffaugError("give the fit's length as --steps or --epochs, not both")
        if not args.epochs > 0:
            raise DiffaugError(f"--epochs must be a positive number, got {args.epochs}")
        batch = args.batch_size or DEFAULT_BATCH.get(resolve_device(args.device).type, DEFAULT_BATCH["cpu"])
        args.steps = max(1, math.ceil(args.epochs * len(data) / batch))
    ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else out.with_suffix(".ckpt")
    main_rank = from_env().main   # under torchrun every rank runs this; rank 0 speaks and writes
    if main_rank:
        print(f"fitting a {args.preset} generator on {data}; checkpoints in {ckpt}", file=sys.stderr)
    options = {k: v for k, v in dict(batch_size=args.batch_size, lr=args.lr, checkpoint_every=args.checkpoint_every,
                                     compile=args.compile, hflip=args.hflip, fast=args.fast,
                                     unlabeled_share=args.unlabeled_share, augment=args.augment,
                                     noise_sampling=args.noise_sampling).items()
               if v is not None}
    unlabeled = args.unlabeled
    if unlabeled and args.image_size:   # the unlabelled images at the labelled ones' size
        from .loading import load_unlabeled
        unlabeled = load_unlabeled(unlabeled, image_size=args.image_size, background=args.background)
    gen = fit(data, args.preset, args.steps, minutes=args.minutes, device=args.device, seed=args.seed,
              out_dir=ckpt, resume=args.resume, progress=not args.quiet,
              distributed=True if args.distributed else None, timeout_s=args.timeout, unlabeled=unlabeled,
              init=args.init, pseudo_labels=args.pseudo_labels, pseudo_label_policy=args.pseudo_label_policy,
              **options)
    train = gen.config["train"]
    if main_rank:   # every rank holds the same generator
        gen.save(out, overwrite=True)   # `out` was checked above; it may have appeared only if --overwrite
        print(f"wrote {out}: {train['steps']} steps, {train['seconds']:.0f} s this run, "
              f"{train['images_per_second']:.0f} img/s on {train['world_size']} rank(s)", file=sys.stderr)


def cmd_sample(args) -> None:
    from .generator import Generator
    from .io import check_writable
    from .grid import save_grid

    out = check_writable(args.out, args.overwrite)
    if out.suffix.lower() not in (".png", ".npz"):
        raise DiffaugError(f"--out must end in .png (a grid, one row per class) or .npz, got {out.name}")
    if args.per_class < 1:
        raise DiffaugError(f"--per-class must be at least 1, got {args.per_class}")
    gen = Generator.load(args.gen, device=args.device)
    spacing = {"spacing": args.spacing} if args.spacing else {}
    images = gen.sample(per_class=args.per_class, steps=args.steps, sampler=args.sampler, guidance=args.guidance,
                        seed=args.seed, batch_size=args.batch_size, progress=not args.quiet, **spacing)
    if out.suffix.lower() == ".png":
        save_grid(images, args.per_class, out)
    else:
        from .data import ImageData
        import torch
        labels = torch.arange(gen.num_classes).repeat_interleave(args.per_class)
        ImageData(images, labels, gen.class_names).to_npz(out)
    print(f"wrote {out}: {len(images)} images", file=sys.stderr)


LARGEST = 0   # --balance without N: every class up to the largest class's count


def _balance(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 of images per class, got {text!r}")
    return n


def cmd_expand(args) -> None:
    from .diffusion.distributed import from_env, rank_device
    from .generator import Generator

    given = [name for name, value in (("--per-class", args.per_class), ("--ratio", args.ratio),
                                      ("--balance", args.balance)) if value is not None]
    if args.mode == "synthesize" and len(given) != 1:
        raise DiffaugError("give one of --per-class N, --ratio R or --balance [N]" +
                           (f", not {' and '.join(given)} together" if given else ""))
    from . import hf
    import datasets

    gen = Generator.load(args.gen, device=rank_device(args.device, from_env()))
    path = Path(args.data)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(path))   # keep the dataset's own features and columns
    else:
        ds = hf.to_hf_dataset(_load(args))
    options = dict(image_column=args.image_column, label_column=args.label_column, seed=args.seed,
                   batch_size=args.batch_size if args.batch_size is not None else gen.default_batch(),
                   steps=args.steps, sampler=args.sampler, guidance=args.guidance, splits=(args.split,),
                   progress=not args.quiet)
    if args.mode == "perturb":
        options.update(copies=args.copies, strength=args.strength)
    else:
        options.update(per_class="balance" if args.balance is not None else args.per_class, ratio=args.ratio)
        if args.balance not in (None, LARGEST):
            options["balance_to"] = args.balance
    by_hand = args.num_shards > 1 or args.shard_index   # else: one shard per torchrun rank, or one in all
    if hf.expand_to_disk(ds, gen, args.out, mode=args.mode, num_shards=args.num_shards if by_hand else None,
                         shard_index=args.shard_index if by_hand else None, overwrite=args.overwrite, **options):
        print(f"wrote {args.out}", file=sys.stderr)


def cmd_demo(args) -> None:
    from .demo import run_demo
    run_demo(Path(args.out), overwrite=args.overwrite, progress=not args.quiet)


def cmd_info(args) -> None:
    from .generator import Generator

    gen = Generator.load(args.gen)
    if args.json:
        print(json.dumps(gen.config, indent=2))
        return
    c, t, q = gen.config, gen.config["train"], gen.config.get("pseudo_labels")
    h, w = gen.image_size
    print(f"{args.gen}: diffaug generator (written by diffaug {c['diffaug_version']})\n"
          f"  images     {gen.channels}x{h}x{w} (CxHxW), {gen.num_classes} classes: {', '.join(gen.class_names[:12])}"
          f"{' ...' if gen.num_classes > 12 else ''}\n"
          f"  network    preset {c['preset']}, {sum(v.numel() for v in gen.model.state_dict().values()):,} weights\n"
          f"  diffusion  {c['schedule']} schedule, {c['prediction']}-prediction\n"
          f"  training   {t['steps']} steps at batch {t['batch_size']}, lr {t['lr']}, EMA {t['ema_decay']}, "
          f"seed {t['seed']}"
          + (f", non-leaking augmentation p={t['augment']}" if t.get("augment") else "") + "\n"
          f"  data       {c['data_size']} images, fingerprint {c['data_fingerprint']}\n"
          + (f"  unlabeled  {c['unlabeled']['count']} images, fingerprint {c['unlabeled']['fingerprint']}, "
             f"{c['unlabeled']['share']:.0%} of each batch\n" if "unlabeled" in c else "")
          + (f"  pseudo     {q['kept']} of them labelled by a classifier of the {q['labelled']} labelled images "
             f"(confidence >= {q['threshold']}, {q['policy']})"
             + (f"; none of class(es) {', '.join(q['empty_classes'][:10])}" if q.get("empty_classes") else "")
             + "\n" if q else "")
          + (f"  init       generator {c['init']['fingerprint']} (fitted on data {c['init']['data_fingerprint']}; "
             f"{len(c['init']['matched_classes'])} classes matched by name)\n" if "init" in c else "")
          + f"  weights    fingerprint {gen.fingerprint}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI's parser. Given the `command` about to be parsed, and it is another than `evaluate`, the
    `evaluate` sub-command is its one-line entry only: its options import the classifier and evaluation stack
    (torchvision among it), 1.5 s of the 4.3 s a `diffaug info` took to start on a 2-core Xeon."""
    parser = argparse.ArgumentParser(prog="diffaug", description="Diffusion generators as data augmentation.")
    parser.add_argument("--version", action="version", version=f"diffaug {__import__('diffaug').__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    from .diffusion.trainer import DEFAULT_BATCH, TrainConfig
    from .diffusion.unet import PRESETS
    p = sub.add_parser("fit", help="fit a class-conditional diffusion generator to labelled images",
                       description="Fit a class-conditional diffusion generator to labelled images; writes one "
                       ".safetensors file (weights + JSON config).", formatter_class=HelpFormatter,
                       epilog="example: diffaug fit my_folder --image-size 32 --minutes 10 --out mine.safetensors")
    _data_args(p)
    p.add_argument("--out", required=True, help="generator file to write (.safetensors)")
    p.add_argument("--preset", default="tiny", choices=list(PRESETS), help="the network's size")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the preset's: " +
                   ", ".join(f"{name} {preset.steps}" for name, preset in PRESETS.items()) + ")")
    p.add_argument("--epochs", type=float, help="or the fit's length in passes over DATA at --batch-size "
                   "(not with --steps)")
    p.add_argument("--minutes", type=float, help="wall-clock budget; stops at whichever budget ends first")
    p.add_argument("--batch-size", type=int, help="the global batch (default: "
                   f"{DEFAULT_BATCH['cpu']} on CPU, {DEFAULT_BATCH['cuda']} on CUDA)")
    p.add_argument("--lr", type=float, help=f"AdamW's peak learning rate (default: {TrainConfig.lr})")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=0, help="the fit's seed (weights, batches, noise)")
    p.add_argument("--checkpoint-dir", help="where checkpoints go (default: OUT with suffix .ckpt)")
    p.add_argument("--checkpoint-every", type=int, help="optimizer steps between checkpoints (default: "
                   f"{TrainConfig.checkpoint_every})")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the network (default: on CUDA for fits long enough to repay the ~100 s "
                   "compile, 7,000 steps or more; off on CPU)")
    p.add_argument("--no-fast-path", dest="fast", action="store_false", default=None,
                   help="run the eager reference training step instead of the graph-safe one (CUDA graphs on CUDA)")
    p.add_argument("--hflip", action="store_true", default=None, help="random horizontal flips (not for digits/text)")
    p.add_argument("--augment", type=float, metavar="P", help="non-leaking augmentation of the training images "
                   "(flips, quarter turns, shifts, scale, rotation; each with probability P, the network told which, "
                   "samples drawn as 'not augmented'); default: off")
    from .diffusion.objectives import NOISE_SAMPLING
    p.add_argument("--noise-sampling", choices=NOISE_SAMPLING, help="how each batch's noise levels are drawn: "
                   "weighted (uniform, min-SNR loss weights), importance (from those weights' density, unweighted: "
                   "the same objective), lognormal (EDM's, more low-noise levels); default: "
                   f"{TrainConfig.noise_sampling}")
    p.add_argument("--unlabeled", metavar="PATH", help="unlabelled images from the same source: a folder of images "
                   "(no class sub-folders), an .npz with `images` only, or a saved HF dataset without labels; they "
                   "train the unconditional (null-class) model")
    p.add_argument("--unlabeled-share", type=float, help="share of each batch drawn from --unlabeled (default: "
                   f"{TrainConfig.unlabeled_share})")
    p.add_argument("--pseudo-labels", type=float, metavar="THRESHOLD", help="a classifier trained on DATA labels "
                   "the --unlabeled images it is at least this sure of (e.g. 0.7); those train under their labels "
                   "too (DPT)")
    p.add_argument("--pseudo-label-policy", metavar="POLICY", help="that classifier's classical augmentation, e.g. "
                   "'trivialaugment(m=0.5)' (default: chosen by cross-validation within DATA)")
    p.add_argument("--init", metavar="GEN", help="start from this generator's weights (same preset and image size; "
                   "classes matched by name)")
    p.add_argument("--distributed", action="store_true", help="data-parallel over torchrun's ranks (detected "
                   "when torchrun launches more than one process; this flag insists)")
    p.add_argument("--timeout", type=float, default=300, help="seconds a rank waits for a lost rank before the run "
                   "fails (distributed fitting)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("sample", help="generate images per class: a PNG grid or an .npz", formatter_class=HelpFormatter,
                       description="Generate images of every class with a fitted generator.",
                       epilog="example: diffaug sample mine.safetensors --per-class 8 --out grid.png")
    p.add_argument("gen", help="generator file")
    p.add_argument("--per-class", type=int, required=True, help="images per class")
    p.add_argument("--out", required=True, help="grid.png (one row per class) or samples.npz")
    _gen_args(p)
    from .diffusion.sampling import SPACING_CHOICES
    p.add_argument("--spacing", choices=SPACING_CHOICES,
                   help="where the sampler's steps sit in time (default: the library's, from "
                        "benchmarks/sampler_steps.py)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("expand", help="expand a dataset with synthetic (or perturbed) rows; writes an HF dataset",
                       description="Expand DATA with synthetic rows (or perturbed copies of its rows) and write a "
                       "Hugging Face dataset with a provenance column per row.", formatter_class=HelpFormatter,
                       epilog="example: diffaug expand my_folder --image-size 32 --gen mine.safetensors "
                              "--per-class 200 --out my-expanded")
    _data_args(p)
    p.add_argument("--gen", required=True, help="generator file")
    p.add_argument("--out", required=True, help="folder for datasets.Dataset.save_to_disk")
    p.add_argument("--per-class", type=int, help="synthetic images per class")
    p.add_argument("--ratio", type=float, help="synthetic images per class = ratio x the class's real count")
    p.add_argument("--balance", nargs="?", const=LARGEST, type=_balance, metavar="N",
                   help="fill every class up to the largest class's real count, or to N images")
    p.add_argument("--mode", default="synthesize", choices=["synthesize", "perturb"], help="synthesize: new rows "
                   "per class (expand_dataset); perturb: copies of the real rows (perturb_dataset)")
    p.add_argument("--copies", type=int, default=1, help="perturb: copies per real image")
    from .diffusion.sampling import STRENGTH
    p.add_argument("--strength", type=float, default=STRENGTH, help="perturb: noise level in (0, 1]")
    p.add_argument("--num-shards", type=int, default=1, help="split the generation over this many machines")
    p.add_argument("--shard-index", type=int, default=0, help="which shard this run makes (shard 0 keeps the real "
                   "rows)")
    _gen_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_expand)

    if command not in LIGHT:   # evaluate, or not known yet (--help, --version, a typo)
        add_evaluate(sub)
    else:
        sub.add_parser("evaluate", help=EVALUATE_HELP)

    p = sub.add_parser("demo", help="the whole story on the built-in digits, in minutes: fit, sample, expand, evaluate",
                       formatter_class=HelpFormatter, epilog="example: diffaug demo --out diffaug-demo")
    p.add_argument("--out", default="diffaug-demo", help="folder for everything the demo writes")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("info", help="describe a generator file", formatter_class=HelpFormatter,
                       epilog="example: diffaug info mine.safetensors")
    p.add_argument("gen", help="generator file")
    p.add_argument("--json", action="store_true", help="print the whole config as JSON")
    p.set_defaults(func=cmd_info)
    return parser


LIGHT = ("fit", "sample", "expand", "demo", "info")   # the commands whose parsing needs no evaluation stack


def command_of(argv: list[str]) -> str | None:
    """The sub-command argv names: its first word that is not an option (None: `--help`, `--version`, nothing)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(command_of(argv)).parse_args(argv)
    try:
        with sigterm_as_interrupt():   # the whole command: between two pools, its idle workers end with it too
            args.func(args)
    except (DiffaugError, FileNotFoundError, ImportError) as e:
        print(f"diffaug: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:   # Ctrl-C, or SIGTERM (diffaug.workers)
        terminated = isinstance(e, Terminated)
        print(f"diffaug: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    return 0


if __name__ == "__main__":   # python -m diffaug.cli
    sys.exit(main())
