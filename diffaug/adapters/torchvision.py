"""torchvision adapters: `DiffusionAugment` (a transforms.v2 Transform), `augment_dataset`, `DiffusionBatchAugment`."""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2._utils import is_pure_tensor

from ..diffusion.sampling import GUIDANCE, SAMPLE_STEPS, SAMPLER, STRENGTH
from ..errors import DataError
from ..generator import Generator
from .bank import SampleBank
from .source import AugmentSource, applies, check_options, choose, class_probabilities


# What a replaced image would no longer match: refused, as v2's MixUp and CutMix refuse them.
REFUSED = tuple(t for t in (tv_tensors.BoundingBoxes, tv_tensors.Mask, getattr(tv_tensors, "KeyPoints", None)) if t)


def _as_label(y) -> int | None:
    if isinstance(y, (int, np.integer)) and not isinstance(y, bool):
        return int(y)
    if isinstance(y, torch.Tensor) and y.numel() == 1 and not y.is_floating_point():
        return int(y)
    return None


def _find_label(inputs: tuple, label_key: str) -> int | None:
    """The class label in a v2 call: tf(img, label), tf((img, label)), or a dict with it under `label_key`, else
    under "labels" or "label" (any case), as v2's `labels_getter="default"` looks for it."""
    sample = inputs[0] if len(inputs) == 1 else inputs
    if isinstance(sample, dict):
        for wanted in (label_key, "labels", "label"):
            key = next((k for k in sample if isinstance(k, str) and k.lower() == wanted.lower()), None)
            if key is not None:
                return _as_label(sample[key])
        return None
    if isinstance(sample, (tuple, list)) and len(sample) >= 2:
        return _as_label(sample[1])
    return None


def _is_image(x) -> bool:
    return isinstance(x, (PIL.Image.Image, tv_tensors.Image)) or is_pure_tensor(x)


def describe(inpt) -> dict:
    """What converting an image back needs: its kind, mode or dtype and device, and its (C,H,W) shape."""
    if isinstance(inpt, PIL.Image.Image):
        if inpt.mode not in ("L", "RGB"):
            raise DataError(f"PIL images of mode {inpt.mode!r} are not supported; convert to 'L' or 'RGB' first")
        w, h = inpt.size
        return {"kind": "pil", "mode": inpt.mode, "shape": (1 if inpt.mode == "L" else 3, h, w)}
    if inpt.ndim != 3:
        raise DataError(f"DiffusionAugment takes one image (C,H,W); got shape {tuple(inpt.shape)} "
                        "(use DiffusionBatchAugment for batches)")
    if not inpt.is_floating_point() and inpt.dtype != torch.uint8:
        raise DataError(f"integer image tensors must be uint8, got {inpt.dtype}")
    return {"kind": "image" if isinstance(inpt, tv_tensors.Image) else "tensor", "dtype": inpt.dtype,
            "device": inpt.device, "shape": tuple(inpt.shape)}


def to_uint8_chw(inpt) -> torch.Tensor:
    """A PIL image or (C,H,W) uint8/float tensor as a uint8 (C,H,W) CPU tensor."""
    if isinstance(inpt, PIL.Image.Image):
        arr = np.array(inpt)   # a writable copy
        return torch.from_numpy(arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1)))
    x = inpt.as_subclass(torch.Tensor).detach().cpu()
    if x.is_floating_point():   # v2's convention: float images lie in [0, 1]
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return x


def from_uint8_chw(x: np.ndarray, meta: dict):
    """A uint8 (C,H,W) array back to the caller's type, dtype, value range and device."""
    if meta["kind"] == "pil":
        return PIL.Image.fromarray(x[0] if meta["mode"] == "L" else np.ascontiguousarray(x.transpose(1, 2, 0)))
    out = torch.from_numpy(np.array(x))   # a writable copy: bank arrays are read-only views
    out = out.to(meta["dtype"]) / 255.0 if meta["dtype"].is_floating_point else out
    out = out.to(meta["device"])
    return tv_tensors.Image(out) if meta["kind"] == "image" else out


