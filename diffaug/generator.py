"""The fitted artifact: config + EMA weights, with `sample`, `perturb`, `save`, `load`, and `fit` to make one."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from .data import ImageData, _to_uint8_nchw, load_data
from .diffusion.objectives import to_x0
from .diffusion.samplers import get_sampler
from .diffusion.schedules import alpha_sigma, get_schedule, timesteps
from .diffusion.trainer import TrainConfig, Trainer, autocast, prepare_model, resolve_device, to_unit
from .diffusion.unet import UNet, UNetConfig, get_preset
from .errors import DataError, GeneratorFileError, MismatchError, first_line
from .io import atomic_path

FORMAT = "diffaug.generator"
FORMAT_VERSION = 1
METADATA_KEY = "diffaug"
HASHES_KEY = "diffaug.data_hashes"   # a uint8 (N, 8) tensor beside the weights: hashes of the training images
# Default step placement per sampler, from benchmarks/sampler_steps.py (digits, own-feature FID against 250-step
# ancestral sampling): DPM-Solver++(2M) on EDM's rho=7 ramp is within noise of it at 10 steps and below it at 20
# (evenly in time: +39% at 20); DDIM and DDPM do best evenly in time.
SPACING = {"dpmpp_2m": "karras", "ddim": "time", "ddpm": "time"}
# The sampling defaults of every way to draw from a generator (Generator.sample/perturb, DiffusionAugment, the
# albumentations transform, SampleBank, the HF adapters, the CLI): sampler steps and classifier-free guidance.
# The evaluation samples with its own (EvalConfig: guidance 1, 10 steps, chosen on digits).
SAMPLE_STEPS, GUIDANCE = 20, 2.0


class Generator:
    """A class-conditional diffusion model fitted to one dataset; generates uint8 images of that dataset's size."""

    def __init__(self, model: UNet, config: dict, data_hashes: np.ndarray | None = None):
        self.model = model.eval().requires_grad_(False)
        self.config = config
        self.data_hashes = data_hashes   # uint8 (N, 8): one hash per training image (ImageData.image_hashes)
        self.device = next(model.parameters()).device
        self._schedule = get_schedule(config["schedule"])
        self.fast = True        # on CUDA, replay the network as CUDA graphs while sampling (False: eager)
        self._graphed = None

    # --- what it is -------------------------------------------------------------------------------

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.config["image_size"])

    @property
    def channels(self) -> int:
        return self.config["channels"]

    @property
    def class_names(self) -> list[str]:
        return list(self.config["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.config["class_names"])

    @property
    def fingerprint(self) -> str:
        """Identifies these weights (not the data): banks and expanded datasets record it."""
        return self.config["fingerprint"]

    def __repr__(self) -> str:
        h, w = self.image_size
        return (f"Generator({self.config['preset']}, {self.channels}x{h}x{w}, {self.num_classes} classes, "
                f"{self.config['train']['steps']} steps, fingerprint {self.fingerprint})")

    def to(self, device) -> "Generator":
        self.model = prepare_model(self.model, resolve_device(device))
        self.device = next(self.model.parameters()).device
        self._graphed = None
        return self

    # --- generation -------------------------------------------------------------------------------

    def class_index(self, labels) -> torch.Tensor:
        """Labels as class indices (ints or class names), checked against this generator's classes."""
        if isinstance(labels, (int, np.integer, str)):
            labels = [labels]
        if isinstance(labels, torch.Tensor):
            labels = labels.reshape(-1).tolist()
        else:
            labels = list(np.asarray(labels).reshape(-1).tolist()) if not isinstance(labels, list) else labels
        names = {n: i for i, n in enumerate(self.class_names)}
        out = []
        for y in labels:
            if isinstance(y, str):
                if y not in names:
                    raise MismatchError(f"unknown class name {y!r}; this generator knows {self.class_names}")
                y = names[y]
            if not is_number(y) or not float(y).is_integer():
                raise MismatchError(f"labels must be class indices or class names, got {y!r}")
            y = int(y)
            if not 0 <= y < self.num_classes:
                raise MismatchError(f"label {y} is not a class of this generator (classes 0..{self.num_classes - 1})")
            out.append(y)
        return torch.tensor(out, dtype=torch.long)

    def check_images(self, images) -> torch.Tensor:
        """uint8 (N,C,H,W) images of this generator's size and channels, or a clear error."""
        x = _to_uint8_nchw(images)
        if x.shape[1] != self.channels or tuple(x.shape[2:]) != self.image_size:
            h, w = self.image_size
            raise MismatchError(
                f"images are {x.shape[1]}x{x.shape[2]}x{x.shape[3]} (CxHxW) but the generator makes "
                f"{self.channels}x{h}x{w}; resize them first (e.g. torchvision v2.Resize(({h}, {w})) "
                f"and v2.Grayscale/RGB conversion) or fit a generator at this size")
        return x

    def denoiser(self, labels: torch.Tensor | None, guidance: float = GUIDANCE):
        """x0-predicting callable for the samplers; classifier-free guidance in ONE batched forward pass.

        guidance w: x0 = x0_null + w (x0_cond - x0_null); w = 1 is plain conditional, labels=None unconditional.
        """
        null = self.num_classes
        prediction = self.config["prediction"]

        def denoise(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            n = z.shape[0]
            tt = torch.full((n,), float(t), device=z.device)   # t is a host scalar: a fill, not a copy and a sync
            if labels is None or guidance == 1.0:
                y = labels if labels is not None else torch.full((n,), null, device=z.device)
                out = self._net(z, tt, y)
            else:
                both = self._net(torch.cat([z, z]), torch.cat([tt, tt]),
                                 torch.cat([labels, torch.full_like(labels, null)]))
                cond, uncond = both.chunk(2)
                out = uncond + guidance * (cond - uncond)   # linear in the output: same as guiding x0 or eps
            x0 = to_x0(out, z, self._schedule(tt.double()).float(), prediction)
            return x0.clamp(-1.0, 1.0)   # static thresholding: x0 lies in the data range

        return denoise

    def _net(self, z, t, y):
        if self.device.type == "cuda" and self.fast:   # one CUDA-graph replay per network call (fastpath.py)
            if self._graphed is None:
                from .diffusion.fastpath import GraphedForward
                self._graphed = GraphedForward(self._forward)
            return self._graphed(z, t, y)
        return self._forward(z, t, y)

    def _forward(self, z, t, y):
        with autocast(self.device):
            return self.model(z, t, y).float()

    @torch.no_grad()
    def _generate(self, labels: torch.Tensor | None, start: torch.Tensor | None, *, n: int, t_start: float,
                  steps: int, sampler: str, spacing: str, guidance: float, seed: int, batch_size: int, progress,
                  desc: str) -> torch.Tensor:
        _check_generation(self, n, steps, sampler, guidance, seed, batch_size)
        sample_fn = get_sampler(sampler)
        rng = torch.Generator().manual_seed(int(seed))   # CPU generator: same noise on every device
        c, (h, w) = self.channels, self.image_size
        ts = timesteps(steps, t_start, 0.0, schedule=self._schedule, spacing=spacing or SPACING.get(sampler, "time"))
        alpha, sigma = (float(a) for a in alpha_sigma(self._schedule(ts[:1])))
        out = torch.empty((n, c, h, w), dtype=torch.uint8)
        # progress=None: a bar only for multi-batch work on a terminal (tqdm's disable=None)
        quiet = (not progress) if progress is not None else (None if n > batch_size else True)
        bar = tqdm(total=n, disable=quiet, desc=desc, unit="img", leave=False)
        with bar:
            for i in range(0, n, batch_size):
                j = min(n, i + batch_size)
                noise = torch.randn((j - i, c, h, w), generator=rng).to(self.device)
                noise = noise.contiguous(memory_format=torch.channels_last)   # the network's layout
                if start is None:
                    z = noise
                else:   # SDEdit: noise the images to t_start, then denoise (Meng et al. 2022)
                    z = alpha * to_unit(start[i:j].to(self.device)) + sigma * noise
                y = labels[i:j].to(self.device) if labels is not None else None
                x = sample_fn(self.denoiser(y, guidance), z, ts, self._schedule, generator=rng)
                out[i:j] = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
                bar.update(j - i)
        return out

    def sample(self, labels=None, *, per_class: int | None = None, steps: int = SAMPLE_STEPS,
               sampler: str = "dpmpp_2m", spacing: str | None = None, guidance: float = GUIDANCE, seed: int = 0,
               batch_size: int = 500, device=None, progress: bool | None = None) -> torch.Tensor:
        """New images of the given classes: uint8 (N,C,H,W) on the CPU.

        `labels` are class indices or names; `per_class=k` asks for k of every class instead.
        The result is a function of (labels, steps, sampler, spacing, guidance, seed, batch_size).
        `spacing` places the steps: "time" (even in t), "logsnr" or "karras" (see schedules.timesteps); None: the
        sampler's measured default (SPACING).
        """
        if (labels is None) == (per_class is None):
            raise DataError("pass either labels or per_class")
        if per_class is not None:
            per_class = whole_number(per_class, "per_class", low=0)
            check_output_size(self, per_class * self.num_classes)
            labels = torch.arange(self.num_classes).repeat_interleave(per_class)
        y = self.class_index(labels)
        if device is not None:
            self.to(device)
        return self._generate(y, None, n=len(y), t_start=1.0, steps=steps, sampler=sampler, spacing=spacing,
                              guidance=guidance, seed=seed, batch_size=batch_size, progress=progress, desc="sample")

    def perturb(self, images, labels=None, *, strength: float = 0.4, steps: int = SAMPLE_STEPS,
                sampler: str = "dpmpp_2m", spacing: str | None = None, guidance: float = GUIDANCE, seed: int = 0,
                batch_size: int = 500, device=None, progress: bool | None = None) -> torch.Tensor:
        """Variations of real images: noise them to t = strength, then denoise conditioned on their class.

        uint8 in, uint8 out (N,C,H,W). Without labels the null class is used (unconditional denoising).
        `steps` counts steps of a whole trajectory; a perturbation takes ceil(steps * strength) of them,
        as diffusers' img2img does.
        """
        if not is_number(strength) or not 0.0 < float(strength) <= 1.0:
            raise DataError(f"strength must lie in (0, 1], got {strength!r}")
        whole_number(steps, "steps", low=1, high=MAX_SAMPLER_STEPS)
        x = self.check_images(images)
        y = None
        if labels is not None:
            y = self.class_index(labels)
            if len(y) != len(x):
                raise DataError(f"{len(x)} images but {len(y)} labels")
        if device is not None:
            self.to(device)
        return self._generate(y, x, n=len(x), t_start=float(strength), steps=max(1, math.ceil(steps * strength)),
                              sampler=sampler, spacing=spacing, guidance=guidance, seed=seed,
                              batch_size=batch_size, progress=progress, desc="perturb")

    # --- files ------------------------------------------------------------------------------------

    def save(self, path, overwrite: bool = False) -> Path:
        """Write ONE .safetensors file: EMA weights, with the config as JSON in its metadata. Atomic."""
        from safetensors.torch import save_file

        with atomic_path(path, overwrite=overwrite) as tmp:   # refuses an existing file unless overwrite
            tensors = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            if self.data_hashes is not None:   # what evaluate's leakage guard compares test images against
                tensors[HASHES_KEY] = torch.from_numpy(np.ascontiguousarray(self.data_hashes))
            save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(self.config)})
        return Path(path)

    @classmethod
    def load(cls, path, device="cpu") -> "Generator":
        """Read a generator written by `save`. Never unpickles; refuses files that are not diffaug generators."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise GeneratorFileError(f"no such generator file: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:   # safetensors raises its own error types for bad headers / short files
            raise GeneratorFileError(f"{path} is not a readable safetensors file ({first_line(e)}); "
                                     "a generator is written by Generator.save or `diffaug fit`") from None
        if METADATA_KEY not in metadata:
            raise GeneratorFileError(f"{path} is a safetensors file but not a diffaug generator "
                                     "(its metadata has no diffaug config)")
        try:
            config = json.loads(metadata[METADATA_KEY])
            if config.get("format") != FORMAT:
                raise ValueError("wrong format tag")
            if config.get("format_version", 0) > FORMAT_VERSION:
                raise GeneratorFileError(f"{path} was written by a newer diffaug ({config.get('diffaug_version')}); "
                                         "upgrade diffaug to read it")
            hashes = tensors.pop(HASHES_KEY, None)
            model = UNet(config["channels"], len(config["class_names"]), UNetConfig.from_dict(config["unet"]))
            model.load_state_dict(tensors, strict=True)
            described = {k: v for k, v in config.items() if k != "fingerprint"}
            if config["fingerprint"] not in (_weights_fingerprint(model, described),
                                             _weights_fingerprint(model, described, wall_clock=True)):
                raise GeneratorFileError(f"{path} is damaged: its weights or config do not match the fingerprint "
                                         "written with them")
        except GeneratorFileError:
            raise
        except Exception as e:
            raise GeneratorFileError(f"{path} has a damaged diffaug config or weights ({str(e)[:200]})") from None
        return cls(prepare_model(model, resolve_device(device)), config,
                   hashes.numpy() if hashes is not None else None)


MAX_SAMPLER_STEPS = 10_000


def is_number(x) -> bool:
    """A real number (Python or numpy), not a bool."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def whole_number(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int within [low, high], or a DataError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise DataError(f"{name} must lie in {low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
                        f", got {value}")
    return value


def check_output_size(gen: "Generator", n: int) -> None:
    """Refuse, before any work, an output that cannot fit in this machine's memory."""
    c, (h, w) = gen.channels, gen.image_size
    need = n * c * h * w
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):   # not a POSIX system: no check
        return
    if need > have:
        raise DataError(f"{n:,} images of {c}x{h}x{w} need {need / 2**30:,.1f} GiB, more than this machine's "
                        f"{have / 2**30:,.1f} GiB of memory; generate in parts (e.g. expand_dataset's num_shards)")


