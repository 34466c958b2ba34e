"""Classical augmentation applied to whole uint8 batches on their device, each image with its own random draw.

The policies are torchvision's own: the op list and magnitude bins come from the torchvision transform
(`TrivialAugmentWide`, `RandAugment`, `AutoAugment`), so the batched baseline draws from exactly the
policy of the per-image CPU reference in classical.py. The ops are kornia's batched ops with one
magnitude per image (torchvision's functional ops take one magnitude per call), grouped so that a batch
costs one call per op instead of one transform per image. tests/test_classical.py checks that both draw
the same ops with the same magnitude ranges and that each op matches torchvision's on the same magnitude.
"""

from __future__ import annotations

import kornia
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..errors import DataError

POLICIES = ("crop", "trivialaugment", "randaugment", "autoaugment")
# Translations scaled to the image (magnitude= given): at most this fraction of the side, RandAugment's 150/331
# (timm's translate_pct 0.45), where torchvision's TrivialAugmentWide moves up to 32 pixels whatever the size
# (four times the side of an 8x8 digit).
TRANSLATE_FRACTION = 150 / 331


def _kornia_ops():
    geo, enh = kornia.geometry.transform, kornia.enhance
    # torchvision's colour ops are no-ops on one channel
    grayscale_noop = lambda f: lambda x, m: x if x.shape[1] == 1 else f(x, m)   # noqa: E731
    zeros = lambda m: torch.zeros_like(m)   # noqa: E731
    return {   # x: float (n,C,H,W) in [0, 1]; m: the n magnitudes, in torchvision's units for that op
        "Identity": lambda x, m: x,
        # torchvision's shear by atan(m) about (0, 0) is kornia's shear by factor -m (the opposite sign convention)
        "ShearX": lambda x, m: geo.shear(x, torch.stack([-m, zeros(m)], 1), mode="nearest", align_corners=True),
        "ShearY": lambda x, m: geo.shear(x, torch.stack([zeros(m), -m], 1), mode="nearest", align_corners=True),
        "TranslateX": lambda x, m: shift(x, torch.stack([m.trunc(), zeros(m)], 1).long()),  # whole pixels (torchvision)
        "TranslateY": lambda x, m: shift(x, torch.stack([zeros(m), m.trunc()], 1).long()),
        "Rotate": lambda x, m: geo.rotate(x, m, mode="nearest"),
        # torchvision's Brightness blends with black, i.e. scales: kornia's adjust_contrast is that scaling.
        "Brightness": lambda x, m: enh.adjust_contrast(x, 1.0 + m),
        "Color": grayscale_noop(lambda x, m: enh.adjust_saturation_with_gray_subtraction(x, 1.0 + m)),
        "Contrast": lambda x, m: enh.adjust_contrast_with_mean_subtraction(x, 1.0 + m),
        "Sharpness": lambda x, m: enh.sharpness(x, 1.0 + m),
        "Posterize": lambda x, m: enh.posterize(x, m.long()),
        "Solarize": lambda x, m: enh.solarize(x, m),
        "Invert": lambda x, m: enh.invert(x),
        "AutoContrast": lambda x, m: TF.autocontrast(x),
        "Equalize": lambda x, m: TF.to_dtype(TF.equalize(TF.to_dtype(x, torch.uint8, scale=True)), torch.float32,
                                             scale=True),
    }


