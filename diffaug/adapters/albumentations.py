"""albumentations adapter: `DiffusionAugment`, an ImageOnlyTransform following albumentations' contract."""

from __future__ import annotations

from typing import Any, Literal, Union

import numpy as np
import torch

from ..errors import DataError, require_extra
from .source import AugmentSource, check_options, choose

A = require_extra("albumentations", "albumentations")
from albumentations.core.transforms_interface import BaseTransformInitSchema, ImageOnlyTransform  # noqa: E402
from pydantic import Field  # noqa: E402  (albumentations' own dependency)


def _to_uint8_chw(img: np.ndarray) -> torch.Tensor:
    if img.dtype == np.uint8:
        arr = img
    elif img.dtype == np.float32:   # albumentations' float convention: [0, 1]
        arr = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    else:
        raise DataError(f"images must be uint8 or float32 (albumentations' types), got {img.dtype}")
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _like(x: np.ndarray, img: np.ndarray) -> np.ndarray:
    arr = x.transpose(1, 2, 0)
    arr = arr[:, :, 0] if img.ndim == 2 else arr
    return (arr.astype(np.float32) / 255.0) if img.dtype == np.float32 else np.ascontiguousarray(arr)


class DiffusionAugment(ImageOnlyTransform):
    """Replace the image by a synthetic image of its class, or by its perturbation, with probability p.

    The class label is read from the call's data under `label_key`: `aug(image=img, class_label=3)`.
    All randomness is drawn in `get_params_dependent_on_data` from the transform's own generators, so
    `A.Compose([...], seed=...)` makes a pipeline reproducible. HWC (or HW) uint8 or float32 [0, 1] in,
    the same out. `source` is a diffaug `Generator` or `SampleBank` (use a bank inside DataLoader workers).
    """

    class InitSchema(BaseTransformInitSchema):
        source: Any
        mode: Literal["synthesize", "perturb", "mix"]
        mix: float = Field(ge=0, le=1)
        strength: Union[float, tuple[float, float]]
        steps: int = Field(ge=1)
        sampler: Literal["dpmpp_2m", "ddim", "ddpm"]
        guidance: float = Field(ge=0)
        label_key: str

    def __init__(self, source, mode: Literal["synthesize", "perturb", "mix"] = "synthesize", mix: float = 0.5,
                 strength: float | tuple[float, float] = 0.4, steps: int = 20,
                 sampler: Literal["dpmpp_2m", "ddim", "ddpm"] = "dpmpp_2m", guidance: float = 2.0,
                 label_key: str = "class_label", p: float = 0.5):
        super().__init__(p=p)
        self.source = source
        _, self.mode, self.mix, self.strength = check_options(p, mode, mix, strength)
        self.steps, self.sampler, self.guidance, self.label_key = steps, sampler, guidance, label_key
        self._source = AugmentSource(source, steps=steps, sampler=sampler, guidance=guidance)

    @property
    def targets_as_params(self) -> list[str]:
        return []   # the label is optional: perturb works without it

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        label = data.get(self.label_key)
        mode, strength = choose(self.mode, self.mix, self.strength, self.py_random.random(), self.py_random.random())
        if mode == "synthesize" and label is None:
            raise DataError(f"mode='synthesize' needs the class label: call aug(image=img, {self.label_key}=y) "
                            f"(label_key={self.label_key!r})")
        return {"mode": mode, "label": None if label is None else int(label), "strength": strength,
                "choice": self.py_random.random(), "seed": self.py_random.randrange(2 ** 31 - 1)}

    def apply(self, img: np.ndarray, mode: str, label: int | None, strength: float, choice: float, seed: int,
              **params: Any) -> np.ndarray:
        x = _to_uint8_chw(img)
        self._source.check_shape(x.shape)
        if mode == "synthesize":
            out = self._source.synthesize_one(label, choice, seed)
        else:
            out = self._source.perturb_one(x, label, strength, choice, seed)
        return _like(out, img)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("mode", "mix", "strength", "steps", "sampler", "guidance", "label_key")
