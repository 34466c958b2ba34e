"""One in-memory form for labelled images (`ImageData`), built from arrays, .npz files, image folders, HF and
torchvision datasets; `loading.py` maps a name or a path onto these (and holds the built-in datasets)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .checks import is_number
from .errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class ImageData:
    """Labelled images: uint8 `images` (N,C,H,W), int64 `labels` (N,) in 0..C-1, and `class_names`."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str] = field(default_factory=list)
    source: str = field(default="", compare=False, repr=False)   # where load_data found it, for reports

    def __post_init__(self):
        images, labels = self.images, self.labels
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            raise DataError("ImageData.images must be a uint8 tensor of shape (N, C, H, W); "
                            "use ImageData.from_arrays to convert other layouts")
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.ndim != 1:
            raise DataError("ImageData.labels must be an int64 tensor of shape (N,)")
        if len(images) == 0:
            raise DataError("the dataset is empty: no images")
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        names = list(self.class_names) or [str(i) for i in range(int(labels.max()) + 1)]
        object.__setattr__(self, "class_names", [str(n) for n in names])
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= len(names):
            raise DataError(f"labels must lie in 0..{len(names) - 1} (one per class name); found {low}..{high}")
        counts = torch.bincount(labels, minlength=len(names))
        empty = [names[i] for i in torch.nonzero(counts == 0).flatten().tolist()]
        if empty:
            raise DataError(f"class(es) with no images: {', '.join(empty[:10])}; "
                            "drop the class name or add images")

    # --- views ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of every image."""
        return tuple(self.images.shape[2:])

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def fingerprint(self) -> str:
        """A short hash of pixels, labels and class names: names the data a generator was fitted on."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.images.numpy()).tobytes())
        h.update(self.labels.numpy().tobytes())
        h.update("\x00".join(self.class_names).encode())
        return h.hexdigest()[:16]

    def image_hashes(self) -> np.ndarray:
        """One 8-byte hash per image, uint8 (N, 8): finds the same picture in another dataset (leakage checks)."""
        return image_hashes(self.images)

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return (f"ImageData({len(self)} images, {c}x{h}x{w}, {self.num_classes} classes, "
                f"per class {min(self.class_counts())}..{max(self.class_counts())})")

    # --- selection --------------------------------------------------------------------------------

    def select(self, index) -> "ImageData":
        """The rows at `index` (keeps all class names; every class must keep an image)."""
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageData(self.images[index], self.labels[index], self.class_names)

    def subset(self, per_class: int | Sequence[int], seed: int = 0) -> "ImageData":
        """A stratified random subset with `per_class` images of every class (all of a smaller class), or with
        `per_class[c]` images of class c (a long-tailed draw: see `longtail_counts`). `short_classes` says
        which classes hold fewer images than asked."""
        wanted = self._wanted(per_class)
        rng = np.random.default_rng(seed)
        labels = self.labels.numpy()
        keep = [rng.permutation(np.flatnonzero(labels == c))[:n] for c, n in enumerate(wanted)]
        return self.select(np.sort(np.concatenate(keep)))

    def short_classes(self, per_class: int | Sequence[int]) -> dict[str, tuple[int, int]]:
        """{class name: (images asked, images held)} for every class that holds fewer than `subset` asks."""
        held = self.class_counts()
        return {self.class_names[c]: (n, held[c]) for c, n in enumerate(self._wanted(per_class)) if held[c] < n}

    def _wanted(self, per_class) -> list[int]:
        if isinstance(per_class, (int, np.integer)):
            if per_class < 1:
                raise DataError(f"per_class must be at least 1, got {per_class}")
            return [int(per_class)] * self.num_classes
        wanted = [int(n) for n in per_class]
        if len(wanted) != self.num_classes or min(wanted) < 1:
            raise DataError(f"per_class must be a whole number >= 1 or one such number per class "
                            f"({self.num_classes}), got {list(per_class)}")
        return wanted

    def split(self, fraction: float = 0.5, seed: int = 0) -> tuple["ImageData", "ImageData"]:
        """A stratified split into (first, second), `fraction` of each class going to the first part."""
        if not 0.0 < fraction < 1.0:
            raise DataError(f"fraction must lie strictly between 0 and 1, got {fraction}")
        rng = np.random.default_rng(seed)
        labels = self.labels.numpy()
        first, second = [], []
        for c in range(self.num_classes):
            idx = rng.permutation(np.flatnonzero(labels == c))
            if len(idx) < 2:
                raise DataError(f"class {self.class_names[c]!r} has {len(idx)} image; a split needs 2 per class")
            cut = min(max(1, round(fraction * len(idx))), len(idx) - 1)
            first.append(idx[:cut])
            second.append(idx[cut:])
        return self.select(np.sort(np.concatenate(first))), self.select(np.sort(np.concatenate(second)))

    # --- constructors -----------------------------------------------------------------------------

    @classmethod
    def from_arrays(cls, images, labels, class_names: Sequence[str] | None = None) -> "ImageData":
        """From array-likes: images (N,H,W), (N,H,W,C) or (N,C,H,W), uint8 0..255 or float 0..1."""
        return cls(_to_uint8_nchw(images), _to_labels(labels, len(images) if hasattr(images, "__len__") else None),
                   list(class_names) if class_names is not None else [])

    @classmethod
    def from_npz(cls, path) -> "ImageData":
        """From an `.npz` with `images`, `labels` and optional `class_names`."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"no such file: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:
            raise DataError(f"{path} is not a readable .npz file ({e})") from None
        missing = {"images", "labels"} - arrays.keys()
        if missing:
            raise DataError(f"{path} lacks the array(s) {sorted(missing)}; it has {sorted(arrays)}")
        names = arrays.get("class_names")
        return cls.from_arrays(arrays["images"], arrays["labels"], None if names is None else names.tolist())

    def to_npz(self, path) -> None:
        """Write images (N,H,W,C), labels and class_names to `path` atomically."""
        from .io import atomic_path
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, images=self.images.permute(0, 2, 3, 1).numpy(),
                                    labels=self.labels.numpy(), class_names=np.array(self.class_names))

    @classmethod
    def from_folder(cls, path, image_size: int | None = None, background=None, progress: bool = False) -> "ImageData":
        """From an ImageFolder layout: one sub-folder per class (sorted names), images inside, read as they come
        (images.to_array: EXIF orientation, transparency on `background`, any mode; grayscale beside colour read as
        RGB). `image_size=N`: each image's shorter side resized to N and its centre cropped to N x N; without it,
        images of mixed sizes are refused."""
        from .images import check_image_size, parse_background, read_images, stack

        size, background = check_image_size(image_size), parse_background(background)
        root = Path(path)
        if not root.is_dir():
            raise DataError(f"no such folder: {root}")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise DataError(f"{root} has no class sub-folders (expected one folder per class)")
        files, labels = [], []
        for label, name in enumerate(classes):
            found = sorted(f for f in (root / name).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"class folder {root / name} has no images")
            files += found
            labels += [label] * len(found)
        images = stack(read_images(files, size, background, progress, desc=f"reading {root.name}"), str(root), size)
        return cls.from_arrays(images, np.array(labels), classes)

    def resized(self, image_size: int) -> "ImageData":
        """The same images at image_size x image_size (shorter side resized, antialiased, centre cropped)."""
        from .images import check_image_size, resize_tensor

        size = check_image_size(image_size)
        if self.size == (size, size):
            return self
        return ImageData(resize_tensor(self.images, size), self.labels, list(self.class_names))

    def to_folder(self, path, overwrite: bool = False) -> None:
        """Write an ImageFolder layout (one sub-folder per class, lossless PNGs) atomically; `from_folder` and
        torchvision's `ImageFolder` read it back (class folders sort as the classes do when names are digits
        or zero-padded). An existing `path` is only replaced with overwrite=True."""
        from PIL import Image

        from .io import atomic_path
        names = self.class_names or [str(c) for c in range(self.num_classes)]
        bad = [n for n in names if not n or "/" in n or n.startswith(".")]
        if bad:
            raise DataError(f"class names {bad[:3]} cannot be folder names")
        width = len(str(len(self) - 1))
        with atomic_path(path, overwrite=overwrite) as tmp:
            for name in names:
                (tmp / name).mkdir(parents=True)
            for i, (x, y) in enumerate(zip(self.images.numpy(), self.labels.tolist())):
                Image.fromarray(x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)).save(
                    tmp / names[y] / f"{i:0{width}d}.png")

    @classmethod
    def from_hf(cls, ds, image_column: str = "image", label_column: str = "label", image_size: int | None = None,
                background=None) -> "ImageData":
        """From a Hugging Face `datasets.Dataset` (an `Image` or array column and an int/ClassLabel column); images
        as `from_folder` reads them (`image_size`, `background`)."""
        from .images import check_image_size, parse_background, stack

        size, background = check_image_size(image_size), parse_background(background)
        for col in (image_column, label_column):
            if col not in ds.column_names:
                raise DataError(f"the dataset has no column {col!r}; its columns are {ds.column_names} "
                                "(pass image_column=/label_column=)")
        feature = ds.features[label_column]
        names = list(getattr(feature, "names", None) or [])
        images = [_pil_or_array(x, size, background) for x in _column(ds, image_column)]
        return cls.from_arrays(stack(images, f"column {image_column!r}", size), hf_column(ds, label_column),
                               names or None)

    @classmethod
    def from_torchvision(cls, dataset, class_names: Sequence[str] | None = None, image_size: int | None = None,
                         background=None) -> "ImageData":
        """From a torchvision-style dataset yielding (PIL image or array, int label), e.g. `MNIST(...)` or
        `ImageFolder(...)`; images as `from_folder` reads them (`image_size`, `background`)."""
        from .images import check_image_size, parse_background, stack

        size, background = check_image_size(image_size), parse_background(background)
        data = getattr(dataset, "data", None)
        targets = getattr(dataset, "targets", None)
        names = class_names or getattr(dataset, "classes", None)
        if data is not None and targets is not None and getattr(dataset, "transform", None) is None:
            whole = cls.from_arrays(np.asarray(data), np.asarray(targets), names)
            return whole.resized(size) if size else whole
        pairs = [dataset[i] for i in range(len(dataset))]
        return cls.from_arrays(stack([_pil_or_array(x, size, background) for x, _ in pairs], "the dataset", size),
                               np.array([int(y) for _, y in pairs]), names)


