"""What a generator is worth per CPU-minute: fits at a fixed wall-clock budget, variants side by side, scored on a
VALIDATION split of the training pool (never the test split).

    python benchmarks/quality_per_minute.py --data fashion-mnist --minutes 3 --seeds 2 --variants flat-lr,default

Each (variant, seed) fits `diffaug.fit(pool, minutes=M)` with everything else at its default, samples
`--per-class` images of every class, and scores them against the same number of real pool images per class:

- CAS relative to real, twice: a logistic regression (scikit-learn, on pixels) and the reference small CNN
  (metrics.cas), each trained on the synthetic images and on as many real ones, both scored on the validation split;
- own-feature FID, precision and recall against the validation images, in the features of one reference network
  trained on the pool (as `evaluate` does), and the share of samples nearer a training image than 1/3 of their
  second-nearest (memorization).

Variants: `default` is the library as it is; `flat-lr` is the learning rate before budget-aware decay (a minutes
budget trained at the peak rate to its last step; issue 37), made by patching `lr_at` to ignore the budget's clock;
`importance` and `lognormal` are fits with that `noise_sampling` (diffusion/objectives.py); `narrow`, `wide`,
`deep` and `no-attention` change one thing of the tiny preset's shape (SHAPES), for its quality at equal wall time;
`compiled` trains the network under torch.compile (`compile=True`), its compile time spent from the same budget;
`opt:FIELD=VALUE+FIELD=VALUE` fits with those TrainConfig fields (e.g. `opt:batch_size=32+lr=1e-3`).
`--ema-widths 0.05,0.15` also keeps, during every `default` fit, power-function EMAs of those relative widths
(EDM2's sigma_rel; the library's warm-up EMA is the one of width 0.09) and scores each as the variant
`default+ema<width>`: the same fit, weights averaged differently (issue 37, item 4).
`--sampling guidance=1,guidance=3,steps=40` also scores every library fit (not the diffusers anchor) sampled with each
of those settings (Generator.sample's `guidance` weight or `steps`; the library's are GUIDANCE and SAMPLE_STEPS) as
the variant `<variant>@<setting>`: the same fit, sampled differently (issue 37, item 5: class-faithfulness against
diversity). A fit bounded by steps rather than the clock (`opt:steps=N` under a `--minutes` it will not reach) takes
the same steps at the same rates under any load: sampling settings compared on it need no quiet CPU.
`diffusers` is the loop a user would write instead (DiffusersAnchor): diffusers' UNet2DModel of the preset's size,
trained and sampled for the same wall-clock budget (needs `pip install -e ".[bench]"`); `diffusers@LR` is the same
loop at peak learning rate LR (e.g. `diffusers@1e-3`) instead of the tutorial's 1e-4, for the anchor tuned for the
budget as a user would tune it: several rates side by side, the best by its own validation score.
Intervals: mean over seeds +- t(0.975, seeds-1) sd / sqrt(seeds), and the paired difference to the first variant.
Writes results/quality_per_minute_<data>.{json,md}, after every fit (a killed run keeps what it finished).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import diffaug  # noqa: E402
from _common import write_results  # noqa: E402
from diffaug.diffusion.sampling import GUIDANCE, SAMPLE_STEPS  # noqa: E402
from diffaug.diffusion.trainer import DEFAULT_BATCH  # noqa: E402
from diffaug.evaluation.cache import cpu_model  # noqa: E402

VALIDATION_SHARE = 0.1   # of the training pool, stratified, seed 1: 6,000 Fashion-MNIST images


@contextlib.contextmanager
def variant(name: str):
    """The library as `name` describes it, for the duration of one fit; yields the fit's options."""
    from diffaug.diffusion.objectives import NOISE_SAMPLING
    if name == "default" or anchor_lr(name) is not None:
        yield {}
        return
    if name in NOISE_SAMPLING:
        yield {"noise_sampling": name}
        return
    if name == "compiled":   # the training network under torch.compile: its compile time is spent from the budget
        yield {"compile": True}
        return
    if name.startswith("opt:"):
        yield train_options(name)
        return
    if name in SHAPES:
        with tiny_shaped(SHAPES[name]):
            yield {}
        return
    if name != "flat-lr":
        raise SystemExit(f"unknown variant {name!r} (default, flat-lr, compiled, opt:FIELD=VALUE, diffusers, "
                         f"diffusers@LR, {', '.join(NOISE_SAMPLING)}, {', '.join(SHAPES)})")
    import diffaug.diffusion.fastpath as fastpath
    import diffaug.diffusion.trainer as trainer
    from diffaug.diffusion.step import lr_at

    def flat(step, cfg, total, spent=None):   # before issue 37: the budget's clock was not read
        return lr_at(step, cfg, total)
    saved = trainer.lr_at, fastpath.lr_at
    trainer.lr_at = fastpath.lr_at = flat
    try:
        yield {}
    finally:
        trainer.lr_at, fastpath.lr_at = saved


