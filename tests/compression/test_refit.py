"""The centroid refit: the normal equations against numpy's lstsq on the dense problem, never worse
than k-means on the calibration inputs, and in ClusterWeights on a small convnet."""

from __future__ import annotations

import numpy as np
import pytest

import edgetvm
from edgetvm.compression import cluster_tensor, solve_centroids


def dense_refit(x, x0, w0, clustered, per_output):
    """The refit as one dense least-squares problem: unknowns every (codebook, centroid), one equation
    per (sample, output); column u of the design matrix is the layer's output with the weights of
    centroid u set to 1 and all others to 0."""
    n, groups, depth = x.shape
    outputs = w0.shape[0]
    group = np.arange(outputs) // (outputs // groups)
    books = [np.unique(row) for row in (clustered if per_output else clustered.reshape(1, -1))]
    columns, owners = [], []
    for b, centroids in enumerate(books):
        for value in centroids:
            mask = (clustered == value) & ((np.arange(outputs) == b)[:, None] if per_output else True)
            columns.append(np.einsum("noi,oi->no", x[:, group], mask.astype(np.float64)).ravel())
            owners.append((b, value))
    design = np.stack(columns, axis=1)
    target = np.einsum("noi,oi->no", x0[:, group].astype(np.float64), w0.astype(np.float64)).ravel()
    solution = np.linalg.lstsq(design, target, rcond=None)[0]
    refit = np.zeros(clustered.shape)
    for (b, value), c in zip(owners, solution):
        rows = slice(b, b + 1) if per_output else slice(None)
        refit[rows] = np.where(clustered[rows] == value, c, refit[rows])

    def error(w):
        return float(((np.einsum("noi,oi->no", x[:, group], w).ravel() - target) ** 2).sum() / (target ** 2).sum())

    return refit, error(clustered.astype(np.float64)), error(refit)


@pytest.mark.parametrize("groups, per_output", [(1, False), (1, True), (4, False)],
                         ids=["shared-codebook", "codebook-per-output", "grouped-conv"])
def test_normal_equations_match_dense_lstsq_and_never_lose_to_kmeans(rng, groups, per_output):
    outputs, depth, rows = 8, 72 if per_output else 9, 300
    w0 = rng.normal(size=(outputs, depth)).astype(np.float32)
    x0 = rng.normal(size=(rows, groups, depth)).astype(np.float32)
    # The clustered model's input: the original plus what the layers before it got wrong.
    x = (x0 + 0.1 * rng.normal(size=x0.shape)).astype(np.float32)
    clustered, sliced = cluster_tensor(w0, 4)
    assert sliced == per_output
    refit, before, after = solve_centroids(x, x0, w0, clustered, per_output)
    want, want_before, want_after = dense_refit(x, x0, w0, clustered, per_output)
    np.testing.assert_allclose(refit, want, rtol=1e-5, atol=1e-6)
    assert before == pytest.approx(want_before, rel=1e-9) and after == pytest.approx(want_after, rel=1e-4)
    assert after < before
    # Still at most k values per codebook, at the same positions as k-means put them.
    for row_refit, row_kmeans in zip(*(w.reshape(outputs if per_output else 1, -1) for w in (refit, clustered))):
        assert np.unique(row_refit).size <= 4
        _, labels_refit = np.unique(row_refit, return_inverse=True)
        _, labels_kmeans = np.unique(row_kmeans, return_inverse=True)
        assert len(set(zip(labels_refit, labels_kmeans))) == np.unique(row_kmeans).size


def test_refit_with_no_error_to_fix_keeps_kmeans(rng):
    # The weights take 4 values already: k-means is exact, the refit has nothing to change.
    w0 = rng.choice([-1.0, -0.25, 0.5, 2.0], size=(6, 20)).astype(np.float32)
    x0 = rng.normal(size=(50, 1, 20)).astype(np.float32)
    refit, before, after = solve_centroids(x0, x0, w0, w0, False)
    np.testing.assert_allclose(refit, w0, atol=1e-6)
    assert before == 0.0 and after == pytest.approx(0.0, abs=1e-12)


def test_cluster_pass_refits_on_calibration_inputs(rng):
    from tests.backends.standalone_models import small_convnet

    calibration = [rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(8)]
    held_out = [rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(8)]
    reference = edgetvm.compile(small_convnet(), "host")
    compiled = {refit: edgetvm.compile(small_convnet(), "host", calibration=calibration,
                                       compress={"clusters": 4, "keep": [], "refit": refit})
                for refit in (False, True)}
    layers = compiled[True].report.details["ClusterWeights"]["layers"]
    assert len(layers) == 4 and all("refit_declined" not in layer for layer in layers), layers
    for layer in layers:
        assert layer["output_error_refit"] <= layer["output_error_kmeans"] + 1e-12, layer
    plain = compiled[False].report.details["ClusterWeights"]["layers"]
    assert not any("output_error_refit" in layer for layer in plain)

    def error(model, inputs):
        got = [np.asarray(model(x)[0], np.float64) for x in inputs]
        want = [np.asarray(reference(x)[0], np.float64) for x in inputs]
        return sum(((g - w) ** 2).sum() for g, w in zip(got, want)) / sum((w ** 2).sum() for w in want)

    assert error(compiled[True], calibration) < error(compiled[False], calibration)
    assert error(compiled[True], held_out) < error(compiled[False], held_out)


def branching_convnet(rng) -> "onnx.ModelProto":
    """conv/2 -> two convs reading its output (1x1 and 3x3, as RetinaFace's SSH branches) -> add -> conv/2."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w1"], ["r1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Conv", ["r1", "wa"], ["a"]),
             helper.make_node("Conv", ["r1", "wb"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a", "b"], ["c"]),
             helper.make_node("Conv", ["c", "w2"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])]
    graph = helper.make_graph(nodes, "branching", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
                              initializer=[weight("w1", 8, 3, 3, 3), weight("wa", 8, 8, 1, 1),
                                           weight("wb", 8, 8, 3, 3), weight("w2", 4, 8, 3, 3)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_refit_of_layers_sharing_an_input(rng):
    # Two layers reading one tensor once offset every later layer's recorded input by one (RetinaFace:
    # "index 23330 is out of bounds for axis 1 with size 400").
    model = branching_convnet(rng)
    calibration = [rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(4)]
    compiled = edgetvm.compile(model, "host", calibration=calibration, compress={"clusters": 4, "keep": []})
    layers = compiled.report.details["ClusterWeights"]["layers"]
    assert len(layers) == 4 and all("refit_declined" not in layer for layer in layers), layers
    for layer in layers:
        assert layer["output_error_refit"] <= layer["output_error_kmeans"] + 1e-12, layer
