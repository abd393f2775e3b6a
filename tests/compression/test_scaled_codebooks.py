"""Scaled codebooks (``compress={"scaled": True}``): a float16 scale per output channel times one codebook
per layer (sharing.cluster_scaled), refit on calibration inputs (refit.solve_scales, solve_centroids)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import edgetvm
from edgetvm.compression import (ClusterWeights, CompressOptions, cluster_scaled, cluster_tensor, expand_scaled,
                                 solve_centroids)
from edgetvm.compression.refit import solve_scales
from edgetvm.compression.sharing import channel_scales
from edgetvm.errors import InputError


def ranged_weight(rng, shape, axis=0) -> np.ndarray:
    """Channels whose ranges span 100x, as a folded conv's do."""
    spread = np.geomspace(0.01, 1, shape[axis]).reshape([-1 if a == axis % len(shape) else 1
                                                         for a in range(len(shape))])
    return (rng.normal(size=shape) * spread).astype(np.float32)


@pytest.mark.parametrize("shape, axis", [((32, 16, 3, 3), 0), ((64, 1, 3, 3), 0), ((96, 24), -1)])
def test_scaled_codebook_errs_less_than_one_codebook_at_the_same_k(rng, shape, axis):
    w = ranged_weight(rng, shape, axis)
    codes, scales = cluster_scaled(w, 8, axis=axis)
    assert np.unique(codes).size <= 8 and scales.size == shape[axis]
    np.testing.assert_array_equal(scales, scales.astype(np.float16).astype(np.float32))  # stored as float16
    scaled = expand_scaled(codes, scales, axis)
    moved = np.moveaxis(codes, axis, 0).reshape(shape[axis], -1)
    np.testing.assert_array_equal(np.moveaxis(scaled, axis, 0).reshape(shape[axis], -1),
                                  (moved * scales[:, None]).astype(np.float32))
    shared, _ = cluster_tensor(w, 8, axis=None)

    def channel_error(v):
        rows = np.moveaxis(v.astype(np.float64) - w, axis, 0).reshape(shape[axis], -1)
        return np.mean(np.linalg.norm(rows, axis=1) / np.linalg.norm(np.moveaxis(w, axis, 0).reshape(shape[axis], -1),
                                                                      axis=1))

    # Each channel's error relative to its own range: one codebook of raw values spends its entries on
    # the widest channels and leaves the narrow ones at one or two values.
    assert channel_error(scaled) < 0.5 * channel_error(shared), (channel_error(scaled), channel_error(shared))


def test_scales_of_zero_and_tiny_channels(rng):
    w = ranged_weight(rng, (4, 9), 0)
    w[1] = 0
    w[2] *= 1e-9  # below float16's smallest normal: a subnormal scale, never 0
    scales = channel_scales(w)
    assert scales[1] == 0 and scales[2] > 0
    codes, scales = cluster_scaled(w, 4)
    assert (expand_scaled(codes, scales)[1] == 0).all()


def test_scale_refit_recovers_each_channel_gain(rng):
    codes, true_scales = cluster_scaled(ranged_weight(rng, (12, 40), 0), 8)
    w0 = expand_scaled(codes, true_scales)
    x0 = rng.normal(size=(200, 1, 40)).astype(np.float32)
    start = (true_scales * np.linspace(0.5, 1.5, 12)).astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(solve_scales(x0, x0, w0, codes, start), true_scales, rtol=1e-3)
    # With the scales right, the shared codebook's refit finds the codebook again.
    refit, before, after = solve_centroids(x0, x0, w0, codes + 0.05, False, scales=true_scales)
    np.testing.assert_allclose(refit, codes, atol=1e-5)
    assert after < 1e-8 < before


def test_cluster_pass_scaled_refits_and_lists_codebooks(rng):
    from tests.backends.standalone_models import small_convnet

    calibration = [rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(8)]
    compiled = edgetvm.compile(small_convnet(), "host", calibration=calibration,
                               compress={"clusters": 8, "keep": [], "scaled": True})
    layers = compiled.report.details["ClusterWeights"]["layers"]
    assert len(layers) == len(compiled.codebooks) == 4
    for layer, (codebook, scales) in zip(layers, compiled.codebooks):
        assert layer["scaled"] and len(layer["codebook"]) == codebook.size <= 8
        assert scales.size == layer["shape"][0 if len(layer["shape"]) == 4 else -1]
        assert layer["output_error_refit"] <= layer["output_error_kmeans"] + 1e-12, layer


@pytest.mark.parametrize("given, message", [
    ({"clusters": 8, "scaled": "yes"}, "give True"),
    ({"scaled": True}, "give clusters, layers or max_error too"),
    ({"scaled": True, "max_error": 0}, "give a positive relative output error"),
    ({"scaled": True, "max_error": "0.01"}, "give a positive relative output error"),
])
def test_bad_scaled_options_are_named(given, message):
    with pytest.raises(InputError, match=message):
        CompressOptions.coerce(given)


def test_scaled_options_with_max_error_parse():
    options = CompressOptions.coerce({"scaled": True, "max_error": 0.005, "clusters": 8})
    assert options.scaled and options.max_error == 0.005 and options.clustering
    found = options.cluster_pass(evaluate=lambda *a: None, samples=[1])
    assert found.scaled and found.max_error == 0.005 and found.clusters == 8


def two_branches(loud: np.ndarray, quiet: np.ndarray) -> onnx.ModelProto:
    """conv(x, loud) + conv(x, quiet): the quiet branch's weights 1000x smaller, so the output error it
    adds at any k is ~1e-6 of the loud branch's: the loud conv is the sensitive layer, by construction."""
    nodes = [helper.make_node("Conv", ["x", "loud"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "quiet"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a", "b"], ["y"])]
    graph = helper.make_graph(nodes, "two_branches",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8, 8, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16, 8, 8])],
                              [numpy_helper.from_array(loud, "loud"), numpy_helper.from_array(quiet, "quiet")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_scaled_codebooks_by_measured_sensitivity_give_the_sensitive_layer_more_clusters(rng):
    loud = ranged_weight(rng, (16, 8, 3, 3))
    quiet = (ranged_weight(rng, (16, 8, 3, 3)) * 1e-3).astype(np.float32)
    calibration = [rng.uniform(-1, 1, (1, 8, 8, 8)).astype(np.float32) for _ in range(4)]
    budget = 1e-3
    compiled = edgetvm.compile(two_branches(loud, quiet), "host", calibration=calibration,
                               compress={"max_error": budget, "scaled": True})
    report = compiled.report.details["ClusterWeights"]
    assert len(report["layers"]) == len(compiled.codebooks) == 2 and all(r["scaled"] for r in report["layers"])
    # Tell the layers apart by their scales (the quiet conv's are ~1000x smaller).
    by_loudness = {bool(np.abs(scales).max() > 0.1): row for row, (_, scales) in zip(report["layers"], compiled.codebooks)}
    sensitive, insensitive = by_loudness[True], by_loudness[False]
    assert insensitive["k"] == 4, report  # the smallest candidate: its error is negligible at any k
    assert sensitive["k"] > insensitive["k"], report
    assert sensitive["output_error"] > insensitive["output_error"]
    assert report["output_error"] <= budget