def train_options(name: str) -> dict:
    """`opt:batch_size=32+lr=1e-3` -> {"batch_size": 32, "lr": 0.001}: TrainConfig fields of one variant."""
    fields = diffaug.TrainConfig.__dataclass_fields__
    options = {}
    for item in name[4:].split("+"):
        key, _, value = item.partition("=")
        if key not in fields or not value:
            raise SystemExit(f"variant {name!r}: {item!r} is not FIELD=VALUE of a TrainConfig field")
        try:
            options[key] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            options[key] = value
    return options


# The tiny preset's shape at equal wall time (issue 37 item 5): each changes one thing of
# UNetConfig(channels=16, mults=(1, 3, 3), blocks=1, attn_levels=(2,)); a faster network takes more steps in the
# same minutes, a bigger one learns more per step.
SHAPES = {
    "narrow": {"channels": 8, "mults": (1, 4, 4)},      # half the full-resolution width: about half the FLOPs
    "wide": {"channels": 24, "mults": (1, 2, 2)},       # the shape tiny replaced: 1.5x the full-resolution width
    "deep": {"blocks": 2},                               # two residual blocks per level
    "no-attention": {"attn_levels": ()},                 # no self-attention at 7x7
}


@contextlib.contextmanager
def tiny_shaped(changes: dict):
    """The tiny preset with `changes` to its UNetConfig, for the duration of one fit (the generator records the
    shape it was fitted with, so it samples as itself afterwards)."""
    from dataclasses import replace

    from diffaug.diffusion.unet import PRESETS
    saved = PRESETS["tiny"]
    PRESETS["tiny"] = saved._replace(unet=replace(saved.unet, **changes))
    try:
        yield
    finally:
        PRESETS["tiny"] = saved


# The loop a user would write instead (issue 37's anchor): diffusers' UNet2DModel in the layout benchmarks/speed.py
# matches to the preset's parameter count, trained as diffusers' training tutorial does it (DDPMScheduler of 1,000
# steps, epsilon prediction, AdamW at 1e-4, 500 linear warm-up steps then cosine decay -- here to the end of the
# wall-clock budget, the same budget-aware decay the library has --, gradients clipped at 1, no EMA: the tutorial's
# defaults), at the library's CPU batch, with 10% of labels dropped to the null class so that it can be guided; sampled
# by DDIMScheduler at the library's default step count and guidance weight (every step guided).
ANCHOR_LR, ANCHOR_WARMUP, ANCHOR_LABEL_DROP, ANCHOR_TRAIN_STEPS = 1e-4, 500, 0.1, 1000


def anchor_lr(name: str) -> float | None:
    """The diffusers anchor's peak learning rate a variant name asks for ('diffusers': the tutorial's, 'diffusers@LR':
    LR), or None for a variant that is not the anchor."""
    if name == "diffusers":
        return ANCHOR_LR
    if not name.startswith("diffusers@"):
        return None
    try:
        lr = float(name.split("@", 1)[1])
    except ValueError:
        raise SystemExit(f"variant {name!r}: the anchor's learning rate must be a number, e.g. "
                         "diffusers@1e-3") from None
    if not 0 < lr < 1:
        raise SystemExit(f"variant {name!r}: the anchor's learning rate must lie in (0, 1)")
    return lr


