"""The fitted artifact: config + EMA weights, with `sample`, `perturb`, `save` and `load` (`fitting.fit` makes one).

Every generated image's noise comes from its own stream, keyed by (seed, image index, copy) (diffusion/noise.py):
an image does not depend on the batch size, the sharding or the number of processes that made it."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .checks import check_output_size, check_seed, check_strength, is_number, whole_number
from .data import _to_uint8_nchw
from .diffusion.fastpath import GraphedForward
from .diffusion.noise import ImageNoise
from .diffusion.objectives import to_x0
from .diffusion.samplers import get_sampler
from .diffusion.sampling import (GUIDANCE, GUIDANCE_INTERVAL, SAMPLE_STEPS, SAMPLER, STRENGTH, SamplingSpec,
                                 guided_at, trajectory_steps)
from .diffusion.schedules import alpha_sigma, get_schedule, timesteps
from .diffusion.step import autocast, prepare_model, resolve_device, sampling_compile_pays, to_unit
from .diffusion.unet import UNet, UNetConfig
from .errors import DataError, GeneratorFileError, MismatchError, first_line
from .io import atomic_path

FORMAT = "diffaug.generator"
FORMAT_VERSION = 1
METADATA_KEY = "diffaug"
HASHES_KEY = "diffaug.data_hashes"   # a uint8 (N, 8) tensor beside the weights: hashes of the training images
BATCH = 500   # images per network call when sampling on the CPU (and MPS)
CUDA_BATCH_PIXELS = 2 ** 20   # on CUDA: as many images as hold about this many pixels (1024 at 32x32), at most 2048


class Generator:
    """A class-conditional diffusion model fitted to one dataset; generates uint8 images of that dataset's size."""

    def __init__(self, model: UNet, config: dict, data_hashes: np.ndarray | None = None):
        self.model = model.eval().requires_grad_(False)
        self.config = config
        self.data_hashes = data_hashes   # uint8 (N, 8): one hash per training image (ImageData.image_hashes)
        self.device = next(model.parameters()).device
        self._schedule = get_schedule(config["schedule"])
        self.fast = True        # on CUDA, replay the network as CUDA graphs while sampling (False: eager)
        self.compile = None     # on that fast path, torch.compile the network: True, False, or None (where it pays)
        self._graphed, self._graphed_model = {}, None   # compiled? -> GraphedForward, for this model
        self._job_rows = 0      # inside `job(rows)`: the network rows of the whole job the calls belong to

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
        self._graphed = {}
        return self

    def default_batch(self) -> int:
        """Images per network call when a job names none (`sampling_batch` on this generator's device)."""
        return sampling_batch(self.device, self.image_size)

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

    def denoiser(self, labels: torch.Tensor | None, guidance: float = GUIDANCE,
                 guidance_interval: tuple | None = GUIDANCE_INTERVAL, network=None):
        """x0-predicting callable for the samplers; classifier-free guidance in ONE batched forward pass.

        guidance w: x0 = x0_null + w (x0_cond - x0_null); w = 1 is plain conditional, labels=None unconditional.
        guidance_interval (low, high]: guide only where EDM's noise level sigma_t / alpha_t lies in it
        (Kynkaanniemi et al. 2024); elsewhere one conditional pass. `network`: `(z, t, y) -> output`, by default
        the one `network()` gives.
        """
        net = network if network is not None else self.network()
        null = self.num_classes
        prediction = self.config["prediction"]

        def denoise(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            n = z.shape[0]
            tt = torch.full((n,), float(t), device=z.device)   # t is a host scalar: a fill, not a copy and a sync
            logsnr = self._logsnr(t)
            if labels is None or not guided_at(logsnr, guidance, guidance_interval):
                y = labels if labels is not None else torch.full((n,), null, device=z.device)
                out = net(z, tt, y)
            else:
                both = net(torch.cat([z, z]), torch.cat([tt, tt]), torch.cat([labels, torch.full_like(labels, null)]))
                cond, uncond = both.chunk(2)
                out = uncond + guidance * (cond - uncond)   # linear in the output: same as guiding x0 or eps
            x0 = to_x0(out, z, logsnr, prediction)
            return x0.clamp(-1.0, 1.0)   # static thresholding: x0 lies in the data range

        return denoise

    def network(self, rows: int | None = None):
        """`(z, t, y) -> network output` as sampling runs it. On CUDA with `fast`: CUDA-graph replays (fastpath.py)
        of the network, compiled if `compile` says so or, when it is None, if a job of `rows` network rows pays the
        compile time back (step.sampling_compile_pays); torch.compile's default mode, so its kernels are captured
        in these graphs rather than in graphs of its own. Elsewhere: the eager network."""
        if not isinstance(self.compile, (bool, type(None))):
            raise DataError(f"Generator.compile must be True, False or None (where it pays), got {self.compile!r}")
        if rows is not None:
            rows = max(rows, self._job_rows)
        compiled = self.compile if self.compile is not None else sampling_compile_pays(self.device, rows)
        if self.device.type != "cuda" or not self.fast:
            return self._forward
        if self._graphed_model is not self.model:   # a replaced model: new graphs
            self._graphed, self._graphed_model = {}, self.model
        if compiled not in self._graphed:
            fn = torch.compile(self._forward, fullgraph=True, dynamic=False) if compiled else self._forward
            self._graphed[compiled] = GraphedForward(fn)
        return self._graphed[compiled]

    def _logsnr(self, t) -> float:
        """A step's logSNR, once, on the host: no device sync, and the same scales for an image at any batch size
        (per-row transcendentals round differently in vectorised and scalar loops)."""
        return float(self._schedule(torch.tensor([float(t)], dtype=torch.float64)))

    def _time_grid(self, spec: SamplingSpec, t_start: float) -> torch.Tensor:
        """The times a trajectory of `spec` from `t_start` (1: from noise) steps through; the network runs once
        at each but the last."""
        return timesteps(trajectory_steps(spec.steps, t_start), t_start, 0.0, schedule=self._schedule,
                         spacing=spec.grid)

    def network_rows(self, images: int, spec: SamplingSpec, t_start: float = 1.0, conditional: bool = True) -> int:
        """The network rows (an image at one network evaluation) a job of `images` trajectories of `spec` from
        `t_start` runs: two at a guided step, one at a step outside the guidance interval or unguided. What the
        compile decision reads (step.sampling_compile_pays)."""
        return images * self._rows_per_image(self._time_grid(spec, t_start), spec, conditional)

    def _rows_per_image(self, ts: torch.Tensor, spec: SamplingSpec, conditional: bool) -> int:
        """Network rows of one trajectory over the time grid `ts` (the denoiser's rule, step by step)."""
        guidance = spec.guidance if conditional else 1.0
        return sum(1 + guided_at(self._logsnr(t), guidance, spec.guidance_interval) for t in ts[:-1])

    @contextlib.contextmanager
    def job(self, rows: int):
        """Inside this block, sampling calls decide whether to compile (`compile=None`) for a whole job of `rows`
        network rows (`network_rows`), not call by call: for callers that split one large job
        into many calls (SampleBank.build, the Hugging Face adapters)."""
        before, self._job_rows = self._job_rows, max(self._job_rows, int(rows))
        try:
            yield self
        finally:
            self._job_rows = before

    def _forward(self, z, t, y):
        single = len(z) == 1 and self.device.type == "cpu"
        if single:   # oneDNN runs some convolutions of one image on another path, rounded differently (unet.py)
            z, t, y = (torch.cat([a, a]) for a in (z, t, y))
        with autocast(self.device):
            out = self.model(z, t, y).float()
        return out[:1] if single else out

    def check_output(self, n: int) -> None:
        """Refuse, before any work, `n` images of this generator's size that would not fit in memory."""
        check_output_size(n, self.channels, self.image_size)

    @torch.no_grad()
    def _generate(self, labels: torch.Tensor | None, start: torch.Tensor | None, spec: SamplingSpec, *, n: int,
                  t_start: float, seed: int, stream: str, indices, copy: int, batch_size: int, progress,
                  desc: str) -> torch.Tensor:
        """The sampling engine: batches of `spec`'s sampler from t_start to 0; image i's noise is its own stream."""
        check_seed(seed)
        if batch_size is not None:
            whole_number(batch_size, "batch_size", low=1)
        whole_number(copy, "copy", low=0)
        self.check_output(n)
        indices = _image_indices(indices, n)
        sample_fn = get_sampler(spec.sampler)
        ts = self._time_grid(spec, t_start)
        network = self.network(rows=n * self._rows_per_image(ts, spec, conditional=labels is not None))
        batch_size = self.default_batch() if batch_size is None else batch_size
        c, (h, w) = self.channels, self.image_size
        alpha, sigma = (float(a) for a in alpha_sigma(self._schedule(ts[:1])))
        out = torch.empty((n, c, h, w), dtype=torch.uint8)
        # progress=None: a bar only for multi-batch work on a terminal (tqdm's disable=None)
        quiet = (not progress) if progress is not None else (None if n > batch_size else True)
        bar = tqdm(total=n, disable=quiet, desc=desc, unit="img", leave=False)
        with bar:
            for i in range(0, n, batch_size):
                j = min(n, i + batch_size)
                noise = ImageNoise.for_images(seed, stream, indices[i:j], copy)
                z = noise.randn((c, h, w), self.device).contiguous(memory_format=torch.channels_last)
                if start is not None:   # SDEdit: noise the images to t_start, then denoise (Meng et al. 2022)
                    z = alpha * to_unit(start[i:j].to(self.device)) + sigma * z
                y = labels[i:j].to(self.device) if labels is not None else None
                x = sample_fn(self.denoiser(y, spec.guidance, spec.guidance_interval, network), z, ts,
                              self._schedule, generator=noise)
                out[i:j] = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
                bar.update(j - i)
        return out

    def sample(self, labels=None, *, per_class: int | None = None, steps: int = SAMPLE_STEPS,
               sampler: str = SAMPLER, spacing: str | None = None, guidance: float = GUIDANCE,
               guidance_interval: tuple | None = GUIDANCE_INTERVAL, seed: int = 0, indices=None,
               batch_size: int | None = None, device=None, progress: bool | None = None) -> torch.Tensor:
        """New images of the given classes: uint8 (N,C,H,W) on the CPU.

        `labels` are class indices or names; `per_class=k` asks for k of every class instead. Image i's noise
        comes from (seed, indices[i]) alone (indices default to 0..N-1), so the result does not depend on
        `batch_size`, and a job split into parts (each passing its rows' indices) makes exactly the images of
        one call. `spacing` places the steps: "time" (even in t), "logsnr" or "karras" (see
        schedules.timesteps); None: the sampler's measured default (sampling.SPACING). `guidance_interval`:
        guide only at noise levels in (low, high] (see `denoiser`); None: at every step. `batch_size`: images per
        network call; None: `default_batch()` (500 on the CPU, 1024 at 32x32 on CUDA).
        """
        spec = SamplingSpec(steps, sampler, spacing, guidance, guidance_interval)
        if (labels is None) == (per_class is None):
            raise DataError("pass either labels or per_class")
        if per_class is not None:
            per_class = whole_number(per_class, "per_class", low=0)
            self.check_output(per_class * self.num_classes)
            labels = torch.arange(self.num_classes).repeat_interleave(per_class)
        y = self.class_index(labels)
        if device is not None:
            self.to(device)
        return self._generate(y, None, spec, n=len(y), t_start=1.0, seed=seed, stream="sample", indices=indices,
                              copy=0, batch_size=batch_size, progress=progress, desc="sample")

    def perturb(self, images, labels=None, *, strength: float = STRENGTH, steps: int = SAMPLE_STEPS,
                sampler: str = SAMPLER, spacing: str | None = None, guidance: float = GUIDANCE,
                guidance_interval: tuple | None = GUIDANCE_INTERVAL, seed: int = 0, indices=None, copy: int = 0,
                batch_size: int | None = None, device=None, progress: bool | None = None) -> torch.Tensor:
        """Variations of real images: noise them to t = strength, then denoise conditioned on their class.

        uint8 in, uint8 out (N,C,H,W). Without labels the null class is used (unconditional denoising).
        `steps` counts steps of a whole trajectory; a perturbation takes ceil(steps * strength) of them,
        as diffusers' img2img does. Image i's noise comes from (seed, indices[i], copy) alone: `copy` numbers
        the independent perturbations of one image (see `sample` for `indices`).
        """
        spec = SamplingSpec(steps, sampler, spacing, guidance, guidance_interval)
        strength, _ = check_strength(strength, allow_range=False)
        x = self.check_images(images)
        y = None
        if labels is not None:
            y = self.class_index(labels)
            if len(y) != len(x):
                raise DataError(f"{len(x)} images but {len(y)} labels")
        if device is not None:
            self.to(device)
        return self._generate(y, x, spec, n=len(x), t_start=strength, seed=seed, stream="perturb", indices=indices,
                              copy=copy, batch_size=batch_size, progress=progress, desc="perturb")

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
            if config["fingerprint"] not in (weights_fingerprint(model, described),
                                             weights_fingerprint(model, described, wall_clock=True)):
                raise GeneratorFileError(f"{path} is damaged: its weights or config do not match the fingerprint "
                                         "written with them")
        except GeneratorFileError:
            raise
        except Exception as e:
            raise GeneratorFileError(f"{path} has a damaged diffaug config or weights ({str(e)[:200]})") from None
        return cls(prepare_model(model, resolve_device(device)), config,
                   hashes.numpy() if hashes is not None else None)


def sampling_batch(device: torch.device, image_size: tuple[int, int]) -> int:
    """Images per network call when a job names none: BATCH on the CPU and MPS; on CUDA the power of two of images
    nearest below CUDA_BATCH_PIXELS pixels (1024 at 32x32, 64 at 128x128), at most 2048, at least 1."""
    if device.type != "cuda":
        return BATCH
    h, w = image_size
    return min(2048, 1 << max(0, (CUDA_BATCH_PIXELS // (h * w)).bit_length() - 1))


def _image_indices(indices, n: int) -> list[int]:
    """Each image's index in its job (its noise stream): 0..n-1 by default."""
    if indices is None:
        return list(range(n))
    indices = [whole_number(i, "indices", low=0) for i in np.asarray(indices).reshape(-1).tolist()] \
        if not isinstance(indices, range) else list(indices)
    if len(indices) != n:
        raise DataError(f"{n} images but {len(indices)} indices")
    return indices


# differ between any two runs: not part of a generator's identity
WALL_CLOCK = ("seconds", "seconds_all_runs", "images_per_second")


def weights_fingerprint(model: torch.nn.Module, config: dict, wall_clock: bool = False) -> str:
    """Hash of the config and weights: the same seed and data on the same machine give the same fingerprint.
    (`wall_clock=True`: the hash diffaug <= 0.1.0 wrote, over the timings too; still accepted on load.)"""
    if "train" in config and not wall_clock:
        config = {**config, "train": {k: v for k, v in config["train"].items() if k not in WALL_CLOCK}}
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