def longtail_counts(head: int, ratio: float, num_classes: int, seed: int = 0) -> list[int]:
    """Images per class of a long-tailed draw, as CIFAR-10-LT builds it (Cao et al. 2019): the class of rank i
    gets round(head * ratio ** (-i / (num_classes - 1))) images, from `head` down to round(head / ratio), and
    the ranks are dealt to the classes in an order drawn from `seed`. Rounded half up (with a margin far above
    a last-bit difference in pow), not truncated, so no count hangs on how a CPU rounds."""
    if not is_number(ratio) or not 1 <= ratio < float("inf"):
        raise DataError(f"the imbalance ratio must be a number >= 1 (head images / tail images), got {ratio!r}")
    if isinstance(head, bool) or not isinstance(head, (int, np.integer)) or head < 1:
        raise DataError(f"the head class's image count must be a whole number >= 1, got {head!r}")
    if num_classes < 2:
        raise DataError("a long-tailed draw needs at least two classes")
    tail = _half_up(head / ratio)
    if tail < 1:
        raise DataError(f"an imbalance of {ratio:g} from {head} images leaves the tail class {head / ratio:.2g} "
                        f"images, which rounds to none: use a ratio of at most {2 * head} or more head images")
    middle = (max(1, _half_up(head * ratio ** (-i / (num_classes - 1)))) for i in range(1, num_classes - 1))
    by_rank = [head, *middle, tail]   # the ends exactly as asked, whatever the power rounds to
    order = np.random.default_rng(seed).permutation(num_classes)   # order[i]: the class of rank i
    counts = [0] * num_classes
    for rank, c in enumerate(order):
        counts[int(c)] = by_rank[rank]
    return counts


