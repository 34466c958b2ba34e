"""`fit`: a Generator from labelled images (plus, where the user has them, unlabelled images and a generator to
start from), by way of the trainer (diffusion/trainer.py)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ._version import __version__
from .data import ImageData, image_hashes
from .diffusion.step import resolve_device
from .diffusion.trainer import TrainConfig, Trainer
from .diffusion.unet import UNet, UNetConfig
from .errors import DataError, MismatchError
from .generator import FORMAT, FORMAT_VERSION, Generator, weights_fingerprint
from .io import digest
from .loading import load_data, load_unlabeled


def fit(data="digits", preset: str = "tiny", steps: int | None = None, *, minutes: float | None = None,
        device="auto", seed: int = 0, out_dir=None, resume: bool = False, progress: bool = True,
        distributed: bool | None = None, timeout_s: float = 300, unlabeled=None, init=None,
        pseudo_labels: float | None = None, pseudo_label_policy: str | None = None, **options) -> Generator:
    """Fit a class-conditional diffusion generator to `data` (ImageData, a built-in name or a path).

    `unlabeled`: images without labels from the same source (loading.load_unlabeled: an image folder without
    class sub-folders, an .npz with `images` only, a saved HF dataset without labels, an array or an ImageData);
    `unlabeled_share` of every batch comes from them, trained under the null class, so the unconditional model,
    and with it every class, learns from them. `init`: a Generator (or its file) to start from instead of random
    weights, of the same preset and image size (its class embedding is matched to these classes by name).
    Both are recorded in the new generator's config; the leakage guard covers their images.
    `pseudo_labels`: a confidence threshold (e.g. 0.7): a classifier trained on `data` labels the unlabelled images
    it is that sure of, and they train under those labels too, as DPT does (classify/pseudo.py; `pseudo_label_policy` is
    that classifier's classical augmentation, by name; None: chosen by cross-validation within `data`).

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
    extra = _unlabeled(unlabeled, data)
    labelled, pseudo = data, None
    if pseudo_labels is not None:
        if extra is None:
            raise DataError("pseudo_labels needs unlabelled images to label (unlabeled=...)")
        from .classify.pseudo import pseudo_label   # the classifier stack (torchvision): only when asked
        kept, pseudo = pseudo_label(data, extra, pseudo_labels, pseudo_label_policy, seed=seed,
                                    device=resolve_device(device))
        data = ImageData(torch.cat([data.images, kept.images]), torch.cat([data.labels, kept.labels]),
                         data.class_names)   # every class keeps its labelled images, kept ones or not
    start = _init(init, data, preset)
    trainer = Trainer(data, cfg, device=device, out_dir=out_dir, progress=progress, distributed=distributed,
                      timeout_s=timeout_s, unlabeled=extra, init=start[0] if start else None)
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
        "preset": preset, "unet": ema.config.to_dict(),
        "schedule": cfg.schedule, "prediction": cfg.prediction,
        "normalization": "uint8 x -> x / 127.5 - 1",
        "data_fingerprint": trainer.data_fingerprint, "data_size": len(data), "class_counts": data.class_counts(),
        "train": {**asdict(cfg), **summary},
    }
    if pseudo is not None:
        config["pseudo_labels"] = {**pseudo, "labelled": len(labelled)}
    hashes = [data.image_hashes()]
    if extra is not None:
        config["unlabeled"] = {"count": len(extra), "fingerprint": digest(extra)[:16], "share": cfg.unlabeled_share}
        hashes.append(image_hashes(extra))
    if start:
        config["init"] = start[1]
        if start[2] is not None:
            hashes.append(start[2])   # what the init saw, the leakage guard checks too
    config = json.loads(json.dumps(config))   # exactly what save/load will give back (tuples become lists)
    config["fingerprint"] = weights_fingerprint(ema, config)
    hashes = hashes[0] if len(hashes) == 1 else np.unique(np.concatenate(hashes), axis=0)
    return Generator(ema, config, hashes)   # stays on the training device, ready to sample


def _unlabeled(unlabeled, data: ImageData) -> torch.Tensor | None:
    """The unlabelled images, checked against the labelled data's size and channels."""
    if unlabeled is None:
        return None
    images = load_unlabeled(unlabeled)
    if images.shape[1] != data.channels or tuple(images.shape[2:]) != data.size:
        c, (h, w) = data.channels, data.size
        raise MismatchError(f"the unlabelled images are {images.shape[1]}x{images.shape[2]}x{images.shape[3]} "
                            f"(CxHxW) but the labelled data is {c}x{h}x{w}; resize or convert them to match")
    return images


def _init(init, data: ImageData, preset: str):
    """(a UNet for this data with the init's weights, its provenance, the hashes of what it saw), or None.

    The class embedding is matched by class name: a class the init knows keeps its row, a new class starts from
    the init's null-class row (its unconditional model), and the null row stays the null row."""
    if init is None:
        return None
    gen = init if isinstance(init, Generator) else Generator.load(Path(init))
    if gen.config["preset"] != preset or gen.channels != data.channels or gen.image_size != data.size:
        raise MismatchError(f"the init generator is a {gen.config['preset']} {gen.channels}x{gen.image_size} "
                            f"model; this fit is {preset} {data.channels}x{data.size}: fit with --preset "
                            f"{gen.config['preset']} on images of its size, or drop init")
    state = {k: v.detach().cpu().clone() for k, v in gen.model.state_dict().items()}
    old = state["class_emb.weight"]   # (init classes + 1, emb): the last row is the null class
    rows = {name: old[i] for i, name in enumerate(gen.class_names)}
    state["class_emb.weight"] = torch.stack([rows.get(name, old[-1]) for name in data.class_names] + [old[-1]])
    net = UNet(data.channels, data.num_classes, UNetConfig.from_dict(gen.config["unet"]))
    net.load_state_dict(state)
    provenance = {"fingerprint": gen.fingerprint, "data_fingerprint": gen.config["data_fingerprint"],
                  "class_names": gen.class_names, "matched_classes": sorted(set(rows) & set(data.class_names))}
    return net, provenance, gen.data_hashes

