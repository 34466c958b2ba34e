"""Hugging Face `datasets` adapter: expand a dataset offline with synthetic or perturbed rows.

Rows are generated in batches and streamed into Arrow files (`Dataset.from_generator`), so the result
may be larger than memory. Features are preserved; provenance columns say how each row was made.
"""

from __future__ import annotations

import math
from typing import Iterator, Mapping

import numpy as np
import torch

from ..data import ImageData, _to_uint8_nchw
from ..errors import DataError, MismatchError, require_extra
from ..generator import Generator

datasets = require_extra("datasets", "hf")

# Provenance columns added to every row (real rows: synthetic False, mode "real").
PROVENANCE = datasets.Features({
    "diffaug_synthetic": datasets.Value("bool"),
    "diffaug_mode": datasets.Value("string"),          # real | synthesize | perturb
    "diffaug_strength": datasets.Value("float32"),     # perturb only
    "diffaug_guidance": datasets.Value("float32"),
    "diffaug_generator": datasets.Value("string"),     # generator fingerprint
    "diffaug_source_index": datasets.Value("int64"),   # perturb: the real row it came from
})


def to_hf_dataset(data: ImageData):
    """An `ImageData` as a `datasets.Dataset` with an `Image` column "image" and a `ClassLabel` column "label"."""
    from PIL import Image

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=data.class_names)})

    def rows():
        for x, y in zip(data.images, data.labels):
            arr = x.numpy()
            yield {"image": Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)), "label": int(y)}
    return datasets.Dataset.from_generator(rows, features=features)


def _check_columns(ds, image_column: str, label_column: str) -> None:
    for role, col in (("image", image_column), ("label", label_column)):
        if col not in ds.column_names:
            raise DataError(f"the dataset has no {role} column {col!r}; its columns are {ds.column_names} "
                            f"(pass {role}_column=...)")
    feature = ds.features[label_column]
    if not (isinstance(feature, datasets.ClassLabel) or (isinstance(feature, datasets.Value) and "int" in feature.dtype)):
        raise DataError(f"column {label_column!r} must hold integer class labels (ClassLabel or int), "
                        f"it is {ds.features[label_column]}")


def _check_generator(ds, gen: Generator, label_column: str) -> None:
    names = getattr(ds.features[label_column], "names", None)
    if names is not None and list(names) != gen.class_names:
        raise MismatchError(f"the dataset's classes {list(names)[:6]}... differ from the generator's "
                            f"{gen.class_names[:6]}...; fit the generator on this dataset")


class _ImageCodec:
    """Reads a dataset's image cells as uint8 (C,H,W) and writes generated images back in the same form."""

    def __init__(self, ds, column: str):
        self.feature = ds.features[column]
        self.is_image = isinstance(self.feature, datasets.Image)
        first = ds[0][column]
        if self.is_image:
            self.mode = first.mode if first.mode in ("L", "RGB") else "RGB"
        else:
            arr = np.asarray(first)
            self.dtype, self.ndim = arr.dtype, arr.ndim
            self.channels_first = arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3)

    def read(self, cells) -> torch.Tensor:
        if self.is_image:
            return _to_uint8_nchw(np.stack([np.asarray(c.convert(self.mode)) for c in cells]))
        arr = np.stack([np.asarray(c) for c in cells])
        if arr.ndim == 4 and not self.channels_first:
            arr = arr.transpose(0, 3, 1, 2)
        return _to_uint8_nchw(arr)

    def write(self, x: torch.Tensor):
        arr = x.numpy()   # (C,H,W) uint8
        if self.is_image:
            from PIL import Image
            return Image.fromarray(arr[0] if self.mode == "L" else arr.transpose(1, 2, 0))
        out = arr[0] if self.ndim == 2 else (arr if self.channels_first else arr.transpose(1, 2, 0))
        return (out.astype(np.float32) / 255.0).astype(self.dtype) if self.dtype.kind == "f" else out.astype(self.dtype)


