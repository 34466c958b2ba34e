"""`fit`: a Generator from labelled images, by way of the trainer (diffusion/trainer.py)."""

from __future__ import annotations

import json
from dataclasses import asdict

from ._version import __version__
from .data import ImageData
from .diffusion.trainer import TrainConfig, Trainer
from .diffusion.unet import get_preset
from .errors import DataError
from .generator import FORMAT, FORMAT_VERSION, Generator, weights_fingerprint
from .loading import load_data


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
        "preset": preset, "unet": get_preset(preset).unet.to_dict(),
        "schedule": cfg.schedule, "prediction": cfg.prediction,
        "normalization": "uint8 x -> x / 127.5 - 1",
        "data_fingerprint": trainer.data_fingerprint, "data_size": len(data), "class_counts": data.class_counts(),
        "train": {**asdict(cfg), **summary},
    }
    config = json.loads(json.dumps(config))   # exactly what save/load will give back (tuples become lists)
    config["fingerprint"] = weights_fingerprint(ema, config)
    return Generator(ema, config, data.image_hashes())   # stays on the training device, ready to sample