class DiffusersAnchor:
    """A diffusers generator fitted for `minutes` of wall clock, with the two things Scorer reads of a Generator:
    `sample(labels, seed)` (uint8 N,C,H,W) and `config["train"]` (steps, seconds, lr_end)."""

    def __init__(self, pool: diffaug.ImageData, preset: str, minutes: float, seed: int, lr: float = ANCHOR_LR):
        from diffusers import DDIMScheduler, DDPMScheduler
        from speed import diffusers_model

        torch.manual_seed(seed)
        self.classes, self.shape = pool.num_classes, tuple(pool.images.shape[1:])
        self.model = diffusers_model(preset, pool.channels, self.shape[-1], classes=self.classes)
        self.train_sched, self.sample_sched = DDPMScheduler(ANCHOR_TRAIN_STEPS), DDIMScheduler(ANCHOR_TRAIN_STEPS)
        self.config = {"train": self.fit(pool, minutes * 60, seed, lr)}

    def fit(self, pool: diffaug.ImageData, budget: float, seed: int, peak: float) -> dict:
        g = torch.Generator().manual_seed(seed)
        images, labels, batch = pool.images.float() / 127.5 - 1, pool.labels, DEFAULT_BATCH["cpu"]
        opt = torch.optim.AdamW(self.model.parameters(), lr=peak)
        self.model.train()
        t0, step, lr = time.perf_counter(), 0, 0.0
        while (spent := time.perf_counter() - t0) < budget:
            lr = peak * ((step + 1) / ANCHOR_WARMUP if step < ANCHOR_WARMUP
                              else 0.5 * (1 + math.cos(math.pi * spent / budget)))
            for group in opt.param_groups:
                group["lr"] = lr
            idx = torch.randint(len(images), (batch,), generator=g)
            x, y = images[idx], labels[idx].clone()
            y[torch.rand(batch, generator=g) < ANCHOR_LABEL_DROP] = self.classes
            noise = torch.randn(x.shape, generator=g)
            t = torch.randint(0, ANCHOR_TRAIN_STEPS, (batch,), generator=g)
            loss = F.mse_loss(self.model(self.train_sched.add_noise(x, noise, t), t, class_labels=y).sample, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            opt.step()
            step += 1
        return {"steps": step, "seconds": round(time.perf_counter() - t0, 2), "lr_end": lr}

    @torch.no_grad()
    def sample(self, labels, seed: int = 0, batch: int = 500) -> torch.Tensor:
        self.model.eval()
        g, out = torch.Generator().manual_seed(seed), []
        self.sample_sched.set_timesteps(SAMPLE_STEPS)
        for y in torch.as_tensor(labels).split(batch):
            x = torch.randn((len(y), *self.shape), generator=g)
            both = torch.cat([y, torch.full_like(y, self.classes)])
            for t in self.sample_sched.timesteps:
                cond, null = self.model(torch.cat([x, x]), t, class_labels=both).sample.chunk(2)
                x = self.sample_sched.step(null + GUIDANCE * (cond - null), t, x).prev_sample
            out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
        return torch.cat(out)


SAMPLING_KNOBS = {"guidance": float, "steps": int}


def sampling_settings(spec: str) -> list[tuple[str, dict]]:
    """--sampling's entries as (label, Generator.sample keywords), e.g. 'guidance=3' -> ('guidance=3', {...})."""
    out = []
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in SAMPLING_KNOBS or not value:
            raise SystemExit(f"--sampling {item!r}: expected {' or '.join(f'{k}=VALUE' for k in SAMPLING_KNOBS)}")
        try:
            out.append((item, {key: SAMPLING_KNOBS[key](value)}))
        except ValueError:
            raise SystemExit(f"--sampling {item!r}: {value!r} is not a number of the kind {key} takes") from None
    return out


class Sampled:
    """A fitted generator sampled with other settings: what Scorer reads of it, the fit unchanged."""

    def __init__(self, gen, settings: dict):
        self.gen, self.settings, self.config = gen, settings, gen.config

    def sample(self, labels, seed: int = 0) -> torch.Tensor:
        return self.gen.sample(labels, seed=seed, **self.settings)


def gamma_of(width: float) -> float:
    """The power-EMA exponent whose averaging profile has relative standard deviation `width` (EDM2, eq. 3):
    sigma_rel = sqrt((g + 1) / ((g + 2)^2 (g + 3))), solved by bisection (decreasing in g)."""
    low, high = 0.01, 1e4
    for _ in range(200):
        g = (low + high) / 2
        low, high = (g, high) if math.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3))) > width else (low, g)
    return (low + high) / 2


