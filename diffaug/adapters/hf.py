"""Hugging Face `datasets` adapter: expand a dataset offline with synthetic or perturbed rows.

Rows are generated in batches and streamed into Arrow files (`Dataset.from_generator`), so the result
may be larger than memory. Features are preserved; provenance columns say how each row was made.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from typing import Iterator, Mapping

import numpy as np
import torch

from .._version import source_digest
from ..checks import check_seed, check_strength, is_number, whole_number
from ..data import ImageData, _to_uint8_nchw, hf_column
from ..diffusion.sampling import GUIDANCE, SAMPLE_STEPS, SAMPLER, STRENGTH, SamplingSpec
from ..errors import DataError, MismatchError, require_extra
from ..generator import BATCH, Generator
from ..io import json_digest
from .bank import BALANCE, synthetic_counts
from .shards import shard_range, which_shard, write_sharded

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
    if not (isinstance(feature, datasets.ClassLabel)
            or (isinstance(feature, datasets.Value) and "int" in feature.dtype)):
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
    """The input rows with provenance columns (kept as they are if an earlier expansion added them). The
    columns are joined beside the data (axis=1), so the real rows' image bytes are not rewritten."""
    if set(PROVENANCE).issubset(ds.column_names):
        return ds
    n = len(ds)
    provenance = datasets.Dataset.from_dict(
        {"diffaug_synthetic": [False] * n, "diffaug_mode": ["real"] * n, "diffaug_strength": [None] * n,
         "diffaug_guidance": [None] * n, "diffaug_generator": [None] * n, "diffaug_source_index": [-1] * n},
        features=PROVENANCE)
    return datasets.concatenate_datasets([ds, provenance], axis=1)


def _real_counts(ds, label_column: str, num_classes: int) -> np.ndarray:
    """Images per class among the REAL rows (rows an earlier expansion made do not count)."""
    labels = hf_column(ds, label_column)
    if "diffaug_synthetic" in ds.column_names:
        labels = labels[~hf_column(ds, "diffaug_synthetic").astype(bool)]
    return np.bincount(labels, minlength=num_classes)


def _counts(ds, label_column: str, gen: Generator, per_class, ratio, balance_to=None) -> list[int]:
    if (per_class is None) == (ratio is None):
        raise DataError(f"pass exactly one of per_class= (an int, a {{class: count}} dict or {BALANCE!r}) and ratio=")
    if ratio is not None:
        if balance_to is not None:
            raise DataError(f"balance_to= goes with per_class={BALANCE!r}")
        if not is_number(ratio) or not 0 < ratio < math.inf:
            raise DataError(f"ratio must be a positive finite number, got {ratio!r}")
        counts = [int(round(ratio * c)) for c in _real_counts(ds, label_column, gen.num_classes)]
    else:   # "balance": every class's final count is the largest's, or balance_to; rows made earlier count
        have = np.bincount(hf_column(ds, label_column)).tolist() if per_class == BALANCE else None
        counts = synthetic_counts(gen, per_class, have, balance_to)
    gen.check_output(sum(counts))
    return counts


def _fingerprint(**settings) -> str:
    """A deterministic `datasets` fingerprint for generated rows: the generator's fingerprint and every
    setting that changes them (never the closure: hashing it would hash the weights and flags like progress)."""
    return json_digest({"diffaug": source_digest(), **settings}, length=32)


def _check_dataset(ds) -> None:
    if isinstance(ds, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        raise DataError("streaming (Iterable) datasets are not supported: expansion adds rows by class counts and "
                        "keeps the real rows, which needs the whole dataset; load it without streaming=True (or "
                        "materialize it with datasets.Dataset.from_generator) first")
    if not isinstance(ds, datasets.Dataset):
        raise DataError(f"expected a datasets.Dataset or DatasetDict, got {type(ds).__name__}")


def _split_names(dd, splits) -> list[str]:
    """The splits of a DatasetDict to expand: `splits` ("all" for every split), each of which must exist."""
    names = list(dd) if splits == "all" or "all" in tuple(splits) else list(splits)
    missing = [name for name in names if name not in dd]
    if missing:
        raise DataError(f"the DatasetDict has splits {list(dd)}; no {', '.join(map(repr, missing))} split "
                        "(pass splits=[...] naming existing splits, or splits='all')")
    return names


def _split_seed(seed: int, name: str) -> int:
    """Each split its own random stream ("train" keeps `seed`, so it matches expanding that Dataset alone)."""
    if name == "train":
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:7], "big")


