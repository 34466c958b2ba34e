"""`evaluate(..., export=DIR)`: the evaluated primary arm as a recipe to use, not a table to rebuild by hand.

The folder holds the first unit's pieces (its regime's first seed): the generator fitted on that unit's subset (fitted
again with the unit's stream and threads: on the machine that ran the unit it is the evaluated one, bit for bit), the
subset, the synthetic pool the arm drew from, a SampleBank at the evaluated share and strength for DataLoaders,
recipe.json (policy, share, steps, seeds, network, verdict), recipe.py (which trains that arm's classifier batch for
batch, and builds the same arm as a torchvision transform) and, with albumentations installed, pipeline.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..generator import Generator
from ..io import atomic_path, check_writable
from .cache import using_threads
from .config import BASELINE, PLAN, EvalConfig
from .unit import _pools, unit_generator
from .unitplan import unit_plan

EXPORTABLE = ("synthesize", "perturb", "mix")   # pools a supervised arm with the classical policy draws from


def check_exportable(cfg: EvalConfig, out) -> None:
    """Refuse, before any work, an export this evaluation cannot make."""
    pool, augmented, learner = PLAN[cfg.primary]
    if pool not in EXPORTABLE or learner is not None:
        raise DataError(f"export writes recipes of the supervised arms that mix generated rows into the classical "
                        f"policy's batches (classical+synthesize, classical+perturb, classical+mix, synthesize, "
                        f"perturb); the primary arm here is {cfg.primary!r}")
    if cfg.filter_confidence is not None or cfg.target_classes:
        raise DataError("export does not write recipes of filtered or class-targeted pools (filter_confidence, "
                        "target_classes)")
    check_writable(out)


def export_recipe(out, result, cfg: EvalConfig, train, gen: Generator | None, device, network: str | None) -> Path:
    """Write the recipe of cfg.primary, from the evaluation's first unit, to the folder `out` (atomically).
    `network`: the downstream network by name (None: a factory given in Python, which recipe.py's train takes)."""
    from ..diffusion.step import resolve_device

    device = resolve_device(device)
    k, seed = cfg.per_class[0], cfg.seed_list[0]
    unit = next(u for u in result.units if u["k"] == k and u["seed"] == seed)
    arm = unit["arms"][cfg.primary]
    plan = unit_plan(cfg, k, seed, train.num_classes)
    subset = plan.subset(train)
    threads = unit.get("machine", {}).get("threads")
    pool_name = PLAN[cfg.primary][0]
    with using_threads(threads):   # the unit's arithmetic, bit for bit
        if gen is None:
            gen = unit_generator(subset, cfg, plan.streams, device)
        images, labels = (t.cpu() for t in _pools(gen, subset, cfg, plan.streams["pools"], device)[pool_name])
    verdict = result.summary[str(k)]["primary"]["gain"]
    recipe = {"arm": cfg.primary, "mode": pool_name, "regime": k, "seed": seed, "policy": arm["classical"],
              "hflip": cfg.hflip, "share": arm["synthetic_share"], "augment_synthetic": cfg.augment_synthetic,
              "steps": arm["optimizer_steps"][0], "batch_size": cfg.batch_size,
              "seeds": unit["replicate_seeds"][0], "classifier": network,
              "threads": threads, "strength": list(cfg.strength),
              "sample_steps": cfg.sample_steps, "guidance": cfg.guidance,
              "generator_fingerprint": gen.fingerprint, "evaluated_generator": unit["generator"]["fingerprint"],
              "verdict": {"against": BASELINE, **verdict},
              "evaluation": result.out_dir, "data": result.config["data"]}
    with atomic_path(out, overwrite=False) as tmp:
        tmp.mkdir()
        gen.save(tmp / "generator.safetensors")
        subset.to_npz(tmp / "subset.npz")
        np.savez_compressed(tmp / "pool.npz", images=images.numpy(), labels=labels.numpy())
        from ..adapters.bank import SampleBank
        SampleBank.build(gen, tmp / "bank", per_class=cfg.synthetic_per_class, data=subset,
                         copies=cfg.perturb_copies if pool_name != "synthesize" else 0, strength=cfg.strength,
                         steps=cfg.sample_steps, guidance=cfg.guidance, seed=plan.streams["pools"], device=device,
                         progress=False)
        (tmp / "recipe.json").write_text(json.dumps(recipe, indent=1) + "\n")
        (tmp / "recipe.py").write_text(RECIPE_PY.replace("HEADER", _header(recipe)))
        _albumentations(tmp, Path(out).resolve(), subset.size, recipe)
    return Path(out)


def _header(recipe: dict) -> str:
    v = recipe["verdict"]
    interval = ("no interval" if not np.isfinite(v["ci_low"]) else
                f"[{100 * v['ci_low']:+.2f}, {100 * v['ci_high']:+.2f}]")
    return (f"{recipe['arm']} on {recipe['data']}, {recipe['regime'] or 'all'} real images per class: "
            f"{v['verdict']} against the tuned classical policy, {100 * v['mean']:+.2f} points {interval} "
            f"(two-level 95% interval; Holm-adjusted sign-flip p {v['p_holm']:.3g}).")


def _albumentations(folder: Path, final: Path, size: tuple[int, int], recipe: dict) -> None:
    """pipeline.json: the classical policy's base in albumentations (the padded random crop's shift), then the bank at
    the evaluated share, named by its path in `final` (where `folder` is moved). Skipped without the albumentations
    extra."""
    try:
        import albumentations as A

        from ..adapters.albumentations import AlbumentationsDiffusionAugment
    except ImportError:
        return
    pad = max(1, min(size) // 8)   # classify/classical.py's padded crop
    pipe = A.Compose([A.Affine(translate_px=(-pad, pad), p=1.0),   # the padded random crop's shift
                      AlbumentationsDiffusionAugment(str(folder / "bank"), mode=recipe["mode"],
                                                     p=recipe["share"])],
                     strict=True)
    A.save(pipe, str(folder / "pipeline.json"))
    text = (folder / "pipeline.json").read_text()
    (folder / "pipeline.json").write_text(text.replace(json.dumps(str(folder / "bank"))[1:-1],
                                                       json.dumps(str(final / "bank"))[1:-1]))


RECIPE_PY = '''"""HEADER

Written by `diffaug evaluate --export`. Beside this file: generator.safetensors (the generator of the evaluation's
first unit), subset.npz (that unit's real images), pool.npz (the generated rows its arm drew from), bank/ (a
SampleBank at the evaluated strength, for DataLoaders), recipe.json (every number below), pipeline.json
(albumentations).

    python recipe.py [--test DATA]    # trains the evaluated arm's classifier, batch for batch, and scores it
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import diffaug
from diffaug.classify import fit_classifier, predict_proba, resolve_classifier
from diffaug.classify.policies import Policy
from diffaug.evaluation.cache import using_threads

HERE = Path(__file__).resolve().parent
RECIPE = json.loads((HERE / "recipe.json").read_text())


def train(device="cpu", factory=None):
    """The evaluated arm's classifier: the same subset, generated rows, policy, share, steps, batch and seeds as the
    evaluation's first unit (on its machine and thread count, the same weights). `factory`: the network, where the
    evaluation was given one in Python (recipe.json's classifier is then null)."""
    subset = diffaug.ImageData.from_npz(HERE / "subset.npz")
    with np.load(HERE / "pool.npz") as z:
        pool = (torch.from_numpy(z["images"]).to(device), torch.from_numpy(z["labels"]).to(device))
    aug = Policy.parse(RECIPE["policy"]).build(subset.size, RECIPE["hflip"])
    with using_threads(RECIPE["threads"]):   # the unit's thread count: its arithmetic, bit for bit
        return fit_classifier(subset, aug, tuple(RECIPE["seeds"]), RECIPE["steps"], RECIPE["batch_size"], device,
                              pool=pool, share=RECIPE["share"], augment_synthetic=RECIPE["augment_synthetic"],
                              factory=resolve_classifier(RECIPE["classifier"]) if RECIPE["classifier"] else factory)


def transform():
    """The same arm in a torchvision pipeline, one image at a time: the classical policy on the real image, then
    with probability `share` the image replaced by a generated one of its class (torchvision's per-image policy of
    the same name; the evaluation ran its batched twin)."""
    from torchvision.transforms import v2

    from diffaug import DiffusionAugment, SampleBank
    from diffaug.classify.classical import classical_augment

    policy = Policy.parse(RECIPE["policy"])
    size = diffaug.ImageData.from_npz(HERE / "subset.npz").size
    classical = v2.RandomApply([classical_augment(policy.name, size, RECIPE["hflip"])], p=policy.p)
    return v2.Compose([classical, DiffusionAugment(SampleBank(HERE / "bank"), p=RECIPE["share"], mode=RECIPE["mode"])])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", help="data to score the classifier on (a built-in name, a folder, an .npz)")
    args = parser.parse_args()
    model = train()
    if args.test:
        test = diffaug.load_data(args.test, "test", image_size=diffaug.ImageData.from_npz(HERE / "subset.npz").size[0])
        right = predict_proba(model, test.images).argmax(1) == test.labels
        print(f"test accuracy: {right.double().mean():.4f}")
'''
