"""The evaluation's on-disk cache: each finished unit as JSON (and its images as .npz) in OUT/runs/, named by a
key of everything that decides its numbers, so an interrupted or widened evaluation reuses what it has and
torchrun's ranks share units through it."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from ..data import ImageData
from ..io import atomic_path
from .config import EvalConfig
from .unitplan import unit_plan

def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; the platform's processor string elsewhere)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device) -> dict:
    """What a unit's numbers depend on beyond its settings: torch's version, the device, the CPU, the threads
    (floating-point sums differ between them in their last bits, and so may a classifier's predictions) and the
    precision classifiers train in (classify.training.bf16_training: DIFFAUG_CPU_BF16)."""
    from ..classify.training import training_precision   # here: classify imports torchvision, cpu_model does not

    device = torch.device(device)
    return {"torch": torch.__version__, "device": device.type, "cpu": cpu_model(), "threads": torch.get_num_threads(),
            "classifier_precision": training_precision(device),
            **({"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {})}


@contextlib.contextmanager
def using_threads(threads: int | None):
    """torch's intra-op threads set to `threads` (None: as they are) for a block, then restored: a unit's arithmetic
    repeated in this process without changing its thread count for whatever runs next."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# what a unit made before a key was recorded had: classifiers trained in float32 before bf16 came (diffaug 0.6)
BEFORE_RECORDED = {"classifier_precision": "float32"}


def mixed_machines(units: list, current: dict) -> list[str]:
    """What differs between the machine of each cached unit and `current` (the one that runs the rest)."""
    found = []
    for unit in units:
        theirs = unit.get("machine")
        if theirs is None:
            found.append(f"k{unit['k']}-seed{unit['seed']}: no machine recorded (an older diffaug)")
            continue
        theirs = {**BEFORE_RECORDED, **theirs}
        differ = [f"{key} {theirs.get(key)!r} vs {current.get(key)!r}" for key in sorted(set(theirs) | set(current))
                  if theirs.get(key) != current.get(key)]
        if differ:
            found.append(f"k{unit['k']}-seed{unit['seed']}: " + ", ".join(differ))
    return found


def _unit_path(runs: Path, k: int, seed: int, tag: str) -> Path:
    return runs / f"k{k}-seed{seed}-{tag}.json"


def cached(runs, k, seed, tag, train: ImageData, cfg: EvalConfig):
    """A finished unit of this exact evaluation, or None; a file whose subset is not the one this unit draws
    (unitplan, as the run does) is ignored."""
    if runs is None:
        return None
    path = _unit_path(runs, k, seed, tag)
    if not path.exists():
        return None
    unit = json.loads(path.read_text())
    if unit.get("subset_fingerprint") != unit_plan(cfg, k, seed, train.num_classes).subset(train).fingerprint():
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


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """A network's weights as one .safetensors file, written atomically (a cached reference network, a unit's kept
    teacher)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))


def load_weights(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """`model`, freshly built on its device, with the weights save_weights wrote to `path`; in eval mode."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))
    return model.eval()


def pool_path(runs: Path, seed: int, tag: str) -> Path:
    """Seed `seed`'s pool generator (unlabelled images), fitted once per seed and shared by its units."""
    return runs / f"pool-generator-seed{seed}-{tag}.safetensors"


def parts_path(runs: Path, k: int, seed: int, tag: str) -> Path:
    """The folder where unit (k, seed) keeps its finished parts while it runs (see UnitParts)."""
    return runs / f"parts-k{k}-seed{seed}-{tag}"


class UnitParts:
    """A unit's finished parts, kept on disk while it runs, so that a unit killed part-way resumes at its next part
    rather than from its start (a Fashion-MNIST unit with unlabelled images takes hours of a slow CPU core: longer
    than a session, or a laptop's battery). The parts, in the order a unit makes them: the classical choice made
    inside its subset, each arm's record, the weights of the models a later part reads (the real-only filter, the
    classical teacher, the generator's labeller) and the synthetic pools. Every part is a
    function of the unit's seeds and what came before it, so a resumed unit is the uninterrupted one, bit for bit on
    one machine; parts made on another machine (cache.machine) are trained again, with a warning. The index,
    parts.json, is rewritten atomically after each part's files; the protocol removes the folder once the unit's
    JSON is stored. `folder` None: nothing is kept (an evaluation without out_dir)."""

    def __init__(self, folder: Path | None, here: dict):
        self.folder, self.index = (Path(folder) if folder is not None else None), {"machine": here, "arms": {}}
        found, ours = self._read(self.folder, here)
        if ours:
            self.index = found
        elif found is not None:
            import warnings

            warnings.warn(f"{self.folder.name}: its finished parts were made on another machine "
                          f"({found.get('machine')}), so this unit is run again from its start", stacklevel=2)

    @staticmethod
    def _read(folder: Path | None, here: dict) -> tuple[dict | None, bool]:
        """(the kept index, whether machine `here` made it); (None, False) where nothing is kept."""
        found = load_json(Path(folder) / "parts.json") if folder is not None else None
        return found, found is not None and found.get("machine") == here

    @staticmethod
    def finished(folder: Path | None, here: dict) -> set[str]:
        """The names of the parts kept in `folder` that a unit run on machine `here` would read: its arms, and
        "selection" and "pools" where kept (what the cost estimate leaves out)."""
        index, ours = UnitParts._read(folder, here)
        if not ours:
            return set()
        return set(index["arms"]) | {name for name in ("selection", "pools") if name in index}

    @property
    def seconds(self) -> float:
        """The unit's wall time when its last kept part ended (0 for a unit not begun)."""
        return self.index.get("seconds", 0.0)

    def get(self, name: str):
        """A kept part's record ("selection", "pools", ...) or None."""
        return self.index.get(name)

    def arm(self, arm: str) -> dict | None:
        return self.index["arms"].get(arm)

    def models(self, arm: str, new_model) -> list | None:
        """Arm `arm`'s kept models (`new_model()` builds an untrained one to load each into), or None."""
        names = self.index.get("models", {}).get(arm)
        return [load_weights(new_model(), self.folder / name) for name in names] if names is not None else None

    def pools(self, device) -> dict:
        """The kept synthetic pools ({name: (images, labels)}) on `device`."""
        from safetensors.torch import load_file

        tensors = load_file(str(self.folder / "pools.safetensors"), device=str(device))
        return {name: (tensors[f"{name}/images"], tensors[f"{name}/labels"]) for name in self.index["pools"]["names"]}

    def keep(self, seconds: float, *, arm: str | None = None, record: dict | None = None, models: list | None = None,
             pools: dict | None = None, about_pools: dict | None = None, **parts) -> None:
        """Keep a finished part: an arm's `record` (and its `models`' weights), the `pools` (and `about_pools`, what
        the unit records of them), or any other JSON part by name; `seconds`: the unit's wall time so far."""
        if self.folder is None:
            return
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        if models:
            names = [f"{arm}-r{r}.safetensors" for r in range(len(models))]
            for name, model in zip(names, models):
                save_weights(model, self.folder / name)
            self.index.setdefault("models", {})[arm] = names
        if pools is not None:
            with atomic_path(self.folder / "pools.safetensors") as tmp:
                save_file({f"{name}/{part}": t.detach().cpu().clone() for name, (images, labels) in pools.items()
                           for part, t in (("images", images), ("labels", labels))}, str(tmp))
            parts["pools"] = {**(about_pools or {}), "names": list(pools)}
        if arm is not None:
            self.index["arms"][arm] = record
        self.index.update(parts, seconds=round(seconds, 2))
        store_json(self.folder / "parts.json", self.index)   # last: it names only files already written


def gather_units(runs: Path, everything: list, tag: str, train: ImageData, cfg: EvalConfig,
                 poll_s: float = 1.0) -> list:
    """Every unit of the evaluation, waiting for the other ranks' files (torchrun stops all ranks if one fails)."""
    units = {}
    while len(units) < len(everything):
        for k, seed in everything:
            if (k, seed) not in units:
                unit = cached(runs, k, seed, tag, train, cfg)
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
