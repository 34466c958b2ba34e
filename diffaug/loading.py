"""Data by name or path: the built-in datasets (scikit-learn's digits, Fashion-MNIST from local files),
`load_data`, which maps a built-in name, an .npz, an image folder or a saved HF dataset onto `ImageData`, and
`load_unlabeled`, the same for images without labels."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from .data import IMAGE_SUFFIXES, ImageData, _column, _pil_or_array, _to_uint8_nchw, hf_column
from .images import check_image_size, parse_background, read_images, resize_tensor, stack
from .errors import DataError, require_extra

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
BUILTINS = ("digits", "fashion-mnist")
FASHION_MNIST_NAMES = ("fashion-mnist", "fashion_mnist", "fmnist")


def is_builtin(source) -> bool:
    """A built-in data set's name (they come with their own train/test split)."""
    return isinstance(source, str) and (source == "digits" or source in FASHION_MNIST_NAMES)


def load_data(source="digits", split: str = "train", *, image_column: str = "image",
              label_column: str = "label", root=None, image_size: int | None = None, background=None,
              progress: bool = False) -> ImageData:
    """Load a built-in dataset by name, or a path: `.npz`, image folder, or a `save_to_disk` HF dataset.

    Built-ins have a train and a test split: `digits` is scikit-learn's 8x8 digits split 50/50
    (stratified, seed 0); `fashion-mnist` is the official 60k/10k split. `split="all"` joins them.
    `image_size=N`: every image's shorter side resized to N (antialiased) and its centre cropped to N x N, as
    torchvision's Resize + CenterCrop (a folder of mixed sizes needs it); `background`: the colour transparent
    pixels are composited on (default white). `progress`: a bar while a large folder is read.
    """
    size, background = check_image_size(image_size), parse_background(background)
    if isinstance(source, ImageData):
        return source.resized(size) if size else source
    if split not in ("train", "test", "all"):
        raise DataError(f"split must be 'train', 'test' or 'all', got {split!r}")
    data = _load(str(source), split, image_column, label_column, root, size, background, progress)
    if size and data.size != (size, size):
        data = data.resized(size)
    if is_builtin(source):
        described = f"{source} (built-in), {split} split"
    else:   # only a saved DatasetDict has splits; an .npz, a folder or a saved Dataset is what it is
        described = f"{source}, {split} split" if (Path(source) / "dataset_dict.json").exists() else str(source)
    object.__setattr__(data, "source", described)
    return data


def _load(name: str, split: str, image_column: str, label_column: str, root, size=None, background=None,
          progress: bool = False) -> ImageData:
    if name == "digits":
        return _digits(split)
    if name in FASHION_MNIST_NAMES:
        return _fashion_mnist(split, root)
    path = Path(name)
    if not path.exists():
        raise DataError(f"unknown data {name!r}: not a built-in ({', '.join(BUILTINS)}) and no such path")
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise DataError(f"{path} is a file but not an .npz; give an .npz, an image folder or a saved HF dataset")
        return ImageData.from_npz(path)
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        return ImageData.from_hf(_hf_split(path, split), image_column=image_column, label_column=label_column,
                                 image_size=size, background=background)
    return ImageData.from_folder(path, image_size=size, background=background, progress=progress)


def _digits(split: str) -> ImageData:
    from sklearn.datasets import load_digits

    d = load_digits()
    # scikit-learn's digits are 0..16 intensities; 255/16 maps them onto the full uint8 range.
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    data = ImageData.from_arrays(images, d.target, [str(n) for n in d.target_names])
    if split == "all":
        return data
    train, test = data.split(0.5, seed=0)
    return train if split == "train" else test


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "raw", root / "FashionMNIST" / "raw"):
        for suffix in ("", ".gz"):
            f = folder / (stem + suffix)
            if f.is_file():
                return f
    return None


def read_idx(path) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzipped or not."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
        return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, ValueError, struct.error, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None


