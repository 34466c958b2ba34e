"""albumentations adapter: `AlbumentationsDiffusionAugment`, an ImageOnlyTransform keeping albumentations' contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..diffusion.sampling import GUIDANCE, SAMPLE_STEPS, SAMPLER, STRENGTH
from ..errors import DataError, require_extra
from ..generator import Generator
from .bank import SampleBank
from .source import AugmentSource, applies, check_options, choose, class_probabilities

A = require_extra("albumentations", "albumentations")
from albumentations.core.transforms_interface import BaseTransformInitSchema, ImageOnlyTransform  # noqa: E402


def _to_uint8_chw(img: np.ndarray) -> torch.Tensor:
    if img.dtype == np.uint8:
        arr = img
    elif img.dtype == np.float32:   # albumentations' float convention: [0, 1]
        arr = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    else:
        raise DataError(f"images must be uint8 or float32 (albumentations' types), got {img.dtype}")
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    if arr.ndim != 3:
        raise DataError(f"an image must be HxW or HxWxC, got shape {img.shape} (pass a batch as images=[...])")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _like(x: np.ndarray, img: np.ndarray) -> np.ndarray:
    arr = x.transpose(1, 2, 0)
    arr = arr[:, :, 0] if img.ndim == 2 else arr
    return (arr.astype(np.float32) / 255.0) if img.dtype == np.float32 else np.ascontiguousarray(arr)


# Targets whose geometry a replaced image would no longer match.
REFUSED = ("mask", "masks", "bboxes", "keypoints")


def _resolve(source):
    """A Generator or SampleBank as given, or the path of one: a folder is a bank, a file a generator."""
    if not isinstance(source, (str, Path)):
        return source
    path = Path(source)
    if path.is_dir():
        return SampleBank(path)
    if path.is_file():
        return Generator.load(path)
    raise DataError(f"{path} is neither a sample bank folder nor a generator file")


class AlbumentationsDiffusionAugment(ImageOnlyTransform):
    """Replace the image by a synthetic image of its class, or by its perturbation, with probability p.

    source: a diffaug `Generator` or `SampleBank`, or the path of either (what serialization stores; use a
    bank inside DataLoader workers). The class label is read from the call's data under `label_key`:
    `aug(image=img, class_label=3)`; the key is declared, so `A.Compose(..., strict=True)` accepts it.
    `images=` gets one draw per image (the label: one for all, or one per image). `mask`, `masks`, `bboxes`
    and `keypoints` are refused: a new image would no longer match them. All randomness is drawn in
    `get_params_dependent_on_data` from the transform's own generators, so `A.Compose([...], seed=...)` makes a
    pipeline reproducible. HWC (or HW) uint8 or float32 [0, 1] in, the same out.
    """

    class InitSchema(BaseTransformInitSchema):
        # Checked by diffaug itself (check_options, AugmentSource) so that bad values raise a DataError naming
        # them, as every diffaug entry point does, rather than a pydantic report.
        p: Any
        source: Any
        mode: Any
        mix: Any
        strength: Any
        steps: Any
        sampler: Any
        guidance: Any
        label_key: Any
        class_p: Any

    def __init__(self, source, mode: str = "synthesize", mix: float = 0.5,
                 strength: float | tuple[float, float] = STRENGTH, steps: int = SAMPLE_STEPS,
                 sampler: str = SAMPLER, guidance: float = GUIDANCE,
                 label_key: str = "class_label", p: float = 0.5, class_p=None):
        options = check_options(p, mode, mix, strength)   # before albumentations' own check of p: a DataError
        # per-class probabilities: albumentations' own p lets every call through, and each draw applies with its
        # class's probability (the label is needed)
        super().__init__(p=p if class_p is None else 1.0)
        self.source = source
        _, self.mode, self.mix, self.strength = options
        self.steps, self.sampler, self.guidance, self.label_key = steps, sampler, guidance, label_key
        self._source = AugmentSource(_resolve(source), steps=steps, sampler=sampler, guidance=guidance)
        self.class_p = class_probabilities(class_p, self._source.source.class_names)

    @property
    def available_keys(self) -> set[str]:
        return super().available_keys | {self.label_key}   # declared (strict Compose), but optional

    def __call__(self, *args: Any, force_apply: bool = False, **kwargs: Any) -> Any:
        present = [key for key in REFUSED if kwargs.get(key) is not None]
        if present:
            raise DataError(f"AlbumentationsDiffusionAugment replaces the whole image, so {', '.join(present)} would "
                            "no longer match it; it refuses them: use it in classification pipelines")
        return super().__call__(*args, force_apply=force_apply, **kwargs)

    def _draw(self, label) -> dict[str, Any]:
        if self.class_p is not None:
            if label is None:
                raise DataError(f"per-class probabilities (class_p=) need the class label: call aug(image=img, "
                                f"{self.label_key}=y)")
            if not applies(1.0, self.class_p, self._source.label_index(label), self.py_random.random()):
                return {"mode": None}
        mode, strength = choose(self.mode, self.mix, self.strength, self.py_random.random(), self.py_random.random())
        if mode == "synthesize" and label is None:
            raise DataError(f"mode='synthesize' needs the class label: call aug(image=img, {self.label_key}=y) "
                            f"(label_key={self.label_key!r})")
        return {"mode": mode, "label": None if label is None else self._source.label_index(label), "strength": strength,
                "choice": self.py_random.random(), "seed": self.py_random.randrange(2 ** 31 - 1)}

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        label = data.get(self.label_key)
        if "images" not in data:
            return {"draws": [self._draw(label)]}
        n = len(data["images"])
        labels = list(label) if isinstance(label, (list, tuple, np.ndarray)) else [label] * n
        if len(labels) != n:
            raise DataError(f"{len(labels)} labels under {self.label_key!r} for {n} images: give one label, or one "
                            "per image")
        return {"draws": [self._draw(y) for y in labels]}

    def _one(self, img: np.ndarray, mode: str | None, label: int | None = None, strength: float = 0.0,
             choice: float = 0.0, seed: int = 0) -> np.ndarray:
        if mode is None:   # class_p left this image as it is
            return img
        x = _to_uint8_chw(img)
        self._source.check_shape(x.shape)
        if mode == "synthesize":
            out = self._source.synthesize_one(label, choice, seed)
        else:
            out = self._source.perturb_one(x, label, strength, choice, seed)
        return _like(out, img)

    def apply(self, img: np.ndarray, draws: list, **params: Any) -> np.ndarray:
        return self._one(img, **draws[0])

    def apply_to_images(self, images, draws: list, **params: Any):
        out = [self._one(img, **draw) for img, draw in zip(images, draws)]
        return np.require(np.stack(out), requirements=["C_CONTIGUOUS"]) if isinstance(images, np.ndarray) else out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("source", "mode", "mix", "strength", "steps", "sampler", "guidance", "label_key", "class_p")

    def get_transform_init_args(self) -> dict[str, Any]:
        args = super().get_transform_init_args()
        source = self.source
        if isinstance(source, SampleBank):
            source = str(source.path)
        elif isinstance(source, Path):
            source = str(source)
        if not isinstance(source, str):
            raise DataError("an in-memory Generator cannot be serialized: save it (gen.save(path)) and pass the path, "
                            "or pass a SampleBank (its folder is stored)")
        return {**args, "source": source, "strength": list(self.strength),
                "class_p": None if self.class_p is None else list(self.class_p)}


def __getattr__(name: str):
    if name == "DiffusionAugment":   # the torchvision transform is diffaug.DiffusionAugment; never confuse the two
        raise ImportError("the albumentations transform is AlbumentationsDiffusionAugment (diffaug.DiffusionAugment is "
                          "the torchvision one): from diffaug.adapters.albumentations import "
                          "AlbumentationsDiffusionAugment")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
