"""SampleBank: pre-generated synthetic images per class and M perturbations per real image, on disk.

Generating inside a DataLoader worker costs a network call per sample. A bank moves that work to one
batched pass on the best device (as DA-Fusion caches its variants); afterwards an augmentation is an
O(1) lookup into memory-mapped arrays, which fork- and spawn-started workers share through the page cache.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..checks import check_seed, whole_number
from ..data import ImageData, image_hash, rebalance_gaps
from ..diffusion.distributed import from_env, rank_device
from ..diffusion.sampling import GUIDANCE, SAMPLE_STEPS, SAMPLER, STRENGTH, SamplingSpec, strengths_for
from ..errors import DataError, MismatchError
from ..diffusion.step import resolve_device
from ..generator import Generator, sampling_batch
from .shards import shard_range, which_shard, write_sharded

BANK_FORMAT = "diffaug.bank"
BANK_VERSION = 1
META = "bank.json"
ARRAYS = ("synthetic", "synthetic_labels", "perturbed", "perturbed_labels", "real_keys")


class SampleBank:
    """Synthetic images by class and perturbed copies of real images, stored as .npy files in a folder.

    `SampleBank(path)` opens a bank and checks every array against the manifest (`bank.json`: shape, dtype,
    sha256; `verify=False` skips the hashing); lookups map the arrays lazily. `SampleBank(path, generator=gen)`
    also checks that `gen` is the generator that built it."""

    def __init__(self, path, generator: Generator | None = None, verify: bool = True):
        self.path = Path(path)
        meta_file = self.path / META
        if not meta_file.is_file():
            raise DataError(f"{self.path} is not a sample bank (no {META}); build one with SampleBank.build")
        try:
            self.meta = json.loads(meta_file.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{meta_file} is damaged ({e})") from None
        if not isinstance(self.meta, dict) or self.meta.get("format") != BANK_FORMAT:
            raise DataError(f"{meta_file} is not a diffaug sample bank")
        if self.meta.get("format_version", 1) > BANK_VERSION:
            raise DataError(f"{self.path} was built by a newer diffaug (bank format {self.meta['format_version']}); "
                            "upgrade diffaug to read it")
        self._arrays: dict | None = None
        self._check_files(verify)
        if generator is not None:
            self.check_generator(generator)

    def _check_files(self, verify: bool) -> None:
        """Refuse a bank whose arrays are missing, torn, altered or not what the manifest says."""
        m = self.meta
        c, (h, w) = m["channels"], m["image_size"]
        expected = {"synthetic": ((m["synthetic_count"], c, h, w), "uint8"),
                    "synthetic_labels": ((m["synthetic_count"],), "int64"),
                    "perturbed": ((m["real_count"], m["copies"], c, h, w), "uint8"),
                    "perturbed_labels": ((m["real_count"],), "int64"),
                    "real_keys": ((m["real_count"], 8), "uint8")}
        files = m.get("files", {})
        for name in ARRAYS:
            f = self.path / f"{name}.npy"
            try:
                a = np.load(f, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise DataError(f"the bank {self.path} is damaged: cannot read {f.name} ({e})") from None
            shape, dtype = expected[name]
            if a.shape != shape or a.dtype != np.dtype(dtype):
                raise DataError(f"the bank {self.path} is damaged: {f.name} holds {a.dtype}{list(a.shape)} but the "
                                f"manifest says {dtype}{list(shape)}")
            if verify and name in files and _sha256(f) != files[name]:
                raise DataError(f"the bank {self.path} is damaged: {f.name} does not match the sha256 in {META}")

    # Pickling (spawn-started workers) sends only the path; each process maps the files itself.
    def __getstate__(self):
        return {"path": self.path, "meta": self.meta, "_arrays": None}

    def _load(self) -> dict:
        if self._arrays is None:
            # np.asarray drops the np.memmap subclass (same pages, no copy): indexing a plain view is ~10x cheaper.
            a = {name: np.asarray(np.load(self.path / f"{name}.npy", mmap_mode="r")) for name in ARRAYS}
            labels = np.asarray(a["synthetic_labels"])
            a["by_class"] = [np.flatnonzero(labels == c) for c in range(len(self.class_names))]
            a["key_index"] = {bytes(k): i for i, k in enumerate(np.asarray(a["real_keys"]))}
            self._arrays = a
        return self._arrays

    # --- what it holds ----------------------------------------------------------------------------

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]

    @property
    def num_classes(self) -> int:
        return len(self.meta["class_names"])

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.meta["image_size"])

    @property
    def channels(self) -> int:
        return self.meta["channels"]

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the generator that made this bank."""
        return self.meta["generator_fingerprint"]

    @property
    def copies(self) -> int:
        return self.meta["copies"]

    def __repr__(self) -> str:
        m = self.meta
        return (f"SampleBank({self.path}, {m['synthetic_count']} synthetic, {m['real_count']} real x {m['copies']} "
                f"perturbed, generator {self.fingerprint})")

    def check_generator(self, gen: Generator) -> None:
        if gen.fingerprint != self.fingerprint:
            raise MismatchError(f"the bank {self.path} was built from generator {self.fingerprint}, "
                                f"not from this one ({gen.fingerprint}); rebuild the bank")

    # --- lookups (O(1)) ---------------------------------------------------------------------------

    def synthetic(self, label: int, choice: float) -> np.ndarray:
        """A synthetic uint8 (C,H,W) image of class `label` (a read-only view); `choice` in [0, 1) picks which."""
        a = self._load()
        if not 0 <= label < self.num_classes:
            raise MismatchError(f"label {label} is not a class of this bank (classes 0..{self.num_classes - 1})")
        rows = a["by_class"][label]
        if len(rows) == 0:
            raise DataError(f"the bank has no synthetic images of class {self.class_names[label]!r}; "
                            "build it with per_class > 0")
        return a["synthetic"][rows[int(choice * len(rows))]]

    def find(self, image) -> int | None:
        """The row of a real uint8 (C,H,W) image in the bank (by pixel hash), or None."""
        return self._load()["key_index"].get(image_hash(image))

    def perturbed(self, row: int, choice: float) -> np.ndarray:
        """One of the stored perturbations of real image `row` (a read-only uint8 (C,H,W) view);
        `choice` in [0, 1) picks which."""
        a = self._load()
        if self.copies == 0:
            raise DataError("the bank holds no perturbations; build it with data= and copies > 0")
        return a["perturbed"][row, int(choice * self.copies)]

    # --- building ---------------------------------------------------------------------------------

    @classmethod
    def build(cls, gen: Generator, path, *, per_class: int | Mapping | str = 200, data: ImageData | None = None,
              balance_to: int | None = None, copies: int = 0,
              strength: float | tuple[float, float] = STRENGTH, steps: int = SAMPLE_STEPS, sampler: str = SAMPLER,
              guidance: float = GUIDANCE, seed: int = 0, batch_size: int | None = None, device=None,
              progress: bool = True, overwrite: bool = False, num_shards: int | None = None,
              shard_index: int | None = None):
        """Generate `per_class` synthetic images of every class (or a {class: n} dict; or "balance": each class
        of `data` filled up to its largest class's count, or to `balance_to`, so that data plus bank is balanced)
        and `copies` perturbations of each image of `data`, in large batches, and write them to the folder `path`
        atomically.

        `strength` may be a (low, high) range: each copy then gets its own strength, spread evenly over it.
        Every image has its own noise (seed, row, copy), so the work splits into shards that join into exactly
        this bank:
        under torchrun each rank makes one shard (rank 0 joins them; every rank returns the bank), or
        `num_shards`/`shard_index` make one shard by hand on machines sharing a file system. A shard is kept
        under PATH.parts/ until all are there (rerunning remakes only missing ones); it returns None until the
        bank is joined. `batch_size`: images per network call; None: the generator's default on the device it runs
        on (500 on the CPU, 1024 at 32x32 on CUDA). The whole bank is one sampling job: on CUDA the network is
        compiled when the bank's network rows pay the compile time back (Generator.job).
        """
        counts = synthetic_counts(gen, per_class, data.class_counts() if data is not None else None, balance_to)
        copies = whole_number(copies, "copies", low=0)
        if data is not None and data.num_classes > gen.num_classes:
            raise MismatchError(f"the data has {data.num_classes} classes but the generator knows "
                                f"{gen.num_classes} ({', '.join(gen.class_names[:10])}): it never saw classes "
                                f"{', '.join(data.class_names[gen.num_classes:][:10])}")
        spec = SamplingSpec(steps, sampler, guidance=guidance)
        device = rank_device(device, from_env())
        if batch_size is None:   # the generator's default on the device it will run on (large on CUDA)
            batch_size = sampling_batch(resolve_device(device) if device is not None else gen.device, gen.image_size)
        whole_number(batch_size, "batch_size", low=1)
        check_seed(seed)
        gen.check_output(sum(counts) + copies * (len(data) if data is not None else 0))
        if copies and data is None:
            raise DataError("perturbations need the real images: pass data= (an ImageData)")
        strengths = strengths_for(strength, copies)
        meta = {"format": BANK_FORMAT, "format_version": BANK_VERSION, "generator_fingerprint": gen.fingerprint,
                "class_names": gen.class_names, "image_size": list(gen.image_size), "channels": gen.channels,
                "per_class": counts[0] if len(set(counts)) == 1 else counts, "copies": copies,
                "strengths": strengths, "steps": steps, "sampler": sampler,
                "guidance": guidance,
                "guidance_interval": list(spec.guidance_interval) if spec.guidance_interval else None,
                "seed": seed, "batch_size": batch_size,
                "data_fingerprint": data.fingerprint() if data is not None else None}
        num_shards, shard_index = which_shard(num_shards, shard_index)
        options = dict(steps=steps, sampler=sampler, guidance=guidance, batch_size=batch_size, device=device,
                       progress=progress)
        rows = gen.network_rows(sum(counts), spec) + sum(   # the whole bank is one job
            gen.network_rows(len(data), spec, s) for s in strengths)

        def make_part(folder: Path) -> None:
            with gen.job(rows // num_shards):
                arrays = _generate(gen, counts, data, strengths, seed, num_shards, shard_index, options)
            _write(folder, arrays, meta)

        whole = write_sharded(path, meta, make_part, _join, num_shards=num_shards, shard_index=shard_index,
                              overwrite=overwrite)
        return cls(path, verify=num_shards > 1) if whole else None


def _generate(gen: Generator, counts: list[int], data, strengths: list, seed: int, num_shards: int,
              shard_index: int, options: dict) -> dict:
    """This shard's arrays: its batches of the synthetic images, and of the real rows with their perturbations."""
    c, (h, w) = gen.channels, gen.image_size
    b = options["batch_size"]
    labels = torch.arange(gen.num_classes).repeat_interleave(torch.tensor(counts, dtype=torch.long))
    chunks = shard_range(math.ceil(len(labels) / b), num_shards, shard_index)
    rows = slice(chunks.start * b, min(len(labels), chunks.stop * b))
    synthetic = [gen.sample(labels[i * b:(i + 1) * b], seed=seed, indices=range(i * b, min(len(labels), (i + 1) * b)),
                            **options) for i in chunks]
    out = {"synthetic": torch.cat(synthetic) if synthetic else torch.empty((0, c, h, w), dtype=torch.uint8),
           "synthetic_labels": labels[rows].numpy()}
    if data is None:
        return {**out, "perturbed": np.zeros((0, 0, c, h, w), np.uint8),
                "perturbed_labels": np.zeros(0, np.int64), "real_keys": np.zeros((0, 8), np.uint8)}
    real = gen.check_images(data.images)
    chunks = shard_range(math.ceil(len(real) / b), num_shards, shard_index)
    rows = slice(chunks.start * b, min(len(real), chunks.stop * b))

    def copies_of(i: int) -> torch.Tensor:   # (rows, copies, C, H, W) for batch i of the real rows
        x, y = real[i * b:(i + 1) * b], data.labels[i * b:(i + 1) * b]
        index = range(i * b, i * b + len(x))
        return torch.stack([gen.perturb(x, y, strength=s, seed=seed, indices=index, copy=m, **options)
                            for m, s in enumerate(strengths)], dim=1)

    perturbed = torch.cat([copies_of(i) for i in chunks]) if strengths and chunks else \
        torch.empty((len(real[rows]), len(strengths), c, h, w), dtype=torch.uint8)
    return {**out, "perturbed": perturbed, "perturbed_labels": data.labels[rows].numpy(),
            "real_keys": data.image_hashes()[rows]}


BALANCE = "balance"


def synthetic_counts(gen: Generator, per_class, have: list[int] | None = None,
                     balance_to: int | None = None) -> list[int]:
    """New images per class of `gen`: per_class of each (a whole number), a {class name or index: n} dict (other
    classes 0), or "balance": each class filled from its count in `have` (the real data's) up to the largest, or
    to `balance_to`. A class of `have` beyond the generator's classes is an error, never a silent zero."""
    if balance_to is not None and per_class != BALANCE:
        raise DataError(f"balance_to= goes with per_class={BALANCE!r}")
    if per_class == BALANCE:
        if have is None:
            raise DataError(f"per_class={BALANCE!r} fills each class up to the largest: pass the real images "
                            "(data=) whose classes it balances")
        if len(have) > gen.num_classes:
            raise MismatchError(f"the data has {len(have)} classes but the generator knows {gen.num_classes}: "
                                "it never saw the others, so it cannot fill them")
        have = list(have) + [0] * (gen.num_classes - len(have))
        return rebalance_gaps(have, 1.0, None if balance_to is None else whole_number(balance_to, "balance_to", low=1))
    if isinstance(per_class, Mapping):
        counts = [0] * gen.num_classes
        for key, n in per_class.items():
            counts[int(gen.class_index([key])[0])] = whole_number(n, f"per_class[{key!r}]", low=0)
        return counts
    if isinstance(per_class, str):
        raise DataError(f"per_class must be a whole number, a {{class: count}} dict or {BALANCE!r}, got {per_class!r}")
    return [whole_number(per_class, "per_class", low=0)] * gen.num_classes


def _write(folder: Path, arrays: dict, meta: dict) -> None:
    """A bank's files in `folder`: the arrays, then bank.json with their counts and sha256."""
    folder.mkdir(exist_ok=True)
    for name in ARRAYS:
        a = arrays[name]
        np.save(folder / f"{name}.npy", a.numpy() if isinstance(a, torch.Tensor) else a)
    meta = {**meta, "synthetic_count": len(arrays["synthetic"]), "real_count": len(arrays["perturbed"]),
            "files": {name: _sha256(folder / f"{name}.npy") for name in ARRAYS}}
    (folder / META).write_text(json.dumps(meta, indent=2))


def _join(parts: list, folder: Path) -> None:
    """One bank from the shards' banks, in shard order: exactly what one process would have built."""
    banks = [SampleBank(p) for p in parts]
    arrays = {name: np.concatenate([np.load(b.path / f"{name}.npy") for b in banks]) for name in ARRAYS}
    meta = {k: v for k, v in banks[0].meta.items() if k not in ("synthetic_count", "real_count", "files")}
    _write(folder, arrays, meta)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
