"""1-D k-means against an independent reference: the optimal clustering by dynamic programming."""

from __future__ import annotations

import numpy as np
import pytest

from edgetvm.compression import kmeans_1d


def optimal_sse(values: np.ndarray, k: int) -> float:
    """The least squared error of any k clusters of ``values`` (sorted 1-D clusters are contiguous runs:
    Bellman's dynamic program over prefix sums, O(k n^2))."""
    x = np.sort(values.astype(np.float64))
    n = x.size
    s1 = np.concatenate([[0.0], np.cumsum(x)])
    s2 = np.concatenate([[0.0], np.cumsum(x * x)])

    def cost(i, j):  # x[i:j] as one cluster
        m = j - i
        return s2[j] - s2[i] - (s1[j] - s1[i]) ** 2 / m

    best = np.full((k + 1, n + 1), np.inf)
    best[0, 0] = 0.0
    for c in range(1, k + 1):
        for j in range(c, n + 1):
            best[c, j] = min(best[c - 1, i] + cost(i, j) for i in range(c - 1, j))
    return float(best[k, n])


@pytest.mark.parametrize("k", [4, 8])
def test_lloyd_reaches_near_the_optimum(k, rng):
    values = np.concatenate([rng.normal(0, 1, 60), rng.normal(4, 0.3, 30), rng.laplace(0, 0.1, 30)])
    centroids, labels = kmeans_1d(values, k, seed=0)
    sse = float(((values - centroids[labels]) ** 2).sum())
    assert centroids.size == k and np.all(np.diff(centroids) > 0)
    assert sse <= 1.05 * optimal_sse(values, k)
    # A fixed point of Lloyd: every centroid the mean of its points, every point at its nearest centroid.
    for j, c in enumerate(centroids):
        np.testing.assert_allclose(values[labels == j].mean(), c, rtol=1e-12)
    nearest = np.abs(values[:, None] - centroids[None, :]).min(axis=1)
    np.testing.assert_allclose(np.abs(values - centroids[labels]), nearest, rtol=0, atol=1e-12)


def test_deterministic_for_a_seed_and_exact_with_few_values(rng):
    values = rng.normal(size=(64, 9))
    a, b = kmeans_1d(values, 16, seed=3), kmeans_1d(values, 16, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[1].shape == values.shape
    few = rng.integers(-3, 3, size=200).astype(np.float64)
    centroids, labels = kmeans_1d(few, 16)
    np.testing.assert_array_equal(centroids[labels], few)
