"""One tensor's shared weights: magnitude pruning, k-means per tensor or per first-axis slice, and what
they cost to store.

Deep Compression's first two steps (Han et al. 2016, sections 2-3) on one tensor: with a ``sparsity``
``s``, the ``round(s * n)`` weights of smallest ``|w|`` become exactly zero, the survivors are clustered
with ``k - 1`` centroids and zero is kept as the ``k``-th, exact code (the refit never moves it,
refit.py). The Huffman coder then gives the zeros, the most frequent index, the shortest code.

Per slice where it pays: a slice along the output axis (``axis``: the first of an OIHW conv or a
per-channel int8 weight, the last of a dense ``[F, O]`` weight, which the standalone coder stores
column-interleaved) gets its own codebook when it has at least ``WEIGHTS_PER_CENTROID * k`` weights, so
that its ``k``-entry table is at most 1/16 of the indices it serves; otherwise the tensor shares one.
"""

from __future__ import annotations

import numpy as np

from . import huffman
from .kmeans import kmeans_1d

WEIGHTS_PER_CENTROID = 16


def prune_magnitude(weight: np.ndarray, sparsity: float) -> np.ndarray:
    """The mask of the weights kept by unstructured magnitude pruning: all but the ``round(sparsity * n)``
    of smallest ``|w|`` (ties broken by position, so exactly that many are pruned)."""
    flat = np.abs(weight.astype(np.float64)).reshape(-1)
    pruned = int(round(sparsity * flat.size))
    keep = np.ones(flat.size, dtype=bool)
    keep[np.argsort(flat, kind="stable")[:pruned]] = False
    return keep.reshape(weight.shape)


def slices(weight: np.ndarray, per_slice: bool, axis: int | None = 0) -> np.ndarray:
    """``weight`` as rows, one per codebook: its slices along ``axis``, or one row."""
    return np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1) if per_slice else weight.reshape(1, -1)


def cluster_tensor(weight: np.ndarray, k: int, *, seed: int = 0, sparsity: float = 0.0,
                   axis: int | None = 0) -> tuple[np.ndarray, bool]:
    """``weight`` with each value replaced by its centroid (integers rounded for an integer dtype), and
    whether its slices along ``axis`` got codebooks of their own (``axis=None``: one codebook). With
    ``sparsity`` the smallest weights are pruned to exactly zero first (prune_magnitude) and the survivors
    of each slice share ``k - 1`` centroids, zero being the ``k``-th."""
    per_slice = (axis is not None and weight.ndim >= 2
                 and weight.size // weight.shape[axis] >= WEIGHTS_PER_CENTROID * k)
    kept = prune_magnitude(weight, sparsity) if sparsity > 0 else np.ones(weight.shape, dtype=bool)
    rows = slices(weight, per_slice, axis)
    masks = slices(kept, per_slice, axis)
    out = np.zeros(rows.shape, dtype=weight.dtype)
    integer = np.issubdtype(weight.dtype, np.integer)
    for i, (row, mask) in enumerate(zip(rows, masks)):
        if not mask.any():
            continue
        centroids, labels = kmeans_1d(row[mask], k - 1 if sparsity > 0 else k, seed=seed)
        if integer:
            info = np.iinfo(weight.dtype)
            centroids = np.clip(np.round(centroids), info.min, info.max)
        out[i, mask] = centroids[labels].astype(weight.dtype)
    moved = np.moveaxis(weight, axis, 0).shape if per_slice else weight.shape
    out = out.reshape(moved)
    return (np.ascontiguousarray(np.moveaxis(out, 0, axis)) if per_slice else out), per_slice


def shared_weight_bytes(clustered: np.ndarray, per_slice: bool, axis: int | None = 0) -> tuple[int, int]:
    """Bytes of a clustered tensor as fixed-width indices (``ceil(log2 k)`` bits each) and as Huffman
    codes of them, both with the centroid tables: the "clustered" and "coded" stages of the report."""
    rows = slices(clustered, per_slice, axis)
    tables, symbols = 0, []
    for row in rows:
        values, index = huffman.ranked_symbols(row)
        tables += values.size * clustered.itemsize
        symbols.append(index)
    symbols = np.concatenate(symbols)
    counts = np.bincount(symbols)
    width = max(int(np.ceil(np.log2(max(counts.size, 2)))), 1)
    coded_bits = int((huffman.code_lengths(counts) * counts).sum())
    return tables + (symbols.size * width + 7) // 8, tables + (coded_bits + 7) // 8
