"""What every unit of one evaluation shares: the test split on the unit's device and the fixed reference feature
network the generators' samples are scored with (trained once on the whole training pool, never on a test image)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..classify.training import embed, new_classifier, random_batches, train_classifier
from ..data import ImageData
from ..diffusion.step import resolve_device
from ..io import digest
from .cache import load_weights, save_weights
from .config import EvalConfig


@dataclass
class Reference:
    """What every unit of one evaluation shares: the test split on the device and the fixed feature network
    (trained once on the whole training pool, never on test) with the test split's features."""

    test_images: torch.Tensor
    test_labels: torch.Tensor
    network: torch.nn.Module | None = None
    test_features: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    def to(self, device) -> "Reference":
        net = self.network.to(device) if self.network is not None else None
        return Reference(self.test_images.to(device), self.test_labels.to(device), net, self.test_features, self.info)


def reference_for(train: ImageData, test: ImageData, cfg: EvalConfig, device, path=None) -> Reference:
    """The shared test split and, with cfg.metrics, the reference feature network: read from `path` (a
    .safetensors file in the run's cache) when a run made it before, else trained (seed 0) and stored there, so a
    resumed run scores its generators with the same network an uninterrupted one did."""
    device = resolve_device(device)
    ref = Reference(test.images.to(device), test.labels.to(device))
    if not cfg.metrics:
        return ref
    info = {"trained_on": train.fingerprint(), "steps": cfg.reference_steps}
    if path is not None and Path(path).exists():
        ref.network = load_weights(new_classifier(None, train.channels, train.num_classes, 0, device), path)
    else:
        ref.network = train_classifier(random_batches(train.images, train.labels, cfg.batch_size, seed=0),
                                       train.channels, train.num_classes, steps=cfg.reference_steps, seed=0,
                                       device=device)
        if path is not None:
            save_weights(ref.network, path)
    ref.test_features = embed(ref.network, ref.test_images, device)
    ref.info = {**info, "network": type(ref.network).__name__}
    ref.info["fingerprint"] = digest({"info": ref.info, "weights": ref.network.state_dict()})[:16]
    return ref
