"""The evaluation's on-disk cache: each finished unit as JSON (and its images as .npz) in OUT/runs/, named by a
key of everything that decides its numbers, so an interrupted or widened evaluation reuses what it has and
torchrun's ranks share units through it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..data import ImageData
from ..io import atomic_path
from .config import unit_streams

def _unit_path(runs: Path, k: int, seed: int, tag: str) -> Path:
    return runs / f"k{k}-seed{seed}-{tag}.json"


def cached(runs, k, seed, tag, train: ImageData):
    """A finished unit of this exact evaluation, or None; a file whose subset is not this data's is ignored."""
    if runs is None:
        return None
    path = _unit_path(runs, k, seed, tag)
    if not path.exists():
        return None
    unit = json.loads(path.read_text())
    subset = train.subset(per_class=k, seed=unit_streams(k, seed, 0)["subset"]) if k else train
    if unit.get("subset_fingerprint") != subset.fingerprint():
        return None
    arrays = path.with_suffix(".npz")
    if arrays.exists():
        with np.load(arrays) as z:
            unit["_arrays"] = {name: torch.from_numpy(z[name]) for name in z.files}
    return unit


def store(runs: Path, unit: dict, tag: str) -> None:
    """The unit as JSON, its images (preview grid, memorization pairs) as .npz beside it; both atomic."""
    runs.mkdir(parents=True, exist_ok=True)
    path = _unit_path(runs, unit["k"], unit["seed"], tag)
    arrays = unit.get("_arrays")
    if arrays:
        with atomic_path(path.with_suffix(".npz")) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **{name: a.numpy() for name, a in arrays.items()})
    with atomic_path(path) as tmp:   # written last: its presence means the unit is complete
        tmp.write_text(json.dumps({k: v for k, v in unit.items() if k != "_arrays"}, indent=1))


def gather_units(runs: Path, everything: list, tag: str, train: ImageData, poll_s: float = 1.0) -> list:
    """Every unit of the evaluation, waiting for the other ranks' files (torchrun stops all ranks if one fails)."""
    units = {}
    while len(units) < len(everything):
        for k, seed in everything:
            if (k, seed) not in units:
                unit = cached(runs, k, seed, tag, train)
                if unit is not None:
                    units[k, seed] = unit
        if len(units) < len(everything):
            time.sleep(poll_s)
    return list(units.values())


def load_json(path: Path | None):
    """A cached JSON fact (e.g. a regime's classical selection), or None."""
    return json.loads(path.read_text()) if path is not None and path.exists() else None


def store_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=1))
