"""ClusterWeights: Before/Expected modules, where it must not fire, and the numbers it reports."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import edgetvm
from edgetvm.compression import ClusterWeights, cluster_tensor
from edgetvm.compression.constants import weight_constants
from edgetvm.errors import InputError


def three_layers(w1, w2, w3, bias) -> tvm.IRModule:
    """conv (stem) -> relu -> conv + bias -> flatten -> matmul (head)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(x, relax.const(w1), padding=1)))
            y = bb.emit(relax.op.add(relax.op.nn.conv2d(y, relax.const(w2), padding=1), relax.const(bias)))
            y = bb.emit(relax.op.matmul(relax.op.reshape(y, (1, -1)), relax.const(w3)))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


@pytest.fixture
def weights(rng):
    return (rng.normal(size=(16, 3, 3, 3)).astype(np.float32), rng.normal(size=(32, 16, 3, 3)).astype(np.float32),
            rng.normal(size=(32 * 64, 10)).astype(np.float32) * 0.1, rng.normal(size=(1, 32, 1, 1)).astype(np.float32))


def test_before_expected_middle_layer_clustered_per_channel(weights):
    w1, w2, w3, bias = weights
    before = three_layers(*weights)
    after = ClusterWeights(8)(before)
    expected_w2, per_channel = cluster_tensor(w2, 8)
    assert per_channel  # 144 weights per output channel >= 16 * 8
    tvm.ir.assert_structural_equal(after, three_layers(w1, expected_w2, w3, bias), map_free_vars=True)
    # Lloyd's fixed point, per output channel: every shared value is the mean of the weights it replaced.
    for row, shared in zip(w2.reshape(32, -1), expected_w2.reshape(32, -1)):
        assert np.unique(shared).size <= 8
        for value in np.unique(shared):
            np.testing.assert_allclose(row[shared == value].astype(np.float64).mean(), value, rtol=1e-5)
    before_values = [c.value.numpy() for _, c in weight_constants(before["main"])]
    np.testing.assert_array_equal(before_values[1], w2)  # the caller's module is left as it was


def test_findings_report_k_error_and_sizes(weights):
    p = ClusterWeights(16, keep=[])
    p(three_layers(*weights))
    layers = {tuple(layer["shape"]): layer for layer in p.findings["layers"]}
    assert set(layers) == {(16, 3, 3, 3), (32, 16, 3, 3), (2048, 10)}  # the bias (a vector) is no weight
    w2 = weights[1]
    clustered, _ = cluster_tensor(w2, 16)
    row = layers[(32, 16, 3, 3)]
    assert row["k"] == 16 and row["bytes"] == w2.nbytes
    assert row["relative_error"] == pytest.approx(np.linalg.norm(clustered.astype(np.float64) - w2)
                                                  / np.linalg.norm(w2.astype(np.float64)))
    # 144 weights an output channel < 16 * 16: one table of 16 float32 centroids, 4-bit indices.
    assert not row["per_channel"] and row["clustered_bytes"] == 16 * 4 + w2.size // 2
    assert row["coded_bytes"] <= row["clustered_bytes"]
    # The dense head [2048, 10]: a codebook per output column (2048 >= 16 * 16), 10 tables of 16.
    head = layers[(2048, 10)]
    assert head["per_channel"] and head["clustered_bytes"] == 10 * 16 * 4 + 2048 * 10 // 2
    w3 = weights[2]
    after = {name: const.value.numpy() for name, const in weight_constants(p(three_layers(*weights))["main"])}
    clustered_head = next(v for v in after.values() if v.shape == (2048, 10))
    np.testing.assert_array_equal(clustered_head, cluster_tensor(w3, 16, axis=-1)[0])
    assert all(np.unique(column).size <= 16 for column in clustered_head.T)


def test_does_not_fire_where_it_must_not(weights):
    w1, w2, w3, bias = weights
    only_head = ClusterWeights(16, layers={"nothing*": 4})
    mod = three_layers(*weights)
    assert only_head(mod).same_as(mod)
    assert only_head.findings["clustered"] == 0
    few = ClusterWeights(16, keep=[])  # at most k distinct values already: unchanged values
    integers = [np.round(w * 2).astype(np.float32) for w in (w1, w2)]
    out = few(three_layers(*integers, np.round(w3 * 4), bias))
    for (_, const), want in zip(weight_constants(out["main"]), integers):
        np.testing.assert_array_equal(const.value.numpy(), want)
    with pytest.raises(InputError, match="--cluster 2: give a number of clusters from 4 to 256"):
        ClusterWeights(2)


def test_int8_path_gets_int8_centroids(rng):
    from tests.backends.standalone_models import small_convnet

    calibration = [rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(4)]
    compiled = edgetvm.compile(small_convnet(), "host", quantize="int8", calibration=calibration,
                               compress={"clusters": 4, "keep": []})
    layers = compiled.report.details["ClusterWeights"]["layers"]
    assert layers
    int8_layers = [layer for layer in layers if layer["bytes"] == np.prod(layer["shape"])]
    assert int8_layers, layers  # one byte per weight: the int8 weights were clustered
    assert all(layer["relative_error"] < 0.5 for layer in layers)


def test_sensitivity_picks_fewer_bytes_within_the_error_budget(rng):
    from tests.backends.standalone_models import small_convnet

    calibration = [rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(4)]
    reference = edgetvm.compile(small_convnet(), "host")
    found = {}
    for budget in (1e-4, 2e-2):
        compiled = edgetvm.compile(small_convnet(), "host", calibration=calibration,
                                   compress={"max_error": budget})
        report = compiled.report.details["ClusterWeights"]
        assert report["output_error"] <= budget
        # The summed single-layer errors predict the joint error (pruning's assumption), within 3x here.
        joint = sum(float(((np.asarray(a, np.float64) - b) ** 2).sum()) for x in calibration
                    for a, b in zip(compiled(x), reference(x)))
        scale = sum(float((np.asarray(b, np.float64) ** 2).sum()) for x in calibration for b in reference(x))
        assert joint / scale <= 3 * budget + 1e-9
        found[budget] = compiled.report.details["compression"]["bytes"]["coded"]
    assert found[2e-2] < found[1e-4]