def _per_split(dd, splits, seed, expand_one):
    names = _split_names(dd, splits)
    return datasets.DatasetDict({name: expand_one(part, _split_seed(seed, name)) if name in names else part
                                 for name, part in dd.items()})


def _rank_device(device, rank):
    """`Dataset.map(with_rank=True)`: with num_proc > 1 on CUDA, process `rank` uses GPU rank % count."""
    if rank is None or device is None or not str(device).startswith("cuda") or ":" in str(device):
        return device
    return f"cuda:{rank % max(1, torch.cuda.device_count())}"


@contextlib.contextmanager
def _progress_bars(enabled: bool):
    """`datasets` draws its own bars (map, from_generator); honour progress=False for the call only."""
    was_enabled = not datasets.utils.are_progress_bars_disabled()
    if not enabled and was_enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and was_enabled:
            datasets.enable_progress_bars()


def _empty_row(features, image_column: str, label_column: str) -> dict:
    return {k: None for k in features if k not in (image_column, label_column)}


def _finish(ds, synthetic, include_real: bool):
    """Real rows (only on the shard that carries them) followed by the synthetic ones."""
    parts = ([_real_rows(ds)] if include_real else []) + ([synthetic] if len(synthetic) else [])
    if not parts:
        return synthetic
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def expand_dataset(ds, gen: Generator, per_class: int | Mapping | str | None = None, *, ratio: float | None = None,
                   balance_to: int | None = None, image_column: str = "image", label_column: str = "label",
                   seed: int = 0,
                   batch_size: int = BATCH, steps: int = SAMPLE_STEPS, sampler: str = SAMPLER,
                   guidance: float = GUIDANCE, device=None, num_shards: int = 1, shard_index: int = 0,
                   splits=("train",), num_proc: int | None = None, progress: bool = True):
    """The real rows plus synthetic rows: `per_class` new images of every class (or a {class: n} dict; or
    "balance": every class filled up to the largest class's count, or to `balance_to`, so that the result is
    balanced), or `ratio` x each class's real count (rows an earlier expansion made are not counted).
    Features are kept; provenance columns are added beside the real rows without rewriting them.

    A `DatasetDict` is expanded in `splits` (default: train; "all": every split), each split with its own
    random stream; a split asked for that does not exist is an error. `num_shards`/`shard_index` split the
    generation across machines: shard 0 carries the real rows, and `concatenate_shards` joins the parts into
    exactly the dataset an unsharded run makes. `num_proc` generates in that many processes (on CUDA, one GPU
    per process in turn). Streaming (Iterable) datasets are refused.
    """
    if isinstance(ds, datasets.DatasetDict):
        return _per_split(ds, splits, seed, lambda part, split_seed: expand_dataset(
            part, gen, per_class, ratio=ratio, balance_to=balance_to, image_column=image_column,
            label_column=label_column, seed=split_seed,
            batch_size=batch_size, steps=steps, sampler=sampler, guidance=guidance, device=device,
            num_shards=num_shards, shard_index=shard_index, num_proc=num_proc, progress=progress))
    _check_dataset(ds)
    _check_options(batch_size, steps, sampler, guidance, seed, num_shards, shard_index)
    _check_columns(ds, image_column, label_column)
    _check_generator(ds, gen, label_column)
    codec = _ImageCodec(ds, image_column)
    gen.check_images(codec.read([ds[0][image_column]]))
    counts = _counts(ds, label_column, gen, per_class, ratio, balance_to)
    labels = torch.arange(gen.num_classes).repeat_interleave(torch.tensor(counts))
    features = datasets.Features({**ds.features, **PROVENANCE})
    blank = _empty_row(features, image_column, label_column)
    chunks = list(shard_range(math.ceil(len(labels) / batch_size), num_shards, shard_index))

    def rows(chunks: list[int]) -> Iterator[dict]:
        for c in chunks:
            y = labels[c * batch_size:(c + 1) * batch_size]
            images = gen.sample(y, steps=steps, sampler=sampler, guidance=guidance, seed=seed,
                                indices=range(c * batch_size, c * batch_size + len(y)), batch_size=batch_size,
                                device=device, progress=False)
            for x, label in zip(images, y.tolist()):
                yield {**blank, image_column: codec.write(x), label_column: label, "diffaug_synthetic": True,
                       "diffaug_mode": "synthesize", "diffaug_guidance": guidance,
                       "diffaug_generator": gen.fingerprint, "diffaug_source_index": -1}

    fingerprint = _fingerprint(kind="synthesize", generator=gen.fingerprint, counts=counts, seed=seed,
                               batch_size=batch_size, steps=steps, sampler=sampler, guidance=guidance, chunks=chunks,
                               features=features.to_dict(), image_column=image_column, label_column=label_column)
    if not chunks:   # nothing to make here (per_class=0, or more shards than batches)
        synthetic = datasets.Dataset.from_dict({name: [] for name in features}, features=features)
    else:
        made = sum(min(batch_size, len(labels) - c * batch_size) for c in chunks)   # this shard's images: one job
        spec = SamplingSpec(steps, sampler, guidance=guidance)
        with _progress_bars(progress), gen.job(gen.network_rows(made, spec)):
            synthetic = datasets.Dataset.from_generator(rows, features=features, gen_kwargs={"chunks": chunks},
                                                        num_proc=_procs(num_proc, chunks), fingerprint=fingerprint)
    return _finish(ds, synthetic, include_real=shard_index == 0)