class DiffusionAugment(v2.Transform):
    """Replace an image, with probability p, by a synthetic image of its class or by its perturbation.

    source: a `SampleBank` (O(1) per sample; the default to use in DataLoader workers) or a `Generator`
        (one network call per augmented sample; fine in the main process or on a GPU).
    mode: "synthesize" (needs the label), "perturb" (noise to `strength`, denoise given the class; the null
        class when no label is passed) or "mix" (synthesize with probability `mix`, else perturb).
    class_p: per-class probabilities instead of `p` (one per class, or a {class: p} dict, others 0): rare
        classes replaced more often. `rebalance(labels).class_p` with its sampler gives a DataLoader every class
        equally often, the short classes' extra draws synthetic (diffaug.adapters.rebalance).
    strength: a float or a (low, high) range sampled per call (generator source; a bank uses its own).

    Call it as `tf(img, label)` (class-aware), `tf(img)`, or on a dict with the label under `label_key` (or
    "labels"/"label", as v2 looks for them). BoundingBoxes, Mask and KeyPoints are refused.
    Randomness comes from torch's RNG in `make_params`, so `torch.manual_seed` and DataLoader worker seeding
    make pipelines reproducible.
    """

    _transformed_types = (PIL.Image.Image, tv_tensors.Image, is_pure_tensor)

    def __init__(self, source: Generator | SampleBank, p: float = 0.5, mode: str = "synthesize", *,
                 mix: float = 0.5, strength: float | tuple[float, float] = STRENGTH, steps: int = SAMPLE_STEPS,
                 sampler: str = SAMPLER, guidance: float = GUIDANCE, label_key: str = "label", class_p=None):
        super().__init__()
        self.p, self.mode, self.mix, self.strength = check_options(p, mode, mix, strength)
        self.label_key = label_key
        self._source = AugmentSource(source, steps=steps, sampler=sampler, guidance=guidance)
        self.class_p = class_probabilities(class_p, self._source.source.class_names)

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        """v2's forward with the label found first and passed along: nothing of a call is kept on `self`, so
        thread-based loaders cannot pair one sample's label with another's image."""
        if kwargs:
            raise DataError(
                "diffaug.DiffusionAugment is the torchvision v2 transform: call it as tf(img, label), tf(img) or "
                "tf(sample); for albumentations' aug(image=..., class_label=...) use "
                "diffaug.adapters.albumentations.AlbumentationsDiffusionAugment")
        label = _find_label(inputs, self.label_key)
        if len(inputs) == 2 and label is not None and _is_image(inputs[0]):
            # The common dataset call tf(img, label): exactly what v2's forward does for it, without the
            # pytree round trip that costs more than a bank lookup.
            return self.transform(inputs[0], self._draw(label)), inputs[1]
        flat, spec = tree_flatten(inputs if len(inputs) > 1 else inputs[0])
        self.check_inputs(flat)
        images = {i for i, x in enumerate(flat) if isinstance(x, (PIL.Image.Image, tv_tensors.Image))}
        if not images:   # v2's rule: with no PIL image or tv_tensors.Image, the first plain tensor is the image
            images = {next((i for i, x in enumerate(flat) if is_pure_tensor(x)), -1)}
        params = self._draw(label)
        return tree_unflatten([self.transform(x, params) if i in images else x for i, x in enumerate(flat)], spec)

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        refused = sorted({type(x).__name__ for x in flat_inputs if isinstance(x, REFUSED)})
        if refused:
            raise DataError(
                f"DiffusionAugment replaces the whole image, so {', '.join(refused)} would no longer match it; "
                "it refuses them (as v2's MixUp and CutMix do): use it in classification pipelines, before any "
                "transform that creates boxes or masks")

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """v2's hook: the parameters of a call without a label (forward finds the label and uses _draw)."""
        return self._draw(None)

    def _draw(self, label: int | None) -> dict[str, Any]:
        u_apply, u_mode, u_strength, choice = torch.rand(4).tolist()   # one RNG call: per-sample cost matters here
        if not applies(self.p, self.class_p, label, u_apply):
            return {"apply": False}
        mode, strength = choose(self.mode, self.mix, self.strength, u_mode, u_strength)
        if mode == "synthesize" and label is None:
            raise DataError(
                "mode='synthesize' needs the class label: call the transform as tf(image, label) (e.g. "
                "v2.Compose([...])(img, label)), or wrap the dataset with diffaug.augment_dataset(ds, aug) when "
                "its transform= only sees images; mode='perturb' works without labels")
        seed = 0 if self._source.is_bank else int(torch.randint(2 ** 31 - 1, ()))   # only generation needs one
        return {"apply": True, "mode": mode, "label": label, "strength": strength, "choice": choice, "seed": seed}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["apply"]:
            return inpt
        meta = describe(inpt)
        self._source.check_shape(meta["shape"])
        label = params["label"]
        if params["mode"] == "synthesize":   # the input's pixels are not needed: skip converting them
            out = self._source.synthesize_one(label, params["choice"], params["seed"])
        else:
            out = self._source.perturb_one(to_uint8_chw(inpt), label, params["strength"], params["choice"],
                                           params["seed"])
        return from_uint8_chw(out, meta)