def _real_rows(ds):
    """The input rows with provenance columns (kept as they are if an earlier expansion added them)."""
    if set(PROVENANCE).issubset(ds.column_names):
        return ds
    n = len(ds)
    return (ds.add_column("diffaug_synthetic", [False] * n).add_column("diffaug_mode", ["real"] * n)
            .add_column("diffaug_strength", [None] * n).add_column("diffaug_guidance", [None] * n)
            .add_column("diffaug_generator", [None] * n).add_column("diffaug_source_index", [-1] * n)
            .cast(datasets.Features({**ds.features, **PROVENANCE})))


def _counts(ds, label_column: str, gen: Generator, per_class, ratio) -> list[int]:
    if (per_class is None) == (ratio is None):
        raise DataError("pass exactly one of per_class= (an int or a {class: count} dict) and ratio=")
    if ratio is not None:
        if ratio <= 0:
            raise DataError(f"ratio must be positive, got {ratio}")
        real = np.bincount(np.asarray(ds.with_format("numpy")[label_column]), minlength=gen.num_classes)
        return [int(round(ratio * c)) for c in real]
    if isinstance(per_class, Mapping):
        counts = [0] * gen.num_classes
        for key, n in per_class.items():
            counts[int(gen.class_index([key])[0])] = int(n)
        return counts
    if int(per_class) < 0:
        raise DataError(f"per_class must be >= 0, got {per_class}")
    return [int(per_class)] * gen.num_classes