def _check_options(batch_size, steps, sampler, guidance, seed, num_shards, shard_index) -> None:
    """The options both expanders take, checked before any work."""
    whole_number(batch_size, "batch_size", low=1)
    check_seed(seed)
    whole_number(num_shards, "num_shards", low=1)
    whole_number(shard_index, "shard_index", low=0, high=num_shards - 1)
    SamplingSpec(steps, sampler, guidance=guidance)


def _procs(num_proc: int | None, chunks: list) -> int | None:
    """from_generator splits the chunk list between processes: no more processes than chunks."""
    return min(num_proc, len(chunks)) if num_proc and num_proc > 1 and len(chunks) > 1 else None


def perturb_dataset(ds, gen: Generator, copies: int = 1, *, strength: float = STRENGTH, image_column: str = "image",
                    label_column: str = "label", seed: int = 0, batch_size: int = BATCH, steps: int = SAMPLE_STEPS,
                    sampler: str = SAMPLER, guidance: float = GUIDANCE, device=None, num_shards: int = 1,
                    shard_index: int = 0, splits=("train",), num_proc: int | None = None, progress: bool = True):
    """The real rows plus `copies` perturbed copies of each (noised to `strength`, denoised given the class).

    A `Dataset.map(batched=True)` that returns `copies` rows per input row: every batch of real rows is
    followed by its copies (copy 0 of the batch, then copy 1, ...). A copy keeps its source row's other
    columns; `diffaug_source_index` points at the source row. DatasetDict, sharding, `num_proc` (with_rank:
    one GPU per process in turn) and streaming datasets as in `expand_dataset`.
    """
    if isinstance(ds, datasets.DatasetDict):
        return _per_split(ds, splits, seed, lambda part, split_seed: perturb_dataset(
            part, gen, copies, strength=strength, image_column=image_column, label_column=label_column,
            seed=split_seed, batch_size=batch_size, steps=steps, sampler=sampler, guidance=guidance, device=device,
            num_shards=num_shards, shard_index=shard_index, num_proc=num_proc, progress=progress))
    _check_dataset(ds)
    _check_options(batch_size, steps, sampler, guidance, seed, num_shards, shard_index)
    whole_number(copies, "copies", low=1)
    check_strength(strength, allow_range=False)
    gen.check_output(copies * len(ds))
    _check_columns(ds, image_column, label_column)
    _check_generator(ds, gen, label_column)
    codec = _ImageCodec(ds, image_column)
    features = datasets.Features({**ds.features, **PROVENANCE})
    part = shard_range(math.ceil(len(ds) / batch_size), num_shards, shard_index)   # whole batches per shard
    first = part.start * batch_size
    source = ds.select(range(first, min(part.stop * batch_size, len(ds))))

    def perturb_batch(batch: dict, indices: list[int], rank: int | None) -> dict:
        x = gen.check_images(codec.read(batch[image_column]))
        rows = [first + i for i in indices]   # the rows' places in the whole dataset: their noise streams
        out = {name: [] for name in features}
        for m in range(copies):
            images = gen.perturb(x, batch[label_column], strength=strength, steps=steps, sampler=sampler,
                                 guidance=guidance, seed=seed, indices=rows, copy=m, batch_size=batch_size,
                                 device=_rank_device(device, rank), progress=False)
            for name in batch:
                if name not in PROVENANCE:   # an earlier expansion's provenance is replaced below
                    out[name].extend(batch[name])
            out[image_column][-len(images):] = [codec.write(img) for img in images]
            out["diffaug_synthetic"] += [True] * len(images)
            out["diffaug_mode"] += ["perturb"] * len(images)
            out["diffaug_strength"] += [strength] * len(images)
            out["diffaug_guidance"] += [guidance] * len(images)
            out["diffaug_generator"] += [gen.fingerprint] * len(images)
            out["diffaug_source_index"] += rows
        return out

    fingerprint = _fingerprint(kind="perturb", generator=gen.fingerprint, data=ds._fingerprint, copies=copies,
                               strength=strength, seed=seed, batch_size=batch_size, steps=steps, sampler=sampler,
                               guidance=guidance, part=[part.start, part.stop], image_column=image_column,
                               label_column=label_column)
    spec = SamplingSpec(steps, sampler, guidance=guidance)
    with _progress_bars(progress), gen.job(copies * gen.network_rows(len(source), spec, strength)):
        perturbed = source.map(perturb_batch, batched=True, batch_size=batch_size, with_indices=True, with_rank=True,
                               remove_columns=source.column_names, features=features, new_fingerprint=fingerprint,
                               num_proc=num_proc if num_proc and num_proc > 1 and len(source) > batch_size else None,
                               desc="perturb")
    return _finish(ds, perturbed, include_real=shard_index == 0)


