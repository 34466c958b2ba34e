"""Bad input at every public entry point, drawn by hypothesis: each call must give a valid result or raise a
diffaug error whose message names the problem (never a traceback from inside torch, numpy, PIL or datasets).

Shared by tests/test_fuzz.py (a few dozen examples per entry point, in the suite) and benchmarks/fuzz.py (500 per
entry point, results committed). Valid draws run for real, so sizes that cost time (steps, images) are drawn small;
huge sizes are drawn too and must be refused up front, not attempted.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import diffaug
from diffaug.errors import DiffaugError

HUGE = [2 ** 31, 2 ** 40, 2 ** 63, 2 ** 70, 10 ** 12]
DTYPES = [np.uint8, np.int8, np.int16, np.int64, np.uint16, np.float16, np.float32, np.float64, np.bool_]

small_ints = st.one_of(st.integers(-2, 4), st.sampled_from(HUGE), st.sampled_from([-(2 ** 63), -(10 ** 12)]))
any_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 0.3, 0.5, 1.0, 1.5, -0.2]))
unit_floats = st.one_of(st.floats(-0.5, 1.5), st.sampled_from([float("nan"), float("inf"), 0.0, 1.0]))
names = st.one_of(st.text(max_size=12), st.sampled_from(["image", "label", "pixel_values", "", "img"]))


def arrays(max_dims=5, max_side=10):
    return st.one_of(
        hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0,
                                                            max_side=max_side),
                   elements=None),
        st.sampled_from([np.zeros((3, 8, 8), np.uint8), np.full((2, 8, 8, 1), np.nan, np.float32),
                         np.full((2, 1, 8, 8), np.inf), np.zeros((0, 8, 8), np.uint8)]))


def image_batches(n=st.integers(0, 5)):
    """Image batches near the fixtures' 1x8x8 (odd sizes, channel counts, layouts, dtypes, NaN) and anything."""
    shapes = st.one_of(
        st.tuples(n, st.sampled_from([1, 3, 4, 2]), st.sampled_from([8, 7, 9, 1]), st.sampled_from([8, 16, 3])),
        st.tuples(n, st.sampled_from([8, 5]), st.sampled_from([8, 5]), st.sampled_from([1, 3])),
        st.tuples(n, st.sampled_from([8]), st.sampled_from([8])))
    valid = hnp.arrays(np.uint8, st.tuples(st.integers(1, 4), st.just(1), st.just(8), st.just(8)))
    return st.one_of(valid, hnp.arrays(st.sampled_from(DTYPES), shapes), arrays())


def labels_like():
    return st.one_of(
        st.lists(st.one_of(st.integers(-2, 5), st.sampled_from(["shape0", "shape3", "nope", ""]),
                           st.floats(allow_nan=True), st.none()), max_size=6),
        hnp.arrays(st.sampled_from([np.int64, np.float32, np.uint8, np.bool_]),
                   hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=6)),
        st.integers(-2, 5), st.sampled_from(["shape1", "cat", None]), st.sampled_from(HUGE))


class Fixtures:
    """What the entry points are called with: small real data, a generator fitted for a few steps, a bank."""

    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="diffaug-fuzz-"))
        self.data = _shapes()
        # fitted on the half that evaluate(self.data) trains on (its leakage guard refuses a generator that saw
        # the other half, which evaluate tests on)
        train_half = self.data.split(0.5, seed=0)[0]
        self.gen = diffaug.fit(train_half, "tiny", 3, device="cpu", batch_size=8, progress=False, seed=0)
        self.gen_file = self.tmp / "gen.safetensors"
        self.gen.save(self.gen_file)
        self.data_file = self.tmp / "data.npz"
        self.data.to_npz(self.data_file)
        self.bank = diffaug.SampleBank.build(self.gen, self.tmp / "bank", per_class=2, data=self.data, copies=1,
                                             steps=2, progress=False)
        self.count = 0

    def path(self, suffix="") -> Path:
        self.count += 1
        return self.tmp / f"case{self.count}{suffix}"