def check_seed(seed) -> None:
    """A seed torch.Generator takes: a whole number in -2**63..2**64-1."""
    whole_number(seed, "seed", low=-(2 ** 63), high=2 ** 64 - 1)


def check_sampling(steps, sampler, guidance) -> None:
    """The sampling options every entry point takes, checked before any work."""
    whole_number(steps, "steps", low=1, high=MAX_SAMPLER_STEPS)
    get_sampler(sampler)
    if not is_number(guidance) or not 0 <= guidance < math.inf:
        raise DataError(f"guidance must be a finite number >= 0, got {guidance!r}")


def _check_generation(gen: "Generator", n: int, steps, sampler, guidance, seed, batch_size) -> None:
    check_sampling(steps, sampler, guidance)
    whole_number(batch_size, "batch_size", low=1)
    check_seed(seed)
    check_output_size(gen, n)


def fit(data="digits", preset: str = "tiny", steps: int | None = None, *, minutes: float | None = None,
        device="auto", seed: int = 0, out_dir=None, resume: bool = False, progress: bool = True,
        distributed: bool | None = None, timeout_s: float = 300, **options) -> Generator:
    """Fit a class-conditional diffusion generator to `data` (ImageData, a built-in name or a path).

    `options` are further `TrainConfig` fields (batch_size, lr, ema_decay, label_dropout, schedule,
    prediction, min_snr_gamma, hflip, checkpoint_every, compile, warmup, ...). With `out_dir`,
    checkpoints are written there every `checkpoint_every` steps, and `resume=True` continues from one.

    Under torchrun the fit is data-parallel over the launch's ranks (`distributed=None` detects it; True
    insists, False fits in this process alone): `batch_size` is the global batch, rank 0 writes the
    checkpoints, and every rank returns the same generator. A collective that waits `timeout_s` seconds
    for a lost rank fails the run.
    """
    data = load_data(data) if not isinstance(data, ImageData) else data
    unknown = set(options) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise DataError(f"unknown training option(s) {sorted(unknown)}; see diffaug.TrainConfig")
    cfg = TrainConfig(preset=preset, steps=steps, minutes=minutes, seed=seed, **options)
    trainer = Trainer(data, cfg, device=device, out_dir=out_dir, progress=progress, distributed=distributed,
                      timeout_s=timeout_s)
    try:
        if resume:
            trainer.load_checkpoint()
        summary = trainer.run()
    finally:
        trainer.close()
    cfg = trainer.cfg   # with the defaults it resolved (batch size by device)
    ema = trainer.ema.float()
    config = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "diffaug_version": __version__,
        "image_size": list(data.size), "channels": data.channels, "class_names": data.class_names,
        "preset": preset, "unet": get_preset(preset).to_dict(),
        "schedule": cfg.schedule, "prediction": cfg.prediction,
        "normalization": "uint8 x -> x / 127.5 - 1",
        "data_fingerprint": trainer.data_fingerprint, "data_size": len(data), "class_counts": data.class_counts(),
        "train": {**asdict(cfg), **summary},
    }
    config = json.loads(json.dumps(config))   # exactly what save/load will give back (tuples become lists)
    config["fingerprint"] = _weights_fingerprint(ema, config)
    return Generator(ema, config, data.image_hashes())   # stays on the training device, ready to sample


WALL_CLOCK = ("seconds", "images_per_second")   # differ between any two runs: not part of a generator's identity


def _weights_fingerprint(model: torch.nn.Module, config: dict, wall_clock: bool = False) -> str:
    """Hash of the config and weights: the same seed and data on the same machine give the same fingerprint.
    (`wall_clock=True`: the hash diffaug <= 0.1.0 wrote, over the timings too; still accepted on load.)"""
    import hashlib

    if "train" in config and not wall_clock:
        config = {**config, "train": {k: v for k, v in config["train"].items() if k not in WALL_CLOCK}}
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