def shift(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Each image moved by its own whole-pixel (dx, dy), zeros shifted in: one gather from a padded batch."""
    n, c, h, w = images.shape
    pad = int(shifts.abs().max()) if len(shifts) else 0
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dev = images.device
    rows = (pad - shifts[:, 1:2].to(dev)) + torch.arange(h, device=dev)   # (n, h): source row of each output row
    cols = (pad - shifts[:, 0:1].to(dev)) + torch.arange(w, device=dev)
    return padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


class BatchAugment:
    """`augment(images)`: uint8 (N,C,H,W) -> uint8 (N,C,H,W) on the same device; per-image randomness from
    `generator` (or torch's global RNG). `name` is one of POLICIES; every policy starts with a random
    crop with zero padding of max(1, min(H, W) // 8) pixels (a per-image integer shift), as classical.py does.

    magnitude=None keeps torchvision's magnitudes exactly. A number m in (0, 1] scales them to the image:
    translations become fractions of the side (at most TRANSLATE_FRACTION), and every op's magnitudes move
    from its weakest value toward its strongest by m only (m = 1: torchvision's range). `p` is the share of
    images augmented at all (crop and policy); the others pass through unchanged."""

    def __init__(self, name: str, size: tuple[int, int], hflip: bool = False, magnitude: float | None = None,
                 p: float = 1.0):
        if name not in POLICIES:
            raise DataError(f"unknown batched policy {name!r}; choose one of {POLICIES}")
        if magnitude is not None and not 0.0 < magnitude <= 1.0:
            raise DataError(f"magnitude must lie in (0, 1], got {magnitude!r}")
        if not 0.0 < p <= 1.0:
            raise DataError(f"p must lie in (0, 1], got {p!r}")
        self.name, self.size, self.hflip, self.magnitude, self.p = name, tuple(size), hflip, magnitude, p
        self.pad = max(1, min(size) // 8)
        self.ops = _kornia_ops()
        self.policy = {"trivialaugment": v2.TrivialAugmentWide(), "randaugment": v2.RandAugment(),
                       "autoaugment": v2.AutoAugment()}.get(name)
        if self.policy is not None:
            h, w = self.size
            self.space = {op: (fn(self.policy.num_magnitude_bins if hasattr(self.policy, "num_magnitude_bins")
                                  else 10, h, w), signed)
                          for op, (fn, signed) in self.policy._AUGMENTATION_SPACE.items()}
            unknown = set(self.space) - set(self.ops)
            if unknown:   # a newer torchvision added ops: refuse rather than silently skip them
                raise DataError(f"torchvision's {name} has ops diffaug's batched version lacks: {sorted(unknown)}")
            # the same space as a table, so a batch's magnitudes are one lookup: row = op, column = magnitude bin
            self.names = list(dict.fromkeys([*self.space, "Identity"]))   # AutoAugment's space has no Identity
            self.index = {op: i for i, op in enumerate(self.names)}
            bins = max((v.numel() for v, _ in self.space.values() if v is not None and v.ndim > 0), default=1)
            self.table = torch.zeros(len(self.names), bins)
            self.signed = torch.zeros(len(self.names), dtype=torch.bool)
            for i, (values, signed) in enumerate(self.space.get(op, (None, False)) for op in self.names):
                if values is not None and values.ndim > 0:
                    self.table[i, :values.numel()] = values.float()
                    self.signed[i] = signed
            if magnitude is not None:
                self._scale_to_image(magnitude)

    def _scale_to_image(self, m: float) -> None:
        """Translations as fractions of the side; every row from its weakest value toward its strongest by m."""
        h, w = self.size
        for op, side in (("TranslateX", w), ("TranslateY", h)):
            if op in self.index:
                row = self.table[self.index[op]]
                row.copy_(torch.linspace(0.0, TRANSLATE_FRACTION * side, len(row)))
        self.table = self.table[:, :1] + m * (self.table - self.table[:, :1])
        if "Posterize" in self.index:   # bits stay whole numbers
            self.table[self.index["Posterize"]] = self.table[self.index["Posterize"]].round()

    # --- drawing: per op slot, (op name per image, magnitude per image); slots are applied in sequence ---

    def draw(self, n: int, generator: torch.Generator | None = None) -> list[tuple[list, torch.Tensor]]:
        """The random part: for each op slot, the op name of every image and its magnitude (torchvision's units)."""
        rand = lambda *shape: torch.rand(shape, generator=generator)   # noqa: E731
        randint = lambda hi, *shape: torch.randint(hi, shape, generator=generator)   # noqa: E731
        slots = []
        if self.name == "trivialaugment":
            slots.append(self._magnitudes(randint(len(self.names), n), randint(self.policy.num_magnitude_bins, n),
                                          rand(n)))
        elif self.name == "randaugment":
            bins = torch.full((n,), self.policy.magnitude, dtype=torch.long)
            for _ in range(self.policy.num_ops):
                slots.append(self._magnitudes(randint(len(self.names), n), bins, rand(n)))
        elif self.name == "autoaugment":
            policies = self.policy._policies
            which = randint(len(policies), n)
            for slot in range(2):   # every AutoAugment sub-policy is two (op, probability, magnitude bin) steps
                ops = [policies[i][slot] for i in which.tolist()]
                apply = rand(n) <= torch.tensor([p for _, p, _ in ops])
                op_idx = torch.tensor([self.index[op] for op, _, _ in ops])
                op_idx = torch.where(apply, op_idx, self.index["Identity"])
                bins = torch.tensor([b if b is not None else 0 for _, _, b in ops])
                slots.append(self._magnitudes(op_idx, bins, rand(n)))
        return slots

    def _magnitudes(self, op_idx: torch.Tensor, bins: torch.Tensor, sign_draw: torch.Tensor):
        """Op names and magnitudes of one slot: the table's bin, negated for signed ops when sign_draw <= 0.5."""
        mags = self.table[op_idx, bins.clamp(max=self.table.shape[1] - 1)]
        mags = torch.where(self.signed[op_idx] & (sign_draw <= 0.5), -mags, mags)
        return [self.names[i] for i in op_idx.tolist()], mags

    # --- applying -----------------------------------------------------------------------------------------

    def apply(self, images: torch.Tensor, slots, shifts: torch.Tensor, flips: torch.Tensor | None) -> torch.Tensor:
        """Deterministic: crop shifts (n, 2) in pixels, optional flips (n,), then each slot's ops."""
        x = shift(images, shifts.long()).float() / 255.0   # = RandomCrop(padding=pad, fill=0) of the same offset
        if flips is not None:
            x = torch.where(flips.to(x.device)[:, None, None, None], x.flip(-1), x)
        for op_names, mags in slots:
            mags = mags.to(x.device)
            for op in dict.fromkeys(op_names):   # one call per distinct op, on the images that drew it
                if op == "Identity":
                    continue
                rows = torch.tensor([i for i, o in enumerate(op_names) if o == op], device=x.device)
                out = self.ops[op](x[rows], mags[rows]).clamp(0.0, 1.0)
                x[rows] = (out * 255.0).round() / 255.0   # torchvision rounds to uint8 after every op
        return (x * 255.0).round().to(torch.uint8)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[-2:]) != self.size:
            raise DataError(f"BatchAugment takes uint8 (N,C,{self.size[0]},{self.size[1]}) batches, "
                            f"got {images.dtype} {tuple(images.shape)}")
        if self.p < 1.0:   # only the chosen images are augmented; the draw is skipped at p = 1 (same stream)
            chosen = (torch.rand(len(images), generator=generator) < self.p).to(images.device)
            out = images.clone()
            out[chosen] = self._augment(images[chosen], generator)
            return out
        return self._augment(images, generator)

    def _augment(self, images: torch.Tensor, generator) -> torch.Tensor:
        n = len(images)
        shifts = torch.randint(-self.pad, self.pad + 1, (n, 2), generator=generator).float()
        flips = torch.rand(n, generator=generator) < 0.5 if self.hflip else None
        slots = self.draw(n, generator) if self.policy is not None else []
        return self.apply(images, slots, shifts, flips)

