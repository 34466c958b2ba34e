"""Where augmented images come from: a Generator (on the fly) or a SampleBank (O(1) lookups).

The ecosystem adapters draw their randomness in their own way and hand the draws to `AugmentSource`,
which turns them into images; so torchvision, albumentations and the batch augmenter share one behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ..checks import check_probability, check_strength, is_number
from ..diffusion.sampling import GUIDANCE, SAMPLE_STEPS, SAMPLER, SamplingSpec
from ..errors import DataError, MismatchError
from ..generator import Generator
from .bank import SampleBank

MODES = ("synthesize", "perturb", "mix")


def check_options(p: float, mode: str, mix: float, strength) -> tuple[float, str, float, tuple[float, float]]:
    """The options every adapter shares, validated: (p, mode, mix, (strength_low, strength_high))."""
    check_probability(p, "p")
    if mode not in MODES:
        raise DataError(f"mode must be one of {MODES}, got {mode!r}")
    check_probability(mix, "mix (the share of 'synthesize' in mode='mix')")
    return p, mode, mix, check_strength(strength)


def class_probabilities(class_p, class_names: list[str]) -> tuple[float, ...] | None:
    """`class_p` as one probability per class of the source, or None: a sequence with one per class, or a
    {class name or index: p} dict (classes it does not name: 0)."""
    if class_p is None:
        return None
    n = len(class_names)
    if isinstance(class_p, Mapping):
        out = [0.0] * n
        for key, value in class_p.items():
            index = class_names.index(key) if isinstance(key, str) and key in class_names else key
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
                raise MismatchError(f"class_p names {key!r}, which is not a class of the source (classes "
                                    f"{', '.join(class_names[:10])}{' ...' if n > 10 else ''})")
            out[int(index)] = check_probability(value, f"class_p[{key!r}]")
        return tuple(out)
    if isinstance(class_p, (str, bytes)) or not hasattr(class_p, "__len__"):
        raise DataError(f"class_p must be one probability per class (a sequence of {n}) or a {{class: p}} dict, "
                        f"got {class_p!r}")
    if len(class_p) != n:
        raise MismatchError(f"class_p holds {len(class_p)} probabilities but the source has {n} classes")
    return tuple(check_probability(float(v), f"class_p[{i}]") for i, v in enumerate(class_p))


def applies(p: float, class_p: tuple | None, label: int | None, u: float) -> bool:
    """Whether a call with uniform draw `u` is augmented: u < p, or u < class_p[label] when per-class
    probabilities are given (they need the label)."""
    if class_p is None:
        return u < p
    if label is None:
        raise DataError("per-class probabilities (class_p=) need the class label of every call")
    if not 0 <= label < len(class_p):
        raise MismatchError(f"label {label} is not a class of the source (classes 0..{len(class_p) - 1})")
    return u < class_p[label]


def choose(mode: str, mix: float, strength: tuple[float, float], u_mode: float, u_strength: float) -> tuple[str, float]:
    """Turn two uniform draws into this call's (mode, strength)."""
    if mode == "mix":
        mode = "synthesize" if u_mode < mix else "perturb"
    lo, hi = strength
    return mode, lo + (hi - lo) * u_strength


