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

Scaled codebooks (``cluster_scaled``): per-channel non-uniform quantization. Each output slice ``o``
gets a scale ``s_o`` (its ``max |w|``, rounded to float16, which the artifact stores), the layer one
codebook ``T`` of ``k`` values in ``[-1, 1]``, k-means over every ``w / s_o`` of the layer, and

    W'[o, i] = fl32(s_o * T[a(o, i)])

(one float32 product, which the C decoder repeats bit for bit). At the same ``k`` this errs far less
than one codebook of raw values, whose entries must span every channel's range at once, and costs
``2 O + 4 k`` bytes of tables where a codebook per channel costs ``4 k O``.
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


def channel_scales(weight: np.ndarray, axis: int = 0) -> np.ndarray:
    """``max |w|`` of each slice along ``axis``, rounded to float16 (as the artifact stores it) and widened
    back: float32, never 0 for a slice with a non-zero weight (the smallest float16 above 0 at least)."""
    rows = slices(weight.astype(np.float32), True, axis)
    peak = np.abs(rows).max(axis=1)
    half = peak.astype(np.float16)
    tiny = np.float16(np.finfo(np.float16).smallest_subnormal)
    half = np.where((peak > 0) & (half == 0), tiny, half)
    # float16 rounds to nearest: a peak rounded down would leave |w / s| a little above 1, which is fine.
    return np.minimum(half, np.float16(np.finfo(np.float16).max)).astype(np.float32)


def expand_scaled(codes: np.ndarray, scales: np.ndarray, axis: int = 0) -> np.ndarray:
    """``fl32(s_o * codes)``, ``scales`` along ``axis`` of the float32 ``codes`` (the codebook values)."""
    shape = [1] * codes.ndim
    shape[axis] = scales.size
    return (codes.astype(np.float32) * scales.astype(np.float32).reshape(shape)).astype(np.float32)


def cluster_scaled(weight: np.ndarray, k: int, *, seed: int = 0, sparsity: float = 0.0,
                   axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A float32 ``weight`` as a shared codebook of normalized values and a scale per slice along ``axis``
    (module docstring): each element's codebook value (float32, same shape) and the scales. With
    ``sparsity`` the pruned weights take the exact code 0 and the rest ``k - 1`` centroids."""
    scales = channel_scales(weight, axis)
    shape = [1] * weight.ndim
    shape[axis] = scales.size
    safe = np.where(scales > 0, scales, 1).reshape(shape)
    normalized = weight.astype(np.float64) / safe
    kept = prune_magnitude(weight, sparsity) if sparsity > 0 else np.ones(weight.shape, dtype=bool)
    codes = np.zeros(weight.shape, dtype=np.float32)
    if kept.any():
        centroids, labels = kmeans_1d(normalized[kept], k - 1 if sparsity > 0 else k, seed=seed)
        codes[kept] = centroids.astype(np.float32)[labels]
    return codes, scales


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


def scaled_weight_bytes(codes: np.ndarray, scales: np.ndarray) -> tuple[int, int]:
    """``shared_weight_bytes`` of a scaled codebook: float16 scales and one float32 table besides the indices."""
    values, symbols = np.unique(codes, return_inverse=True)
    counts = np.bincount(symbols.reshape(-1))
    width = max(int(np.ceil(np.log2(max(counts.size, 2)))), 1)
    tables = 2 * scales.size + 4 * values.size
    coded_bits = int((huffman.code_lengths(counts) * counts).sum())
    return tables + (codes.size * width + 7) // 8, tables + (coded_bits + 7) // 8