class EMATracks:
    """Extra EMAs kept beside the library's during one fit. The library's decay at optimizer step s is
    (1 + s) / (10 + s) = 1 - 9 / (s + 10), a power EMA of exponent 8; a track of exponent g uses 1 - (g + 1) /
    (s + g + 2), capped at the fit's `ema_decay` like the library's. Installed by patching `ema_update` where the
    two step paths import it; each call is one optimizer step on the main rank."""

    def __init__(self, widths):
        import diffaug.diffusion.fastpath as fastpath
        import diffaug.diffusion.trainer as trainer

        self.widths, self.gammas = list(widths), [gamma_of(w) for w in widths]
        self.modules, self.original = (trainer, fastpath), trainer.ema_update
        self.tracks, self.step, self.cap = None, 0, diffaug.TrainConfig().ema_decay

    def update(self, ema, model, decay) -> None:
        if self.tracks is None:   # the first step: every track starts where the library's EMA does
            self.tracks = [copy.deepcopy(ema) for _ in self.gammas]
        self.original(ema, model, decay)
        self.step += 1
        for gamma, track in zip(self.gammas, self.tracks):
            d = min(1 - (gamma + 1) / (self.step + gamma + 2), self.cap)
            self.original(track, model, torch.tensor(d, dtype=torch.float64))

    def __enter__(self):
        for module in self.modules:
            module.ema_update = self.update
        return self

    def __exit__(self, *exc):
        for module in self.modules:
            module.ema_update = self.original

    def generators(self, gen: diffaug.Generator):
        """(width, Generator) for every track: `gen`'s config and training hashes with the track's weights."""
        for width, track in zip(self.widths, self.tracks or []):
            net = copy.deepcopy(gen.model)
            net.load_state_dict(track.state_dict())
            yield width, diffaug.Generator(net.float(), gen.config, gen.data_hashes)


def flat_pixels(x: torch.Tensor) -> np.ndarray:
    return x.reshape(len(x), -1).float().numpy() / 255.0


def logistic_accuracy(train_x, train_y, val_x, val_y) -> float:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=500).fit(flat_pixels(train_x), train_y.numpy())
    return float((model.predict(flat_pixels(val_x)) == val_y.numpy()).mean())


class Scorer:
    """Everything fixed across fits: the real images per class, the validation split, the reference network."""

    def __init__(self, pool: diffaug.ImageData, validation: diffaug.ImageData, per_class: int):
        from diffaug.classify.training import random_batches, train_classifier
        from diffaug.evaluation.metrics import cas

        self.pool, self.val, self.per_class = pool, validation, per_class
        real = pool.subset(per_class=per_class, seed=0)
        self.real_logistic = logistic_accuracy(real.images, real.labels, validation.images, validation.labels)
        self.real_cnn = cas(real.images, real.labels, validation.images, validation.labels,
                            num_classes=pool.num_classes, steps=400)
        self.reference = train_classifier(random_batches(pool.images, pool.labels, 128, seed=0), pool.channels,
                                          pool.num_classes, steps=1000, seed=0)
        self.val_features = self.embed(validation.images)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        from diffaug.classify.training import embed

        return embed(self.reference, images, "cpu")

    def score(self, gen: diffaug.Generator, seed: int) -> dict:
        from diffaug.evaluation.metrics import cas, fid_own, memorization, precision_recall

        labels = torch.arange(self.pool.num_classes).repeat_interleave(self.per_class)
        t0 = time.perf_counter()
        images = gen.sample(labels.tolist(), seed=seed)
        sample_seconds = time.perf_counter() - t0
        logistic = logistic_accuracy(images, labels, self.val.images, self.val.labels)
        cnn = cas(images, labels, self.val.images, self.val.labels, num_classes=self.pool.num_classes, steps=400)
        features = self.embed(images)
        precision, recall = precision_recall(self.val_features, features, real_labels=self.val.labels,
                                             fake_labels=labels, max_samples=2000)
        return {"cas_logistic": logistic / self.real_logistic, "cas_cnn": cnn / self.real_cnn,
                "fid_own": fid_own(self.val_features, features), "precision": precision, "recall": recall,
                "memorization": memorization(images, self.pool.images)["rate"],
                "sample_seconds": round(sample_seconds, 1)}