class AugmentSource:
    """Turns random draws into images: synthetic ones of a class, or perturbations of a given image."""

    def __init__(self, source: Generator | SampleBank, *, steps: int = SAMPLE_STEPS, sampler: str = SAMPLER,
                 guidance: float = GUIDANCE):
        if not isinstance(source, (Generator, SampleBank)):
            raise DataError(f"the augmentation source must be a diffaug Generator or SampleBank, "
                            f"got {type(source).__name__}")
        self.source = source
        self.options = dict(**SamplingSpec(steps, sampler, guidance=guidance).fields(), progress=False)

    @property
    def is_bank(self) -> bool:
        return isinstance(self.source, SampleBank)

    def check_shape(self, shape) -> None:
        """shape: (C,H,W) or (N,C,H,W); same channels and size as the source, or a clear error."""
        c, (h, w) = self.source.channels, self.source.image_size
        if shape[-3] != c or tuple(shape[-2:]) != (h, w):
            raise MismatchError(
                f"the pipeline's images are {shape[-3]}x{shape[-2]}x{shape[-1]} (CxHxW) but the "
                f"{'bank' if self.is_bank else 'generator'} makes {c}x{h}x{w}: put v2.Resize(({h}, {w})) "
                f"(and a grayscale/RGB conversion) before DiffusionAugment, or fit a generator at this size")

    def label_index(self, y) -> int:
        """A label as a class index: a whole number (or a one-element tensor/array of one) or a class name."""
        if isinstance(y, (torch.Tensor, np.ndarray)):
            if y.size != 1 if isinstance(y, np.ndarray) else y.numel() != 1:
                raise DataError(f"a label must be one class index, got an array of shape {tuple(y.shape)}")
            y = y.item()
        if isinstance(y, str):
            if y not in self.source.class_names:
                raise MismatchError(f"unknown class name {y!r}; the classes are {self.source.class_names[:10]}")
            return self.source.class_names.index(y)
        if not is_number(y) or not float(y).is_integer():
            raise DataError(f"a label must be a class index or a class name, got {y!r}")
        return self.check_label(int(y))

    def check_label(self, label: int) -> int:
        if not 0 <= label < self.source.num_classes:
            raise MismatchError(f"label {label} is not a class of the generator "
                                f"(classes 0..{self.source.num_classes - 1}: "
                                f"{', '.join(self.source.class_names[:10])}"
                                f"{' ...' if self.source.num_classes > 10 else ''})")
        return label

    def synthesize_one(self, label: int, choice: float, seed: int) -> np.ndarray:
        """One synthetic uint8 (C,H,W) image of class `label` (read-only when it comes from a bank)."""
        if self.is_bank:
            return self.source.synthetic(self.check_label(label), choice)
        return self.synthesize([label], [choice], seed)[0].numpy()

    def perturb_one(self, image: torch.Tensor, label: int | None, strength: float, choice: float,
                    seed: int) -> np.ndarray:
        """One perturbation (C,H,W) uint8 of a uint8 (C,H,W) image (read-only when it comes from a bank)."""
        if self.is_bank:
            return self.source.perturbed(self._bank_row(image), choice)
        return self.perturb(image[None], None if label is None else [label], strength, [choice], seed)[0].numpy()

    def _bank_row(self, image) -> int:
        row = self.source.find(image)
        if row is None:
            raise DataError(
                "an image is not in the sample bank, so it has no stored perturbations: put DiffusionAugment "
                "first in the pipeline (before crops, flips, colour changes) and build the bank from this "
                "dataset's images (SampleBank.build(gen, path, data=...)), or pass the Generator to perturb "
                "on the fly")
        return row

    def synthesize(self, labels: list[int], choices: list[float], seed: int, device=None) -> torch.Tensor:
        """Synthetic images (N,C,H,W) uint8 of the given classes."""
        labels = [self.check_label(int(y)) for y in labels]
        if self.is_bank:
            return torch.from_numpy(np.stack([self.source.synthetic(y, u) for y, u in zip(labels, choices)]))
        return self.source.sample(labels, seed=seed, device=device, **self.options)

    def perturb(self, images: torch.Tensor, labels: list[int] | None, strength: float, choices: list[float],
                seed: int, device=None) -> torch.Tensor:
        """Perturbations (N,C,H,W) uint8 of uint8 images; labels None means the null class.

        From a bank, `choices` pick among the stored copies (made at the bank's strengths);
        from a generator, `strength` is used and `seed` drives the noise."""
        if labels is not None:
            labels = [self.check_label(int(y)) for y in labels]
        if self.is_bank:
            return torch.from_numpy(np.stack([self.source.perturbed(self._bank_row(x), u)
                                              for x, u in zip(images, choices)]))
        return self.source.perturb(images, labels, strength=strength, seed=seed, device=device, **self.options)
