"""Generator quality, offline: CAS, own-feature FID/KID, k-NN precision/recall, memorization; and which test images
each classifier got right (the paired statistics built on them: verdict.py).

FID and KID here are computed on the penultimate features of a classifier diffaug trains on the real
data (no downloaded Inception weights), hence the names `fid_own` and `kid_own`: their values are
comparable with each other, not with published Inception FIDs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import linalg

from ..classify.training import accuracy, random_batches, train_classifier


def fid_own(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017), own features."""
    a, b = real.double().numpy(), fake.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():   # near-singular product: regularize as the reference code does
        eps = 1e-6 * np.eye(len(cov_a))
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    value = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean.real)
    return float(max(value, 0.0))


def kid_own(real: torch.Tensor, fake: torch.Tensor, subsets: int = 20, subset_size: int = 500, seed: int = 0) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel (Binkowski et al. 2018), averaged over subsets."""
    rng = np.random.default_rng(seed)
    a, b = real.double().numpy(), fake.double().numpy()
    d = a.shape[1]
    m = min(subset_size, len(a), len(b))
    kernel = lambda x, y: (x @ y.T / d + 1) ** 3
    values = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
        values.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                      - 2 * kxy.mean())
    return float(np.mean(values))


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, *, real_labels=None, fake_labels=None,
                     max_samples: int | None = None, seed: int = 0) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): the share of each set inside the other's
    k-NN manifold (union of balls reaching each point's k-th nearest neighbour).

    With `max_samples`, each set larger than that is subsampled at random (seeded), stratified by its labels
    when given, so that a pool sorted by class is represented by every class, not by its first rows."""
    real, fake = real.float(), fake.float()
    if max_samples is not None:
        real = real[stratified_sample(len(real), max_samples, real_labels, seed)]
        fake = fake[stratified_sample(len(fake), max_samples, fake_labels, seed + 1)]

    def inside(ref: torch.Tensor, query: torch.Tensor) -> float:
        radii = torch.cdist(ref, ref).kthvalue(k + 1, dim=1).values   # +1: a point is its own 0th neighbour
        return (torch.cdist(query, ref) <= radii[None]).any(1).float().mean().item()
    return inside(real, fake), inside(fake, real)


def stratified_sample(n: int, size: int, labels=None, seed: int = 0) -> torch.Tensor:
    """Indices of `size` of n rows drawn at random without replacement, each class in proportion (all rows if
    n <= size)."""
    g = torch.Generator().manual_seed(seed)
    if n <= size:
        return torch.arange(n)
    if labels is None:
        return torch.randperm(n, generator=g)[:size]
    labels = torch.as_tensor(labels)
    picks = []
    for c in labels.unique():
        rows = (labels == c).nonzero().flatten()
        picks.append(rows[torch.randperm(len(rows), generator=g)[:round(size * len(rows) / n)]])
    return torch.cat(picks)


def nearest_two(queries: torch.Tensor, references: torch.Tensor, chunk: int = 2048):
    """Distances to, and index of, each query's nearest and second-nearest reference (flattened pixels)."""
    q, r = queries.flatten(1).float(), references.flatten(1).float()
    d1, d2, idx = [], [], []
    for i in range(0, len(q), chunk):
        d = torch.cdist(q[i:i + chunk], r)
        top = d.topk(2, dim=1, largest=False)
        d1.append(top.values[:, 0])
        d2.append(top.values[:, 1])
        idx.append(top.indices[:, 0])
    return torch.cat(d1), torch.cat(d2), torch.cat(idx)


def memorization(synthetic: torch.Tensor, train: torch.Tensor, ratio: float = 1 / 3, worst: int = 8) -> dict:
    """Share of synthetic images whose nearest training image is closer than `ratio` x the second nearest
    (pixel space; an exact copy counts whatever the second distance). Also the `worst` offenders' indices."""
    d1, d2, nn_idx = nearest_two(synthetic, train)
    r = torch.where(d1 == 0, torch.zeros_like(d1), d1 / d2.clamp_min(1e-12))
    order = r.argsort()[:worst]
    return {"rate": (r < ratio).float().mean().item(), "ratio_threshold": ratio,
            "worst": [{"synthetic": int(i), "nearest_train": int(nn_idx[i]), "distance_ratio": float(r[i])}
                      for i in order]}


def pack_bits(correct: torch.Tensor) -> str:
    """Which test images a classifier got right, as base64 of the packed bits (899 images: 152 characters)."""
    import base64

    return base64.b64encode(np.packbits(correct.cpu().numpy().astype(bool)).tobytes()).decode()


def unpack_bits(text: str, n: int) -> np.ndarray:
    import base64

    return np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8))[:n].astype(bool)


def per_class_accuracy(correct: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    """Mean of `correct` (per test image) within each class, in float64 (counts of images, exactly)."""
    return [float(correct[labels == c].double().mean()) if (labels == c).any() else math.nan
            for c in range(num_classes)]


def shot_groups(counts: list[int]) -> dict[str, list[int]]:
    """Classes as many-, medium- and few-shot by their rank in training images (most first, ties by class
    index): the first third of the ranks, the middle third, the last third. CIFAR-LT's fixed cuts (100 and 20
    images) assume a head of 5,000; thirds of the ranks serve any head and ratio."""
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    n = len(order)
    return {"many": sorted(order[:round(n / 3)]), "medium": sorted(order[round(n / 3):round(2 * n / 3)]),
            "few": sorted(order[round(2 * n / 3):])}


def cas(images: torch.Tensor, labels: torch.Tensor, test_images: torch.Tensor, test_labels: torch.Tensor, *,
        num_classes: int, steps: int = 800, batch_size: int = 128, seed: int = 0, device="cpu") -> float:
    """Classification Accuracy Score (Ravuri & Vinyals 2019): train the reference classifier on `images`
    (synthetic) only, report its accuracy on real test images."""
    model = train_classifier(random_batches(images, labels, batch_size, seed), images.shape[1], num_classes,
                             steps=steps, seed=seed, device=device)
    return accuracy(model, test_images, test_labels, device)