def _half_up(x: float) -> int:
    return int(np.floor(x + 0.5 + 1e-9))


def rebalance_gaps(counts: Sequence[int], fill: float = 1.0, target: int | None = None) -> list[int]:
    """New images per class that fill `fill` of each class's gap to `target` (default: the largest class's
    count): round(fill * (target - n_c)), none for a class at or above it."""
    target = max(counts) if target is None else target
    return [max(0, int(round(fill * (target - int(n))))) for n in counts]


def image_hash(image) -> bytes:
    """A short hash of one uint8 (C,H,W) image's pixels."""
    arr = image.numpy() if isinstance(image, torch.Tensor) else image
    return hashlib.blake2b(np.ascontiguousarray(arr).tobytes(), digest_size=8).digest()


def image_hashes(images: torch.Tensor) -> np.ndarray:
    """One 8-byte hash per uint8 (C,H,W) image of a batch, uint8 (N, 8)."""
    return np.stack([np.frombuffer(image_hash(x), np.uint8) for x in images.numpy()])


def hf_column(ds, name: str) -> np.ndarray:
    """A scalar column of a `datasets.Dataset` as a numpy array, read through Arrow: datasets' numpy formatter
    imports torchvision.io.VideoReader, which torchvision 0.29 removed (datasets < 5.2 then fails)."""
    return np.asarray(ds.with_format("arrow")[name].to_numpy(zero_copy_only=False))