def concatenate_shards(shards):
    """Join the parts made with num_shards/shard_index (in shard order) into one dataset (or DatasetDict)."""
    shards = list(shards)
    if shards and isinstance(shards[0], datasets.DatasetDict):
        return datasets.DatasetDict({split: datasets.concatenate_datasets([d[split] for d in shards])
                                     for split in shards[0]})
    return datasets.concatenate_datasets(shards)


def expand_to_disk(ds, gen: Generator, out, *, mode: str = "synthesize", num_shards: int | None = None,
                   shard_index: int | None = None, overwrite: bool = False, **options) -> bool:
    """`expand_dataset` (mode "synthesize") or `perturb_dataset` (mode "perturb") of `ds`, written with
    `save_to_disk` to the folder `out`, atomically; True once `out` holds the whole result.

    `options` are the expander's. Sharded (`num_shards`/`shard_index` by hand, or one shard per rank under
    torchrun when they are not given), each shard saves its part under OUT.parts/ and the parts are joined
    into `out` once all are there, into exactly the dataset one process makes; a part already made with the
    same settings is kept, so rerunning remakes only the missing ones."""
    expanders = {"synthesize": expand_dataset, "perturb": perturb_dataset}
    if mode not in expanders:
        raise DataError(f"mode must be one of {tuple(expanders)}, got {mode!r}")
    num_shards, shard_index = which_shard(num_shards, shard_index)

    def make_part(folder) -> None:
        expanders[mode](ds, gen, num_shards=num_shards, shard_index=shard_index, **options).save_to_disk(str(folder))

    def join(parts, folder) -> None:
        concatenate_shards(datasets.load_from_disk(str(p)) for p in parts).save_to_disk(str(folder))

    data = {k: v._fingerprint for k, v in ds.items()} if isinstance(ds, datasets.DatasetDict) else \
        getattr(ds, "_fingerprint", None)
    settings = {"mode": mode, "generator": gen.fingerprint, "data": data,
                "num_shards": num_shards, **{k: v for k, v in options.items() if k not in ("progress", "device")}}
    return write_sharded(out, json.loads(json.dumps(settings, default=str)), make_part, join,
                         num_shards=num_shards, shard_index=shard_index, overwrite=overwrite)
