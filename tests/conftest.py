"""Shared fixtures: real small data (scikit-learn's digits, procedurally drawn shapes) and one fitted generator."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import diffaug

# The cores shared among pytest-xdist's workers (pyproject's addopts): on two cores, two workers of one thread each
# finish the suite sooner than one test at a time on both (most tests are too small to keep two threads busy). The
# commands some tests start (the CLI, the examples, torchrun) inherit the same share through OMP_NUM_THREADS.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, (os.cpu_count() or 1) // WORKERS) if WORKERS > 1 else 2
torch.set_num_threads(THREADS)
if WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")   # tests importing albumentations directly stay offline

# pytest-xdist hands whole files to its workers (pyproject's addopts: --dist loadfile --no-loadscope-reorder, an
# option of xdist 3.8). The files that take longest start first, so that the short ones fill the end of the run on
# both workers; xdist's own order (most tests first) left these for last. Measured with --durations=0 on two cores
# (2026-12-08): these six spent 556 of the suite's 902 s of test time, and the run's wall time was 36 s above half.
LONGEST_FIRST = ("test_kill.py", "test_distributed.py", "test_evaluation.py", "test_opponents.py", "test_examples.py",
                 "test_docs.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: each file's own order is kept


def draw_shapes(n_per_class, size=(28, 28), channels=1, num_classes=4, seed=0) -> diffaug.ImageData:
    """Procedurally drawn images: class k is a filled shape (disc, square, cross, ring, bars, ...) of
    random position, scale and colour on a dark background. `n_per_class` may be a list (unbalanced)."""
    rng = np.random.default_rng(seed)
    counts = n_per_class if isinstance(n_per_class, (list, tuple)) else [n_per_class] * num_classes
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    images, labels = [], []
    for k, count in enumerate(counts):
        for _ in range(count):
            cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
            r = rng.uniform(0.18, 0.3) * min(h, w)
            dy, dx = (yy - cy) / r, (xx - cx) / r
            kind, angle = k % 6, (k // 6) * np.pi / 7
            ry, rx = dy * np.cos(angle) - dx * np.sin(angle), dy * np.sin(angle) + dx * np.cos(angle)
            mask = [ry ** 2 + rx ** 2 < 1,                                         # disc
                    np.maximum(abs(ry), abs(rx)) < 0.8,                              # square
                    (np.minimum(abs(ry), abs(rx)) < 0.25) & (np.maximum(abs(ry), abs(rx)) < 1),   # cross
                    abs(np.sqrt(ry ** 2 + rx ** 2) - 0.75) < 0.25,                   # ring
                    (np.sin(ry * 5) > 0) & (abs(rx) < 1) & (abs(ry) < 1),            # bars
                    (ry > -0.8) & (abs(rx) < (ry + 0.8) * 0.6) & (ry < 1)][kind]     # triangle
            colour = rng.uniform(0.6, 1.0, size=channels) * 255
            img = np.zeros((h, w, channels))
            img[mask] = colour
            img += rng.normal(0, 6, img.shape)
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(k)
    return diffaug.ImageData.from_arrays(np.stack(images), np.array(labels),
                                         [f"shape{k}" for k in range(len(counts))])


@pytest.fixture(scope="session", autouse=True)
def own_hf_cache(tmp_path_factory):
    """`datasets` caches generated rows by fingerprint: the suite writes its own cache, never the user's, and never
    reads one a previous run left (a cached expansion makes no sampling calls, which tests count)."""
    import datasets

    path = str(tmp_path_factory.mktemp("hf_cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_CACHE", path)   # CLI runs in subprocesses
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", path)
        yield path


@pytest.fixture(scope="session")
def digits_train():
    return diffaug.load_data("digits", "train")


@pytest.fixture(scope="session")
def digits_test():
    return diffaug.load_data("digits", "test")


@pytest.fixture(scope="session")
def digits_gen(digits_train, tmp_path_factory):
    """A generator fitted briefly on the digits training half; good enough for class-correct samples.

    Fitted once for the whole run, not once per pytest-xdist worker (half a minute each on a slow CPU): the first
    worker to need it fits it while the others wait for the file (the workers share the base temporary folder's
    parent). On the worker's own thread share: OpenMP threads beyond the cores spin against the other worker's (a
    two-thread fit held a waiting worker 81 s on a 2-core EPYC; one thread alone fits it in 31 s)."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    shared = shared.parent if os.environ.get("PYTEST_XDIST_WORKER") else shared
    path = shared / "digits_gen.safetensors"
    with FileLock(str(path) + ".lock"):
        if not path.exists():   # class accuracy of its samples 0.99 (Xeon)
            diffaug.fit(digits_train, steps=300, progress=False, seed=0).save(path)
    return diffaug.Generator.load(path)


@pytest.fixture(scope="session")
def digits_gen_file(digits_gen, tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "digits.safetensors"
    digits_gen.save(path)
    return path