def _column(ds, name):
    # Rows one at a time keep memory flat for Image columns (decoded lazily to PIL).
    for row in ds.select_columns([name]):
        yield row[name]


def _pil_or_array(x, size: int | None = None, background=(255, 255, 255)) -> np.ndarray:
    """A PIL image as images.to_array reads it; an array or tensor (H, W[, C]) as it is, resized when `size`."""
    from .images import to_array

    if hasattr(x, "convert"):
        return to_array(x, size, background)
    arr = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if size is None:
        return arr
    from PIL import Image

    return to_array(Image.fromarray(arr.astype(np.uint8) if arr.dtype != np.uint8 else arr), size, background)


def _to_labels(labels, n: int | None) -> torch.Tensor:
    arr = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"labels must be one-dimensional, got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise DataError(f"{n} images but {len(arr)} labels")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise DataError("labels must be whole numbers (class indices)")
    elif arr.dtype.kind not in "iub":
        raise DataError(f"labels must be integer class indices, got dtype {arr.dtype}")
    return torch.from_numpy(arr.astype(np.int64))


def _to_uint8_nchw(images) -> torch.Tensor:
    """Any common image array layout and range -> uint8 (N,C,H,W)."""
    arr = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.dtype == object or arr.dtype.kind not in "uifb":
        raise DataError(f"images must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4:
        if arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
            arr = arr.transpose(0, 3, 1, 2)   # NHWC -> NCHW
    else:
        raise DataError(f"images must have shape (N,H,W), (N,H,W,C) or (N,C,H,W); got {arr.shape}")
    if arr.shape[0] == 0:
        raise DataError("the dataset is empty: no images")
    if arr.shape[1] == 0:
        raise DataError(f"images of shape {arr.shape} have no channels")
    if min(arr.shape[2:]) < 2:
        raise DataError(f"images of size {arr.shape[2]}x{arr.shape[3]} are too small to be images")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise DataError("images contain NaN or infinite values")
        low, high = float(arr.min()), float(arr.max())
        if low < 0.0 or high > 255.0:
            raise DataError(f"float images must lie in 0..1 (or 0..255); found {low:.3g}..{high:.3g}")
        scale = 255.0 if high <= 1.0 else 1.0
        arr = np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high > 255:
            raise DataError(f"integer images must lie in 0..255; found {low}..{high}")
        arr = arr.astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr))