class AugmentedDataset(Dataset):
    """`dataset[i] = (image, label)` with `image, label = aug(image, label)` applied, then `transform` (e.g.
    ToImage)."""

    def __init__(self, dataset, aug, transform=None):
        self.dataset, self.aug, self.transform = dataset, aug, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        image, label = self.dataset[i]
        image, label = self.aug(image, label)   # v2 convention: a class-aware call returns (image, label)
        if self.transform is not None:
            image = self.transform(image)
        return image, label


def augment_dataset(dataset, aug, transform=None) -> AugmentedDataset:
    """Apply a class-aware augmentation to a map-style (image, label) dataset whose transform= sees no labels."""
    return AugmentedDataset(dataset, aug, transform)


class DiffusionBatchAugment:
    """`x, y = aug(x, y)`: replace a fraction `p` of a batch with synthetic or perturbed images, in one call.

    x: (N,C,H,W) uint8 (0..255) or float in `value_range` (default 0..1), on any device; generation runs on
    x's device in one batched network call. Randomness comes from torch's global RNG. `class_p`: per-class
    probabilities instead of the fraction `p` (each row replaced with its class's probability).
    """

    def __init__(self, source: Generator | SampleBank, p: float = 0.25, mode: str = "synthesize", *,
                 mix: float = 0.5, strength: float | tuple[float, float] = STRENGTH, steps: int = SAMPLE_STEPS,
                 sampler: str = SAMPLER, guidance: float = GUIDANCE, value_range: tuple[float, float] = (0.0, 1.0),
                 class_p=None):
        self.p, self.mode, self.mix, self.strength = check_options(p, mode, mix, strength)
        self.value_range = value_range
        self._source = AugmentSource(source, steps=steps, sampler=sampler, guidance=guidance)
        self.class_p = class_probabilities(class_p, self._source.source.class_names)

    def _to_uint8(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            return x
        lo, hi = self.value_range
        return ((x.float() - lo) / (hi - lo)).clamp(0, 1).mul(255).round().to(torch.uint8)

    def _from_uint8(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if not like.is_floating_point():
            return x.to(like.device)
        lo, hi = self.value_range
        return (x.to(like.device).float() / 255 * (hi - lo) + lo).to(like.dtype)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or len(x) != len(y):
            raise DataError(f"expected images (N,C,H,W) and N labels; got {tuple(x.shape)} and {tuple(y.shape)}")
        self._source.check_shape(x.shape)
        n = len(x)
        if self.class_p is None:
            chosen = torch.randperm(n)[:int(round(self.p * n))]
        else:
            labels = [self._source.check_label(int(v)) for v in y.detach().cpu().tolist()]
            chosen = torch.nonzero(torch.rand(n) < torch.tensor(self.class_p)[labels]).flatten()
        k = len(chosen)
        if k == 0:
            return x, y
        if self.mode == "mix":
            synth = torch.rand(k) < self.mix
        else:
            synth = torch.full((k,), self.mode == "synthesize")
        lo, hi = self.strength
        strength = lo + (hi - lo) * float(torch.rand(()))   # one strength per batch: one network call
        choices = torch.rand(k).tolist()
        seed = int(torch.randint(2 ** 31 - 1, ()))
        out = x.clone()
        labels = y.detach().cpu().tolist()
        for mask, mode in ((synth, "synthesize"), (~synth, "perturb")):
            rows = chosen[mask]
            if len(rows) == 0:
                continue
            picked = [choices[i] for i in torch.nonzero(mask).flatten().tolist()]
            if mode == "synthesize":
                new = self._source.synthesize([labels[r] for r in rows], picked, seed, device=x.device)
            else:
                new = self._source.perturb(self._to_uint8(x[rows.to(x.device)]).cpu(), [labels[r] for r in rows],
                                           strength, picked, seed, device=x.device)
            out[rows.to(x.device)] = self._from_uint8(new, x)
        return out, y
