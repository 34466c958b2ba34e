"""The fit loop: AdamW with warm-up, gradient clipping, EMA, mixed precision, atomic checkpoints and resume,
in one process or data-parallel over the ranks of a torchrun launch (distributed.py)."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..checks import check_probability, check_seed, finite_number, whole_number
from ..data import ImageData
from ..errors import DiffaugError, first_line
from ..io import atomic_path, digest
from . import distributed as ddp
from .augment import AUGMENT_DIM, augment
from .fastpath import FastStep
from .objectives import DiffusionLoss, check_noise_sampling, check_prediction, drop_labels
from .schedules import get_schedule
from .step import autocast, compile_pays, ema_decay_at, ema_update, lr_at, make_optimizer, prepare_model, \
    resolve_device, step_counter, to_unit
from .unet import UNet, get_preset

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_VERSION = 1


class TrainingError(DiffaugError):
    """Training cannot go on (diverged loss, unusable checkpoint)."""


@dataclass
class TrainConfig:
    """What `train` does; every field is recorded in the generator it produces."""

    preset: str = "tiny"
    steps: int | None = None          # optimizer steps; None: the preset's default (unless `minutes` is set)
    minutes: float | None = None      # wall-clock budget; training stops at whichever budget ends first
    batch_size: int | None = None     # the global batch (split over ranks); None: DEFAULT_BATCH by device
    lr: float = 2e-3
    warmup: int = 200                 # linear LR warm-up steps; then cosine decay to 10% by the end of the budget
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    label_dropout: float = 0.1        # share of labels replaced by the null class (CFG, Ho & Salimans 2022)
    unlabeled_share: float = 0.5      # with unlabelled images: the share of each batch drawn from them (they train
                                      # under the null class, as DPT's unconditional rows do); not yet tuned
    schedule: str = "cosine"
    prediction: str = "v"
    min_snr_gamma: float | None = 5.0
    noise_sampling: str = "weighted"  # how t is drawn: objectives.NOISE_SAMPLING ("weighted": uniform t, min-SNR
                                      # weights; "importance": t from the weights' density; "lognormal": EDM's)
    hflip: bool = False               # off by default: a flipped digit is another symbol
    augment: float = 0.0              # non-leaking augmentation (diffusion/augment.py): the probability of each
                                      # transform; the network is told which, samples are drawn as "none"
    seed: int = 0
    checkpoint_every: int = 500
    compile: bool | None = None       # torch.compile the network; None: where it pays (step.compile_pays)
    fast: bool = True                 # graph-safe step (diffusion/fastpath.py), a CUDA graph on CUDA; False: eager

    def __post_init__(self):
        get_preset(self.preset)
        get_schedule(self.schedule)
        check_prediction(self.prediction)
        check_noise_sampling(self.noise_sampling)
        for name in ("steps", "batch_size", "checkpoint_every", "warmup"):
            if getattr(self, name) is not None or name not in ("steps", "batch_size"):
                whole_number(getattr(self, name), name, low=1, high=MAX_BATCH if name == "batch_size" else MAX_COUNT)
        check_seed(self.seed)
        for name, low, high, closed in (("lr", 0.0, 10.0, False), ("grad_clip", 0.0, 1e6, False),
                                        ("weight_decay", 0.0, 1e3, True), ("ema_decay", 0.0, 1.0, True),
                                        ("label_dropout", 0.0, 1.0, True), ("minutes", 0.0, 1e9, False),
                                        ("min_snr_gamma", 0.0, 1e6, False)):
            if getattr(self, name) is not None or name not in ("minutes", "min_snr_gamma"):
                finite_number(getattr(self, name), name, low, high, closed)
        check_probability(self.unlabeled_share, "unlabeled_share")   # 1: every row unlabelled (an unconditional fit)
        check_probability(self.augment, "augment")
        if not isinstance(self.hflip, bool):
            raise DiffaugError(f"hflip must be True or False, got {self.hflip!r}")
        if not isinstance(self.compile, (bool, type(None))):
            raise DiffaugError(f"compile must be True, False or None (where it pays), got {self.compile!r}")


MAX_BATCH = 2 ** 20
MAX_COUNT = 2 ** 40   # steps, warm-up, checkpoint interval: beyond this a number is a typo, not a plan
# CPU: batch 64 fits digits (2000 steps) in 174 s against 244 s at batch 128, at the same quality (logistic
# regression on 5,000 samples -> real test half: 0.957 vs 0.952; benchmarks/core_digits.py); the small step is
# overhead-bound, so halving the batch saves 30%, not 50%.
DEFAULT_BATCH = {"cpu": 64, "cuda": 512}


# What a fit's trajectory depends on: a resume that changes one of these would splice two different fits. The
# budget (steps, minutes) may change, to extend a fit or end it sooner, and so may how the same step is executed
# (checkpoint_every, compile, fast).
RESUME_MUST_MATCH = ("preset", "batch_size", "lr", "warmup", "weight_decay", "grad_clip", "ema_decay",
                     "label_dropout", "unlabeled_share", "schedule", "prediction", "min_snr_gamma", "noise_sampling",
                     "hflip", "augment", "seed")


def changed_settings(recorded: dict, cfg: TrainConfig) -> list[str]:
    """'name: checkpoint's -> now' for every trajectory setting `cfg` changes from a checkpoint's `recorded` config
    (a setting older checkpoints lack counts at its default, which is what they trained with)."""
    defaults = TrainConfig()
    changed = []
    for name in RESUME_MUST_MATCH:
        before = recorded.get(name, getattr(defaults, name))
        now = getattr(cfg, name)
        if before != now:
            changed.append(f"{name}: {before!r} -> {now!r}")
    return changed


class Trainer:
    """Fits a class-conditional UNet to `ImageData`; `run()` trains, `ema` is the result.

    Under torchrun (or `distributed=True`) every rank builds the same Trainer: the same seed gives the same
    initial weights and the same global batches, each rank trains on its slice (DistributedDataParallel),
    and rank 0 alone keeps the EMA, writes checkpoints and shows progress. Call `close()` when done.
    """

    def __init__(self, data: ImageData, config: TrainConfig, device="auto", out_dir=None, progress: bool = True,
                 distributed: bool | None = None, timeout_s: float = ddp.DEFAULT_TIMEOUT_S,
                 unlabeled: torch.Tensor | None = None, init: torch.nn.Module | None = None):
        """`unlabeled`: uint8 (M,C,H,W) images without labels; `config.unlabeled_share` of every batch comes from
        them, under the null class. `init`: a UNet of the same preset and channels to start from (its class
        embedding already resized to this data's classes, see fitting.init_weights)."""
        self.data = data
        self.unlabeled = unlabeled if unlabeled is not None and len(unlabeled) else None
        # hashes every pixel (labelled and unlabelled): once, not at every checkpoint
        self.data_fingerprint = data.fingerprint() if self.unlabeled is None else \
            digest({"labelled": data.fingerprint(), "unlabeled": self.unlabeled})[:16]
        self.timeout_s = timeout_s
        self.ranks, self.device, self._owns_group = ddp.setup(distributed, resolve_device(device), timeout_s)
        self.progress = progress and self.ranks.main
        if config.batch_size is None:   # the resolved value is what the generator records
            config = replace(config, batch_size=DEFAULT_BATCH.get(self.device.type, DEFAULT_BATCH["cpu"]))
        if config.batch_size % self.ranks.world:
            self.close()
            raise DiffaugError(f"the batch size ({config.batch_size}) is the global batch and must split evenly "
                               f"over the {self.ranks.world} ranks")
        self.cfg = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        torch.manual_seed(config.seed)   # weight init only (the same on every rank); every later draw uses self.rng
        arch = init.config if init is not None else get_preset(config.preset).unet
        if config.augment and not arch.augment_dim:   # an init without it gets a fresh (zero) conditioning layer
            arch = replace(arch, augment_dim=AUGMENT_DIM)
        net = UNet(data.channels, data.num_classes, arch)
        if init is not None:
            missing, unexpected = net.load_state_dict(init.state_dict(), strict=False)
            if unexpected or set(missing) - {"augment_emb.weight"}:
                raise DiffaugError(f"the init network does not match this fit's (missing {missing}, unexpected "
                                   f"{unexpected})")
        self.model = prepare_model(net, self.device)
        self._seed_dropout(0)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt = make_optimizer(self.model, config, self.device)
        self.loss_fn = DiffusionLoss(get_schedule(config.schedule), config.prediction, config.min_snr_gamma,
                                     config.noise_sampling)
        self.rng = torch.Generator(self.device).manual_seed(config.seed)
        # uint8 on the device (4x smaller than float): the labelled rows, then any unlabelled ones (null class)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.n_unlabeled = 0 if self.unlabeled is None else round(config.batch_size * config.unlabeled_share)
        if self.unlabeled is not None:
            self.extra = self.unlabeled.to(self.device)
        self.step = 0
        self.loss_sum = torch.zeros((), device=self.device)   # summed on the device, read every 25 steps
        self.loss_curve: list[tuple[int, float]] = []   # (step, mean loss since the previous entry)
        # a wall-clock budget: the training seconds of earlier runs of this fit (a resumed fit continues its budget)
        # and the share of the budget used, the device tensor the learning rate decays by (set from the host clock)
        self.elapsed, self._t0 = 0.0, None
        self.spent = torch.zeros((), dtype=torch.float64, device=self.device)
        self.steps = config.steps if config.steps is not None or config.minutes else get_preset(config.preset).steps
        self.part = self.ranks.part(config.batch_size)   # this rank's slice of every global batch
        net = self.model
        if self.ranks.active:
            from torch.nn.parallel import DistributedDataParallel
            net = DistributedDataParallel(net, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.compiled = config.compile if config.compile is not None else compile_pays(self.device, self.steps,
                                                                                      config.minutes)
        self.forward = torch.compile(net) if self.compiled else net

    def _seed_dropout(self, step: int) -> None:
        """Dropout draws from the global RNG: rank 0 keeps the one-process stream, other ranks get their own."""
        if self.ranks.rank > 0:
            torch.manual_seed(hash((self.cfg.seed, self.ranks.rank, step)) % 2**63)

    def close(self) -> None:
        """Leave the process group if this trainer joined it (a no-op in one process)."""
        ddp.teardown(self._owns_group)
        self._owns_group = False

    # --- checkpoints -------------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / CHECKPOINT if self.out_dir is not None else None

    def save_checkpoint(self) -> None:
        if not self.ranks.main:
            return
        state = {"format_version": CHECKPOINT_VERSION,
                 "model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                 "step": self.step, "elapsed": self.clock(), "rng": self.rng.get_state(),
                 "global_rng": _global_rng_state(self.device),
                 "config": asdict(self.cfg),
                 "fingerprint": self.data_fingerprint, "loss_curve": self.loss_curve}
        state["digest"] = digest(state)   # a flipped bit or a torn copy shows on resume
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.checkpoint_path) as tmp:   # a kill mid-write leaves the previous checkpoint intact
            torch.save(state, tmp)

    def load_checkpoint(self) -> bool:
        """Resume from the checkpoint in out_dir if there is one; True if it did."""
        path = self.checkpoint_path
        if path is None or not path.exists():
            return False
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)   # never unpickles code
        except Exception as e:
            raise TrainingError(f"cannot read checkpoint {path} (damaged, or not a diffaug checkpoint: "
                                f"{first_line(e)}); "
                                "delete it to start afresh") from None
        if not isinstance(state, dict) or not {"model", "ema", "opt", "step", "fingerprint"} <= set(state):
            raise TrainingError(f"{path} is not a diffaug checkpoint")
        if state.get("format_version", 1) > CHECKPOINT_VERSION:
            raise TrainingError(f"checkpoint {path} was written by a newer diffaug (format "
                                f"{state['format_version']}); upgrade diffaug to resume from it")
        recorded = state.pop("digest", None)
        if recorded is not None and digest(state) != recorded:
            raise TrainingError(f"checkpoint {path} is damaged (its contents do not match the digest written with "
                                "them); delete it to start afresh")
        if state["fingerprint"] != self.data_fingerprint:
            raise TrainingError(f"checkpoint {path} was made on other data; use another --checkpoint-dir "
                                "or delete it to start afresh")
        changed = changed_settings(state["config"], self.cfg)
        if changed:
            raise TrainingError(f"checkpoint {path} was made with other training settings ({'; '.join(changed)}): a "
                                "resumed fit continues the same fit; pass the checkpoint's settings, or use another "
                                "--checkpoint-dir (or delete it) to start afresh")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.rng.set_state(state["rng"].cpu())   # generator states are CPU byte tensors, whatever the device
        _set_global_rng_state(self.device, state.get("global_rng"))   # dropout draws from it (rank 0's)
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed", 0.0))   # 0 in a checkpoint from before budgets were continued
        self._seed_dropout(self.step)
        self.loss_curve = [tuple(p) for p in state["loss_curve"]]
        return True

    # --- the loop ----------------------------------------------------------------------------------

    def batch(self):
        """(images, labels, augmentation conditioning or None): one global batch, drawn on the device."""
        n = self.cfg.batch_size - self.n_unlabeled
        idx = torch.randint(len(self.images), (n,), generator=self.rng, device=self.device)
        x = self.images[idx]
        if self.n_unlabeled:
            extra = torch.randint(len(self.extra), (self.n_unlabeled,), generator=self.rng, device=self.device)
            x = torch.cat([x, self.extra[extra]])
        x = to_unit(x)
        if self.cfg.hflip:
            flip = torch.rand(len(x), generator=self.rng, device=self.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        cond = None
        if self.cfg.augment:
            x, cond = augment(x, self.cfg.augment, self.rng)
        x = x.contiguous(memory_format=torch.channels_last)
        y = drop_labels(self.labels[idx], self.data.num_classes, self.cfg.label_dropout, self.rng)
        if self.n_unlabeled:   # unlabelled rows train the unconditional (null-class) model
            y = torch.cat([y, torch.full((self.n_unlabeled,), self.data.num_classes, device=self.device)])
        return x, y, cond

    def train_step(self) -> None:
        """The eager reference step: one kernel launch at a time, the host's step count."""
        lr = lr_at(step_counter(self.step, self.device), self.cfg, self.steps, self.spent if self.cfg.minutes else None)
        for group in self.opt.param_groups:
            if torch.is_tensor(group["lr"]):
                group["lr"].copy_(lr)
            else:
                group["lr"] = float(lr)
        x, y, cond = self.batch()
        with autocast(self.device):
            loss = self.loss_fn(self.forward, x, y, self.rng, self.part, cond)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip, foreach=True)
        self.opt.step()
        self.step += 1
        if self.ranks.main:
            ema_update(self.ema, self.model, ema_decay_at(step_counter(self.step, self.device), self.cfg))
        self.loss_sum += loss.detach()

    def run(self) -> dict:
        """Train until the step or time budget ends; returns a summary of the run."""
        try:
            return self._run()
        except RuntimeError as e:
            if not self.ranks.active:
                raise
            where = f"; resume from {self.checkpoint_path} with --resume" if self.checkpoint_path else ""
            raise TrainingError(f"rank {self.ranks.rank} of {self.ranks.world} lost contact with the other ranks "
                                f"(a rank crashed or the {self.timeout_s:.0f} s timeout passed): {first_line(e, 300)}"
                                f"{where}") from None

    def _check_loss(self, mean: float) -> None:
        if not math.isfinite(mean):
            where = f"; the last good checkpoint is {self.checkpoint_path}" if self.checkpoint_path else ""
            raise TrainingError(f"the loss became {mean} by step {self.step} (try a lower lr){where}")

    def clock(self) -> float:
        """Training seconds of this fit so far, over every run of it (a resumed fit continues its budget)."""
        return self.elapsed + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def _tick(self, clock: float, budget: float) -> bool:
        """Record the share of the wall-clock budget `clock` has used; True when it is spent."""
        if budget < math.inf:
            self.spent.fill_(min(1.0, clock / budget))
        return clock >= budget

    def _run(self) -> dict:
        cfg, ranks = self.cfg, self.ranks
        start_step, t0 = self.step, time.perf_counter()
        self._t0 = t0
        budget = 60 * cfg.minutes if cfg.minutes else math.inf
        self._tick(self.elapsed, budget)
        total = self.steps if self.steps is not None else None
        self.model.train()
        bar = tqdm(total=total, initial=self.step, disable=not self.progress, desc="fit", unit="step",
                   dynamic_ncols=True)
        # DDP's gradient all-reduce is not captured in a CUDA graph: under several ranks the fast body runs eagerly
        step = FastStep(self, capture=False if ranks.active else None) if cfg.fast else self.train_step
        self.loss_sum.zero_()
        seen, last_step, last_time, stop = 0, self.step, t0, False
        with bar:
            while (self.steps is None or self.step < self.steps) and not stop:
                step()
                seen += 1
                bar.update(1)
                if self.step % 25 == 0 or self.step % cfg.checkpoint_every == 0:
                    mean = ddp.mean(self.loss_sum / max(1, seen), ranks).item()   # the only sync: every 25 steps
                    self._check_loss(mean)
                    now = time.perf_counter()
                    rate = (self.step - last_step) * cfg.batch_size / max(1e-9, now - last_time)
                    bar.set_postfix(loss=f"{mean:.4f}", img_s=f"{rate:.0f}")
                    self.loss_curve.append((self.step, round(mean, 5)))
                    self.loss_sum.zero_()
                    seen, last_step, last_time = 0, self.step, now
                    # the ranks read one clock (the slowest's), so they decay the rate alike and stop together: a
                    # rank leaving alone would leave the others waiting in a collective
                    stop = self._tick(ddp.max_value(self.clock(), ranks, self.device), budget)
                elif not ranks.active:
                    stop = self._tick(self.clock(), budget)
                if self.out_dir is not None and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
        if seen:   # the steps since the last read: a diverged short run must not pass as a generator
            self._check_loss(ddp.mean(self.loss_sum / seen, ranks).item())
        if self.out_dir is not None and self.step > start_step:
            self.save_checkpoint()
        ddp.broadcast_module(self.ema, ranks)   # every rank returns rank 0's EMA
        seconds = time.perf_counter() - t0
        self.elapsed, self._t0 = self.elapsed + seconds, None
        return {"steps": self.step, "steps_this_run": self.step - start_step, "seconds": round(seconds, 2),
                "images_per_second": round((self.step - start_step) * cfg.batch_size / max(seconds, 1e-9), 1),
                "world_size": ranks.world, "seconds_all_runs": round(self.elapsed, 2),
                "lr_end": float(self.opt.param_groups[0]["lr"]), "loss_curve": self.loss_curve}


def _global_rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_global_rng_state(device: torch.device, state: dict | None) -> None:
    if state is None:   # a checkpoint from before this was saved
        return
    torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