def _shard(n_chunks: int, num_shards: int, shard_index: int) -> range:
    if not 0 <= shard_index < num_shards:
        raise DataError(f"shard_index must lie in 0..{num_shards - 1}, got {shard_index}")
    return range(n_chunks * shard_index // num_shards, n_chunks * (shard_index + 1) // num_shards)


def _chunk_seed(seed: int, chunk: int) -> int:
    # One seed per chunk, so a shard makes exactly the rows the unsharded run makes at those positions.
    return (int(seed) * 1_000_003 + chunk) % (2 ** 63)


def _empty_row(features, image_column: str, label_column: str) -> dict:
    return {k: None for k in features if k not in (image_column, label_column)}


def _finish(real, synthetic_rows, features, include_real: bool):
    parts = [real] if include_real else []
    synth = datasets.Dataset.from_generator(synthetic_rows, features=features)
    if len(synth):
        parts.append(synth)
    if not parts:
        return synth
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def expand_dataset(ds, gen: Generator, per_class: int | Mapping | None = None, *, ratio: float | None = None,
                   image_column: str = "image", label_column: str = "label", seed: int = 0,
                   batch_size: int = 500, steps: int = 20, sampler: str = "dpmpp_2m", guidance: float = 2.0,
                   device=None, num_shards: int = 1, shard_index: int = 0, splits=("train",),
                   progress: bool = True):
    """The real rows plus synthetic rows: `per_class` new images of every class (or a {class: n} dict, e.g.
    to rebalance), or `ratio` x each class's real count. Features are kept; provenance columns are added.

    A `DatasetDict` is expanded in `splits` only (default: train). `num_shards`/`shard_index` split the
    generation across machines: shard 0 carries the real rows, and `concatenate_shards` joins the parts
    into exactly the dataset an unsharded run makes.
    """
    if isinstance(ds, datasets.DatasetDict):
        return datasets.DatasetDict({name: expand_dataset(part, gen, per_class, ratio=ratio, image_column=image_column,
                                                          label_column=label_column, seed=seed, batch_size=batch_size,
                                                          steps=steps, sampler=sampler, guidance=guidance, device=device,
                                                          num_shards=num_shards, shard_index=shard_index,
                                                          progress=progress)
                                     if name in splits else part for name, part in ds.items()})
    _check_columns(ds, image_column, label_column)
    _check_generator(ds, gen, label_column)
    codec = _ImageCodec(ds, image_column)
    gen.check_images(codec.read([ds[0][image_column]]))
    labels = torch.arange(gen.num_classes).repeat_interleave(torch.tensor(_counts(ds, label_column, gen, per_class, ratio)))
    features = datasets.Features({**ds.features, **PROVENANCE})
    blank = _empty_row(features, image_column, label_column)
    chunks = _shard(math.ceil(len(labels) / batch_size), num_shards, shard_index)

    def rows() -> Iterator[dict]:
        from tqdm.auto import tqdm
        for c in tqdm(chunks, desc="expand", unit="batch", disable=not progress):
            y = labels[c * batch_size:(c + 1) * batch_size]
            images = gen.sample(y, steps=steps, sampler=sampler, guidance=guidance, seed=_chunk_seed(seed, c),
                                batch_size=batch_size, device=device, progress=False)
            for x, label in zip(images, y.tolist()):
                yield {**blank, image_column: codec.write(x), label_column: label, "diffaug_synthetic": True,
                       "diffaug_mode": "synthesize", "diffaug_guidance": guidance,
                       "diffaug_generator": gen.fingerprint, "diffaug_source_index": -1}

    return _finish(_real_rows(ds), rows, features, include_real=shard_index == 0)


def perturb_dataset(ds, gen: Generator, copies: int = 1, *, strength: float = 0.4, image_column: str = "image",
                    label_column: str = "label", seed: int = 0, batch_size: int = 500, steps: int = 20,
                    sampler: str = "dpmpp_2m", guidance: float = 2.0, device=None, num_shards: int = 1,
                    shard_index: int = 0, splits=("train",), progress: bool = True):
    """The real rows plus `copies` perturbed copies of each (noised to `strength`, denoised given the class).
    A copy keeps its source row's other columns; `diffaug_source_index` points at the source row."""
    if isinstance(ds, datasets.DatasetDict):
        return datasets.DatasetDict({name: perturb_dataset(part, gen, copies, strength=strength,
                                                           image_column=image_column, label_column=label_column,
                                                           seed=seed, batch_size=batch_size, steps=steps,
                                                           sampler=sampler, guidance=guidance, device=device,
                                                           num_shards=num_shards, shard_index=shard_index,
                                                           progress=progress)
                                     if name in splits else part for name, part in ds.items()})
    if copies < 1:
        raise DataError(f"copies must be at least 1, got {copies}")
    _check_columns(ds, image_column, label_column)
    _check_generator(ds, gen, label_column)
    codec = _ImageCodec(ds, image_column)
    features = datasets.Features({**ds.features, **PROVENANCE})
    chunks = _shard(math.ceil(len(ds) / batch_size) * copies, num_shards, shard_index)
    per_copy = math.ceil(len(ds) / batch_size)

    def rows() -> Iterator[dict]:
        from tqdm.auto import tqdm
        for c in tqdm(chunks, desc="perturb", unit="batch", disable=not progress):
            start = (c % per_copy) * batch_size
            batch = ds[start:start + batch_size]
            x = gen.check_images(codec.read(batch[image_column]))
            out = gen.perturb(x, batch[label_column], strength=strength, steps=steps, sampler=sampler,
                              guidance=guidance, seed=_chunk_seed(seed, c), batch_size=batch_size, device=device,
                              progress=False)
            for i, img in enumerate(out):
                row = {k: v[i] for k, v in batch.items()}
                yield {**row, image_column: codec.write(img), "diffaug_synthetic": True,
                       "diffaug_mode": "perturb", "diffaug_strength": strength, "diffaug_guidance": guidance,
                       "diffaug_generator": gen.fingerprint, "diffaug_source_index": start + i}

    return _finish(_real_rows(ds), rows, features, include_real=shard_index == 0)


def concatenate_shards(shards):
    """Join the parts made with num_shards/shard_index (in shard order) into one dataset."""
    return datasets.concatenate_datasets(list(shards))
