"""Magnitude pruning before clustering (sharing.py): exactly the largest weights kept, zero an exact code
that the refit leaves alone, and the pruned tensor's indices through the Huffman coder."""

from __future__ import annotations

import numpy as np
import pytest

import edgetvm
from edgetvm.compression import CompressOptions, cluster_tensor, huffman, shared_weight_bytes, solve_centroids
from edgetvm.compression.sharing import prune_magnitude
from edgetvm.errors import InputError


@pytest.mark.parametrize("sparsity", [0.3, 0.7, 0.9])
def test_pruning_keeps_exactly_the_largest_weights(sparsity, rng):
    weight = rng.normal(size=(16, 8, 3, 3)).astype(np.float32)
    kept = prune_magnitude(weight, sparsity)
    assert kept.sum() == weight.size - round(sparsity * weight.size)
    assert np.abs(weight[kept]).min() > np.abs(weight[~kept]).max()
    clustered, per_slice = cluster_tensor(weight, 4, sparsity=sparsity)
    assert per_slice  # 72 weights per output channel: a codebook each
    np.testing.assert_array_equal(clustered != 0, kept)
    for row in clustered.reshape(16, -1):
        assert np.unique(row[row != 0]).size <= 3


def test_pruned_indices_round_trip_through_huffman_with_zero_shortest(rng):
    weight = rng.normal(size=(4096, 32)).astype(np.float32)
    clustered, per_slice = cluster_tensor(weight, 16, sparsity=0.8)
    assert not per_slice
    values, symbols = np.unique(clustered.ravel(), return_inverse=True)
    counts = np.bincount(symbols)
    lengths = huffman.code_lengths(counts)
    np.testing.assert_array_equal(huffman.decode(huffman.encode(symbols, lengths), lengths, symbols.size), symbols)
    assert lengths[np.flatnonzero(values == 0)[0]] == 1 == lengths.min()
    fixed, coded = shared_weight_bytes(clustered, per_slice)
    # 4-bit indices against 1 bit per zero plus at most 1 + 4 bits per survivor.
    assert coded < fixed * 0.5 and fixed == 16 * 4 + weight.size // 2


def test_refit_leaves_pruned_weights_exactly_zero(rng):
    w0 = rng.normal(size=(8, 72)).astype(np.float32)
    x0 = rng.normal(size=(300, 1, 72)).astype(np.float32)
    x = (x0 + 0.1 * rng.normal(size=x0.shape)).astype(np.float32)
    for per_output, k in ((True, 4), (False, 8)):
        clustered, sliced = cluster_tensor(w0, k, sparsity=0.6)
        assert sliced == per_output
        refit, before, after = solve_centroids(x, x0, w0, clustered, per_output)
        np.testing.assert_array_equal(refit == 0, clustered == 0)
        assert after < before
        # Against the dense least squares over the non-zero centroids alone (zero pinned).
        books = clustered if per_output else clustered.reshape(1, -1)
        columns, owners = [], []
        for b, row in enumerate(books):
            for value in np.unique(row[row != 0]):
                mask = (clustered == value) & ((np.arange(8) == b)[:, None] if per_output else True)
                columns.append((x[:, 0].astype(np.float64) @ mask.T.astype(np.float64)).ravel())
                owners.append(mask)
        target = (x0[:, 0].astype(np.float64) @ w0.T.astype(np.float64)).ravel()
        solution = np.linalg.lstsq(np.stack(columns, axis=1), target, rcond=None)[0]
        want = sum(c * mask for c, mask in zip(solution, owners))
        np.testing.assert_allclose(refit, want, rtol=1e-4, atol=1e-5)


def test_cluster_pass_prunes_and_refits_keeping_zeros(rng):
    from tests.backends.standalone_models import small_convnet

    calibration = [rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(8)]
    compiled = edgetvm.compile(small_convnet(), "host", calibration=calibration,
                               compress={"clusters": 8, "keep": [], "sparsity": {"*": 0.5}})
    layers = compiled.report.details["ClusterWeights"]["layers"]
    assert len(layers) == 4
    for layer in layers:
        size = int(np.prod(layer["shape"]))
        assert layer["sparsity"] == round(0.5 * size) / size, layer
        assert layer["output_error_refit"] <= layer["output_error_kmeans"] + 1e-12, layer


@pytest.mark.parametrize("given, message", [
    ({"clusters": 8, "sparsity": 1.0}, "--cluster-sparsity \\*=1.0: give the fraction"),
    ({"clusters": 8, "sparsity": {"conv*": -0.1}}, "--cluster-sparsity conv\\*=-0.1"),
    ({"sparsity": 0.5}, "prunes the clustered layers before clustering: give clusters or layers"),
])
def test_bad_sparsity_is_named(given, message):
    with pytest.raises(InputError, match=message):
        CompressOptions.coerce(given)


def test_pruned_per_column_codebooks_rank_zero_first(rng):
    # A dense [F, O] weight: a codebook per output column; zero, the most frequent value of each
    # column's table, is symbol 0 of every table, so the one Huffman code gives it one bit.
    weight = rng.normal(size=(512, 6)).astype(np.float32) * np.linspace(0.5, 3, 6, dtype=np.float32)
    clustered, per_slice = cluster_tensor(weight, 8, sparsity=0.75, axis=-1)
    assert per_slice
    for column in clustered.T:
        values, symbols = huffman.ranked_symbols(column)
        assert values[0] == 0 and values.size <= 8
        np.testing.assert_array_equal(values[symbols], column)
        counts = np.bincount(symbols)
        assert (np.diff(counts) <= 0).all()
    np.testing.assert_array_equal(clustered != 0, prune_magnitude(weight, 0.75))
