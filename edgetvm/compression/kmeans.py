"""One-dimensional k-means (Lloyd 1982) with k-means++ seeding (Arthur & Vassilvitskii 2007).

Weight sharing (Han et al. 2016, Deep Compression) replaces the weights ``w_i`` of a layer by ``k``
centroids ``c_j``, minimising the squared error

    E = sum_i min_j (w_i - c_j)^2.

In one dimension the nearest centroid of every value is found by one ``searchsorted`` against the
midpoints of the sorted centroids, and Lloyd's update is a weighted ``bincount``, so each iteration
is O(n log k) in numpy. The distinct values are clustered with their multiplicities as weights
(an int8 tensor has at most 256 of them, whatever its size), which gives the same objective.
"""

from __future__ import annotations

import numpy as np


def kmeans_plus_plus(values: np.ndarray, counts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` seeds drawn by k-means++: each next seed with probability ``count * D(x)^2``, D the distance
    to the nearest seed so far (the first with probability ``count``)."""
    seeds = [values[rng.choice(values.size, p=counts / counts.sum())]]
    nearest = (values - seeds[0]) ** 2
    for _ in range(1, k):
        weight = counts * nearest
        total = weight.sum()
        if total <= 0:  # fewer distinct values than k: every value is a seed already
            break
        seeds.append(values[rng.choice(values.size, p=weight / total)])
        nearest = np.minimum(nearest, (values - seeds[-1]) ** 2)
    return np.unique(np.asarray(seeds, dtype=np.float64))


def assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted ``centroids`` for each value (ties to the lower one)."""
    midpoints = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(midpoints, values, side="left")


def kmeans_1d(data: np.ndarray, k: int, *, seed: int = 0, iterations: int = 100,
              restarts: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Sorted centroids (float64, at most ``k``) and, per element of ``data``, the index of its centroid.

    The best of ``restarts`` k-means++ seedings (Lloyd's local optima differ by up to 2x in error on
    mixtures), each run until no centroid moves. Deterministic for a given ``seed``. A tensor with at
    most ``k`` distinct values comes back exactly (its values are the centroids)."""
    values, inverse, counts = np.unique(np.asarray(data, dtype=np.float64).reshape(-1), return_inverse=True,
                                        return_counts=True)
    if values.size <= k:
        return values, inverse.reshape(np.shape(data))
    counts = counts.astype(np.float64)
    rng = np.random.default_rng(seed)
    best, best_error = None, np.inf
    for _ in range(restarts):
        centroids = lloyd(values, counts, kmeans_plus_plus(values, counts, k, rng), iterations)
        error = float((counts * (values - centroids[assign(values, centroids)]) ** 2).sum())
        if error < best_error:
            best, best_error = centroids, error
    return best, assign(values, best)[inverse].reshape(np.shape(data))


def lloyd(values: np.ndarray, counts: np.ndarray, centroids: np.ndarray, iterations: int) -> np.ndarray:
    """Lloyd's iterations on weighted sorted values from ``centroids`` until none moves."""
    for _ in range(iterations):
        labels = assign(values, centroids)
        mass = np.bincount(labels, weights=counts, minlength=centroids.size)
        total = np.bincount(labels, weights=counts * values, minlength=centroids.size)
        used = mass > 0
        updated = np.sort(total[used] / mass[used])
        if updated.size == centroids.size and np.array_equal(updated, centroids):
            break
        centroids = updated
    return centroids