def _fashion_mnist(split: str, root=None) -> ImageData:
    roots = [Path(root)] if root else [Path(os.environ["DIFFAUG_FASHION_MNIST"])] \
        if os.environ.get("DIFFAUG_FASHION_MNIST") else [Path(d) for d in FASHION_MNIST_DIRS]
    parts = []
    for prefix in (["train", "t10k"] if split == "all" else ["train" if split == "train" else "t10k"]):
        for r in roots:
            images = _find_idx(r, f"{prefix}-images-idx3-ubyte")
            labels = _find_idx(r, f"{prefix}-labels-idx1-ubyte")
            if images and labels:
                parts.append((read_idx(images), read_idx(labels)))
                break
        else:
            raise DataError(
                "Fashion-MNIST files not found in " + ", ".join(map(str, roots)) +
                ". Install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass "
                "root= (CLI: --root) / set DIFFAUG_FASHION_MNIST to a folder holding the four IDX files "
                "(a torchvision FashionMNIST root works too)")
    return ImageData.from_arrays(np.concatenate([p[0] for p in parts]),
                                 np.concatenate([p[1] for p in parts]), FASHION_MNIST_CLASSES)


def _hf_split(path: Path, split: str):
    """The `split` of a dataset saved with save_to_disk ("all": every split joined; a Dataset is its one split)."""
    datasets = require_extra("datasets", "hf")
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataError(f"cannot load the Hugging Face dataset at {path}: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split == "all":
            ds = datasets.concatenate_datasets(list(ds.values()))
        elif split in ds:
            ds = ds[split]
        else:
            raise DataError(f"{path} has splits {list(ds)}; no {split!r} split")
    return ds


def load_unlabeled(source, *, image_column: str = "image", label_column: str = "label", image_size: int | None = None,
                   background=None) -> torch.Tensor:
    """Unlabelled images as uint8 (N,C,H,W): an image folder WITHOUT class sub-folders (images directly in it, or
    in any nesting below it if it has no sub-folders at its top), an `.npz` with `images` only, a saved HF dataset
    without a label column (or whose labels are all -1), an ImageData (its labels are dropped), or an array.
    `image_size`, `background`: as load_data."""
    size = check_image_size(image_size)
    images = _unlabeled(source, image_column, label_column, size, parse_background(background))
    return resize_tensor(images, size) if size and tuple(images.shape[-2:]) != (size, size) else images


def _unlabeled(source, image_column: str, label_column: str, size, background) -> torch.Tensor:
    if isinstance(source, ImageData):
        return source.images
    if not isinstance(source, (str, Path)):
        return _to_uint8_nchw(source)
    path = Path(source)
    if not path.exists():
        raise DataError(f"no such unlabelled data: {path}")
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise DataError(f"{path} is a file but not an .npz; unlabelled images come as an .npz with `images`, "
                            "a folder of images or a saved HF dataset")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:
            raise DataError(f"{path} is not a readable .npz file ({e})") from None
        if "images" not in arrays:
            raise DataError(f"{path} has no `images` array; it has {sorted(arrays)}")
        if "labels" in arrays:
            raise DataError(f"{path} has `labels`: that is labelled data (pass it as DATA); unlabelled images come "
                            "as an .npz with `images` only")
        return _to_uint8_nchw(arrays["images"])
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        return _hf_unlabeled(path, image_column, label_column, size, background)
    return _folder_unlabeled(path, size, background)


def _folder_unlabeled(root: Path, size=None, background=None) -> torch.Tensor:
    classes = [d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    top = [f for f in root.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES]
    if classes and not top:
        raise DataError(f"{root} has class sub-folders ({', '.join(sorted(classes)[:5])}): that is labelled data "
                        "(pass it as DATA); unlabelled images lie directly in the folder")
    if not top:
        raise DataError(f"{root} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return _to_uint8_nchw(stack(read_images(sorted(top), size, background), str(root), size))


def _hf_unlabeled(path: Path, image_column: str, label_column: str, size=None, background=None) -> torch.Tensor:
    ds = _hf_split(path, "all")
    if image_column not in ds.column_names:
        raise DataError(f"the dataset at {path} has no image column {image_column!r}; its columns are "
                        f"{ds.column_names}")
    if label_column in ds.column_names and (hf_column(ds, label_column) != -1).any():
        raise DataError(f"the dataset at {path} has labels in {label_column!r}: that is labelled data (pass it as "
                        "DATA); unlabelled rows have no label column, or -1 labels")
    images = [_pil_or_array(x, size, background) for x in _column(ds, image_column)]
    return _to_uint8_nchw(stack(images, f"column {image_column!r} at {path}", size))