def interval(values) -> str:
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return f"{v.mean():.3f}"
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return f"{v.mean():.3f} [{v.mean() - half:.3f}, {v.mean() + half:.3f}]"


METRICS = ("cas_logistic", "cas_cnn", "fid_own", "precision", "recall", "memorization")


def table(payload: dict) -> str:
    rows = payload["fits"]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    minutes = sorted({r["minutes"] for r in rows})
    lines = [f"# Quality per CPU-minute: {payload['data']}", "",
             f"`{payload['command']}` on {payload['cpu']}. Validation: {payload['validation']}. {payload['per_class']} "
             "samples per class against as many real images per class. Mean over seeds [95% t-interval]; the "
             "difference column pairs each seed with the first variant's.", "",
             "| minutes | variant | seeds | steps | " + " | ".join(METRICS) + " | CAS logistic - first | "
             "CAS CNN - first | FID - first |", "|" + "---|" * (7 + len(METRICS))]
    for m in minutes:
        first = {r["seed"]: r for r in rows if r["minutes"] == m and r["variant"] == variants[0]}
        for name in variants:
            mine = [r for r in rows if r["minutes"] == m and r["variant"] == name]
            if not mine:
                continue
            paired = [(r, first[r["seed"]]) for r in mine if r["seed"] in first]
            diffs = [interval([r[key] - f[key] for r, f in paired]) if paired and name != variants[0] else ""
                     for key in ("cas_logistic", "cas_cnn", "fid_own")]
            lines.append(f"| {m:g} | {name} | {len(mine)} | {np.mean([r['steps'] for r in mine]):.0f} | "
                         + " | ".join(interval([r[key] for r in mine]) for key in METRICS)
                         + " | " + " | ".join(diffs) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--minutes", default="3", help="comma-separated wall-clock budgets")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--variants", default="flat-lr,default")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--ema-widths", default="", help="extra EMA tracks kept during `default` fits, e.g. "
                        "0.05,0.15 (relative widths; the library's is 0.09)")
    parser.add_argument("--sampling", default="", help="sampling settings every library fit is also scored with, "
                        "e.g. guidance=1,guidance=3,steps=40")
    parser.add_argument("--name", default=None, help="results file name (default: quality_per_minute_DATA)")
    args = parser.parse_args()
    sampling = sampling_settings(args.sampling)
    pool, validation = diffaug.load_data(args.data, "train").split(1 - VALIDATION_SHARE, seed=1)
    scorer = Scorer(pool, validation, args.per_class)
    payload = {"data": args.data, "cpu": cpu_model(), "command": "python benchmarks/" + " ".join(
        [Path(sys.argv[0]).name, *sys.argv[1:]]), "per_class": args.per_class,
               "validation": f"{VALIDATION_SHARE:.0%} of the training pool, stratified, seed 1",
               "real": {"logistic": scorer.real_logistic, "cnn": scorer.real_cnn}, "fits": []}
    for minutes in (float(m) for m in args.minutes.split(",")):
        for seed in range(args.seeds):
            for name in args.variants.split(","):   # variants interleaved per seed: drift hits them alike
                widths = [float(w) for w in args.ema_widths.split(",") if w] if name == "default" else []
                with variant(name) as options, EMATracks(widths) as tracks:
                    lr = anchor_lr(name)
                    gen = (DiffusersAnchor(pool, args.preset, minutes, seed, lr) if lr is not None else
                           diffaug.fit(pool, args.preset, minutes=minutes, seed=seed, progress=False, **options))
                train = gen.config["train"]
                scored_as = ([(name, gen)] + [(f"{name}+ema{w:g}", g) for w, g in tracks.generators(gen)]
                             + [(f"{name}@{label}", Sampled(gen, kw)) for label, kw in sampling if lr is None])
                for label, scored in scored_as:
                    row = {"variant": label, "minutes": minutes, "seed": seed, "steps": train["steps"],
                           "fit_seconds": train["seconds"], "lr_end": train.get("lr_end"),
                           **scorer.score(scored, seed)}
                    payload["fits"].append(row)
                    print(row, flush=True)
                    write_results(args.name or f"quality_per_minute_{args.data}", payload, table(payload))


if __name__ == "__main__":
    main()