def _shapes() -> diffaug.ImageData:
    """12 images of each of 4 classes, 1x8x8: a disc, a square, a bar, a ring at random places."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:8, 0:8]
    images, labels = [], []
    for k in range(4):
        for _ in range(12):
            cy, cx, r = rng.uniform(3, 5), rng.uniform(3, 5), rng.uniform(1.5, 3)
            d = np.hypot(yy - cy, xx - cx) / r
            mask = [d < 1, np.maximum(abs(yy - cy), abs(xx - cx)) < r * 0.8, abs(yy - cy) < 1, abs(d - 0.8) < 0.3][k]
            images.append((mask * rng.uniform(150, 255)).astype(np.uint8)[..., None])
            labels.append(k)
    return diffaug.ImageData.from_arrays(np.stack(images), np.array(labels), [f"shape{k}" for k in range(4)])


# --- entry points: name -> (strategy, call(fx, value)); call returns nothing or checks its result ------------

TARGETS: dict = {}


def target(name, strategy):
    def register(fn):
        TARGETS[name] = (strategy, fn)
        return fn
    return register


def _matched(n):   # n images with n labels: a draw that is often valid
    return st.tuples(hnp.arrays(st.sampled_from([np.uint8, np.float32]), st.tuples(st.just(n), st.sampled_from([8, 9]),
                                                                                  st.sampled_from([8, 1]))),
                     st.lists(st.integers(-1, 3), min_size=n, max_size=n),
                     st.one_of(st.none(), st.lists(st.text(max_size=5), max_size=6)))


@target("ImageData.from_arrays", st.one_of(
    st.integers(1, 5).flatmap(_matched),
    st.tuples(st.one_of(image_batches(), arrays()),
              st.one_of(st.lists(st.integers(0, 3), min_size=1, max_size=5), arrays(max_dims=2), labels_like()),
              st.one_of(st.none(), st.lists(st.text(max_size=5), max_size=6)))))
def _from_arrays(fx, v):
    images, labels, class_names = v
    d = diffaug.ImageData.from_arrays(images, labels, class_names)
    assert d.images.dtype == torch.uint8 and d.images.ndim == 4 and len(d) == len(d.labels) > 0


@target("load_data", st.one_of(
    st.tuples(st.just("npz"), arrays(), st.one_of(arrays(max_dims=2), labels_like())),
    st.tuples(st.just("bytes"), st.binary(max_size=300), st.sampled_from([".npz", ".png", "", ".arrow"])),
    st.tuples(st.just("name"), st.text(max_size=20), st.sampled_from(["train", "test", "all", "validation", ""]))))
def _load_data(fx, v):
    kind, a, b = v
    if kind == "npz":
        path = fx.path(".npz")
        with open(path, "wb") as f:
            np.savez(f, images=a, labels=np.asarray(b, dtype=object) if isinstance(b, list) else b)
        d = diffaug.load_data(path)
    elif kind == "bytes":
        path = fx.path(b)
        path.write_bytes(a)
        d = diffaug.load_data(path)
    else:
        if a in ("digits", "fashion-mnist"):
            return   # real built-ins: valid, and not what this fuzzes
        d = diffaug.load_data(a, b)
    assert len(d) > 0


@target("fit", st.fixed_dictionaries({}, optional={
    "steps": st.integers(-2, 3), "batch_size": st.one_of(st.integers(-2, 9), st.sampled_from(HUGE)),
    "lr": any_floats, "ema_decay": any_floats, "label_dropout": unit_floats, "warmup": small_ints,
    "grad_clip": any_floats, "weight_decay": any_floats, "min_snr_gamma": st.one_of(st.none(), any_floats),
    "minutes": st.one_of(st.none(), any_floats), "seed": small_ints, "checkpoint_every": small_ints,
    "preset": st.sampled_from(["tiny", "Tiny", "huge", ""]), "schedule": st.sampled_from(["cosine", "linear", "x"]),
    "prediction": st.sampled_from(["v", "eps", "x0", "y"]), "hflip": st.sampled_from([True, False, "yes"]),
    "bogus_option": st.integers()}))
def _fit(fx, options):
    options = {"steps": 2, "batch_size": 8, **options}
    gen = diffaug.fit(fx.data, device="cpu", progress=False, **options)
    assert all(torch.isfinite(p).all() for p in gen.model.parameters())


sample_options = st.fixed_dictionaries({}, optional={
    "steps": small_ints, "sampler": st.sampled_from(["dpmpp_2m", "ddim", "ddpm", "euler", ""]),
    "spacing": st.sampled_from([None, "time", "logsnr", "karras", "log"]), "guidance": any_floats,
    "seed": small_ints, "batch_size": small_ints})


@target("Generator.sample", st.tuples(st.one_of(st.none(), labels_like()),
                                      st.one_of(st.none(), small_ints), sample_options))
def _sample(fx, v):
    labels, per_class, options = v
    options = {"steps": 2, **options}
    x = fx.gen.sample(labels, per_class=per_class, **options)
    assert x.dtype == torch.uint8 and x.shape[1:] == (1, 8, 8)


@target("Generator.perturb", st.tuples(image_batches(), st.one_of(st.none(), labels_like()),
                                       st.one_of(st.floats(0.05, 1.0), unit_floats),
                                       sample_options))
def _perturb(fx, v):
    images, labels, strength, options = v
    options = {"steps": 2, **options}
    x = fx.gen.perturb(images, labels, strength=strength, **options)
    assert x.dtype == torch.uint8 and x.shape[1:] == (1, 8, 8)


def _pil_or_tensor():
    return st.one_of(
        st.builds(lambda a: torch.from_numpy(np.ascontiguousarray(a)), image_batches().map(lambda a: a[0] if a.ndim
                                                                                          and len(a) else a)),
        st.builds(lambda mode, size: __import__("PIL.Image").Image.new(mode, size),
                  st.sampled_from(["L", "RGB", "RGBA", "1", "F"]), st.tuples(st.integers(1, 9), st.integers(1, 9))))


augment_options = st.fixed_dictionaries({}, optional={
    "p": unit_floats, "mode": st.sampled_from(["synthesize", "perturb", "mix", "other"]), "mix": unit_floats,
    "strength": st.one_of(unit_floats, st.tuples(unit_floats, unit_floats)), "steps": small_ints,
    "guidance": any_floats, "sampler": st.sampled_from(["dpmpp_2m", "ddim", "nope"])})


@target("DiffusionAugment", st.tuples(st.booleans(), augment_options, _pil_or_tensor(),
                                      st.one_of(st.none(), labels_like())))
def _tv_augment(fx, v):
    use_bank, options, image, label = v
    options = {"steps": 2, **options}
    aug = diffaug.DiffusionAugment(fx.bank if use_bank else fx.gen, **options)
    out = aug(image) if label is None else aug(image, label)
    assert out is not None


@target("AlbumentationsDiffusionAugment", st.tuples(st.booleans(), augment_options, image_batches(),
                                                    st.one_of(st.none(), labels_like())))
def _albu_augment(fx, v):
    from diffaug.adapters.albumentations import AlbumentationsDiffusionAugment

    use_bank, options, images, label = v
    options = {"steps": 2, **options}
    aug = AlbumentationsDiffusionAugment(fx.bank if use_bank else fx.gen, **options)
    img = images[0] if images.ndim == 4 and len(images) else images
    out = aug(image=img) if label is None else aug(image=img, class_label=label)
    assert out["image"].shape == img.shape


@target("SampleBank", st.one_of(
    st.tuples(st.just("build"), st.fixed_dictionaries({}, optional={
        "per_class": small_ints, "copies": small_ints, "steps": st.integers(-1, 3), "seed": small_ints,
        "strength": st.one_of(unit_floats, st.tuples(unit_floats, unit_floats)), "guidance": any_floats,
        "batch_size": small_ints}), st.sampled_from(["data", "none", "other-size"])),
    st.tuples(st.just("open"), st.dictionaries(st.sampled_from(["bank.json", "synthetic.npy", "x"]),
                                               st.binary(max_size=200), max_size=3), st.none())))
def _bank(fx, v):
    kind, a, b = v
    if kind == "open":
        path = fx.path()
        path.mkdir()
        for name, content in a.items():
            (path / name).write_bytes(content)
        diffaug.SampleBank(path)
        return
    data = {"data": fx.data, "none": None,
            "other-size": diffaug.ImageData.from_arrays(np.zeros((4, 9, 9), np.uint8), [0, 1, 2, 3])}[b]
    options = {"per_class": 1, "steps": 2, **a}
    bank = diffaug.SampleBank.build(fx.gen, fx.path(), data=data, progress=False, **options)
    assert bank.meta["synthetic_count"] == 4 * options["per_class"]


def _hf(fx):
    if not hasattr(fx, "ds"):
        from diffaug.hf import to_hf_dataset
        fx.ds = to_hf_dataset(fx.data.subset(per_class=3, seed=0))
    return fx.ds


@target("expand_dataset/perturb_dataset", st.tuples(
    st.sampled_from(["expand", "perturb"]),
    st.one_of(st.none(), small_ints, st.dictionaries(st.one_of(st.integers(-1, 5), st.text(max_size=6)),
                                                     small_ints, max_size=3)),
    st.fixed_dictionaries({}, optional={
        "ratio": st.one_of(st.none(), any_floats), "image_column": names, "label_column": names,
        "batch_size": small_ints, "steps": st.integers(-1, 3), "seed": small_ints, "guidance": any_floats,
        "num_shards": small_ints, "shard_index": small_ints, "copies": small_ints, "strength": unit_floats})))
def _expand(fx, v):
    from diffaug.hf import expand_dataset, perturb_dataset

    kind, per_class, options = v
    options = {"steps": 2, **options}
    with contextlib.redirect_stderr(io.StringIO()):
        if kind == "expand":
            options.pop("copies", None), options.pop("strength", None)
            out = expand_dataset(_hf(fx), fx.gen, per_class, progress=False, **options)
        else:
            options.pop("ratio", None)
            out = perturb_dataset(_hf(fx), fx.gen, progress=False, **options)
    assert len(out) >= 0


@target("evaluate", st.fixed_dictionaries({}, optional={
    "per_class": st.lists(st.integers(-1, 14), min_size=0, max_size=2), "seeds": st.integers(-1, 2),
    "arms": st.lists(st.sampled_from(["real", "classical", "synthesize", "perturb", "classical+synthesize", "x"]),
                     max_size=4),
    "classical": st.sampled_from(["crop", "trivialaugment", "randaugment", "autoaugment", "none"]),
    "classifier_steps": st.integers(-1, 3), "classifier_budget": st.one_of(st.none(), any_floats),
    "batch_size": st.integers(-1, 9), "synthetic_share": any_floats,
    "synthetic_per_class": st.integers(-1, 3), "perturb_copies": st.integers(-1, 2),
    "strength": st.one_of(unit_floats, st.tuples(unit_floats, unit_floats)), "guidance": any_floats,
    "sample_steps": st.integers(-1, 3), "filter_confidence": st.one_of(st.none(), unit_floats),
    "primary": st.sampled_from([None, "synthesize", "perturb", "real", "y"]),
    "metrics": st.booleans(), "cas_steps": st.integers(-1, 3), "reference_steps": st.integers(-1, 3),
    "gen_steps": st.integers(-1, 3), "preset": st.sampled_from(["tiny", "nope"]), "given": st.booleans()}))
def _evaluate(fx, options):
    given = options.pop("given", True)
    options = {"per_class": [3], "seeds": 1, "classifier_steps": 2, "sample_steps": 2, "synthetic_per_class": 2,
               "perturb_copies": 1, "gen_steps": 2, "cas_steps": 2, "reference_steps": 2, "metrics": False, **options}
    result = diffaug.evaluate(fx.data, gen=fx.gen if given else None, device="cpu", progress=False, **options)
    assert len(result.units) == len(set(result.config["per_class"])) * result.config["seeds"]


def _argv():
    value = st.one_of(st.sampled_from(["0", "-1", "2", "1e9", "nan", "x", "", "3,4", "all"]), st.text(max_size=6))
    common = ["--seed", "--device", "--bogus"]
    flags = {"fit": ["--steps", "--batch-size", "--preset", "--lr", "--minutes", "--split", "--checkpoint-every"],
             "sample": ["--steps", "--per-class", "--guidance", "--sampler", "--batch-size", "--spacing"],
             "expand": ["--per-class", "--ratio", "--mode", "--copies", "--strength", "--num-shards", "--shard-index",
                        "--steps", "--batch-size", "--image-column", "--label-column"],
             "evaluate": ["--per-class", "--seeds", "--arms", "--classifier-steps", "--strength", "--guidance",
                          "--synthetic-share", "--primary", "--classical"],
             "info": [], "demo": [], "nope": [], "": []}

    def command(name):   # mostly the command's own flags, so that many draws get past argparse
        pairs = st.lists(st.tuples(st.sampled_from(flags[name] + common), value), max_size=3)
        return st.tuples(st.just(name), st.sampled_from(["data", "gen", "missing", "digits", "-"]),
                         st.one_of(st.just([]), pairs))
    return st.sampled_from(sorted(flags)).flatmap(command)


@target("cli", _argv())
def _cli(fx, v):
    from diffaug.cli import main

    command, positional, pairs = v
    pos = {"data": str(fx.data_file), "gen": str(fx.gen_file), "missing": str(fx.tmp / "missing")}.get(positional,
                                                                                                        positional)
    argv = [command, pos] + [x for pair in pairs for x in pair]
    out = str(fx.path(".npz" if command == "sample" else ""))
    # what keeps a valid draw cheap; a drawn flag given twice overrides these (argparse: the last one wins)
    cheap = {"fit": ["--steps", "2", "--out", out], "sample": ["--per-class", "1", "--steps", "2", "--out", out],
             "expand": ["--gen", str(fx.gen_file), "--per-class", "1", "--steps", "2", "--out", out],
             "evaluate": ["--gen", str(fx.gen_file), "--per-class", "2", "--seeds", "1", "--classifier-steps", "2",
                          "--sample-steps", "2", "--synthetic-per-class", "2", "--no-metrics", "--out", out],
             "demo": ["--out", str(fx.tmp)]}.get(command, [])
    argv = [argv[0], argv[1], *cheap, *argv[2:], "--quiet"] if cheap else argv
    argv = [a for a in argv if not (command == "demo" and a == pos)]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except SystemExit as e:   # argparse: a usage line and "error: ..." on stderr, exit status 2
        assert e.code in (0, 2) and ("error:" in stderr.getvalue() or e.code == 0), stderr.getvalue()
        return REFUSED if e.code else None
    assert code in (0, 2), code
    if code == 2:
        assert "diffaug: error: " in stderr.getvalue() and "Traceback" not in stderr.getvalue(), stderr.getvalue()
        return REFUSED


# --- running ------------------------------------------------------------------------------------------------

REFUSED = "refused"   # what an entry point that reports errors itself (the CLI) returns for a clean refusal


class Tally:
    def __init__(self):
        self.valid = self.refused = 0


def check(fn, fx, value, tally: Tally | None = None) -> None:
    """Call one entry point; a DiffaugError with a message is a refusal, anything else (but a valid result) fails."""
    try:
        outcome = fn(fx, value)
    except DiffaugError as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        if tally:
            tally.refused += 1
        return
    except AssertionError:
        raise
    except Exception as e:   # noqa: BLE001 - the point: nothing else may escape
        raise AssertionError(f"{type(e).__module__}.{type(e).__name__}: {str(e)[:300]}") from e
    if tally:
        if outcome is REFUSED:
            tally.refused += 1
        else:
            tally.valid += 1


def run(name: str, fx, examples: int, tally: Tally | None = None, seed: int | None = None) -> None:
    """Fuzz one entry point with `examples` draws (raises hypothesis's shrunk failure)."""
    strategy, fn = TARGETS[name]
    from hypothesis import seed as hseed

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def prop(value):
        check(fn, fx, value, tally)

    (hseed(seed)(prop) if seed is not None else prop)()
