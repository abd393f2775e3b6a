"""CrossLayerEqualization: conv -> act -> conv pairs rescaled per channel, exact in float; what it
buys per-tensor int8 activations on a model whose channels differ by orders of magnitude."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm.script import ir as I
from tvm.script import relax as R

import edgetvm
from edgetvm.quantization.cross_layer_equalization import (MAX_BOOST, CrossLayerEqualization, equalization_scales,
                                                     plan_equalization)

from tests.transform.relax_numerics import bind, run_relax


@I.ir_module
class ConvPReLUDepthwise:
    @R.function
    def main(x: R.Tensor((1, 4, 8, 8), "float32"), w1: R.Tensor((4, 4, 1, 1), "float32"),
             b1: R.Tensor((1, 4, 1, 1), "float32"), slope: R.Tensor((4,), "float32"),
             w2: R.Tensor((4, 1, 3, 3), "float32")):
        with R.dataflow():
            c1 = R.nn.conv2d(x, w1)
            a1 = R.add(c1, b1)
            p1 = R.nn.prelu(a1, slope, axis=1)
            y = R.nn.conv2d(p1, w2, padding=[1, 1, 1, 1], groups=4)
            R.output(y)
        return y


@I.ir_module
class ConvReLUConv:
    @R.function
    def main(x: R.Tensor((1, 4, 8, 8), "float32"), w1: R.Tensor((4, 4, 1, 1), "float32"),
             w2: R.Tensor((6, 4, 1, 1), "float32")):
        with R.dataflow():
            c1 = R.nn.conv2d(x, w1)
            r1 = R.nn.relu(c1)
            y = R.nn.conv2d(r1, w2)
            R.output(y)
        return y


@I.ir_module
class ConvReLU6Conv:
    """Clip (ReLU6) is not positively homogeneous: ``min(v / s, 6) != min(v, 6) / s``."""

    @R.function
    def main(x: R.Tensor((1, 4, 8, 8), "float32"), w1: R.Tensor((4, 4, 1, 1), "float32"),
             w2: R.Tensor((6, 4, 1, 1), "float32")):
        with R.dataflow():
            c1 = R.nn.conv2d(x, w1)
            r1 = R.clip(c1, R.prim_value(0.0), R.prim_value(6.0))
            y = R.nn.conv2d(r1, w2)
            R.output(y)
        return y


@I.ir_module
class TwoReaders:
    """The conv output also leaves the function: rescaling it would change a model output."""

    @R.function
    def main(x: R.Tensor((1, 4, 8, 8), "float32"), w1: R.Tensor((4, 4, 1, 1), "float32"),
             w2: R.Tensor((6, 4, 1, 1), "float32")):
        with R.dataflow():
            c1 = R.nn.conv2d(x, w1)
            r1 = R.nn.relu(c1)
            y = R.nn.conv2d(r1, w2)
            R.output(r1, y)
        return (r1, y)


def _weights(rng, depthwise: bool):
    # Output channels of w1 a decade apart: the spread equalization removes.
    spread = np.array([1.0, 0.1, 0.01, 3.0], np.float32).reshape(4, 1, 1, 1)
    w1 = (rng.normal(0, 1, (4, 4, 1, 1)) * spread).astype(np.float32)
    if depthwise:
        return {"w1": w1, "b1": (rng.normal(0, 0.1, (1, 4, 1, 1)) * spread.reshape(1, 4, 1, 1)).astype(np.float32),
                "slope": rng.uniform(0.05, 0.3, 4).astype(np.float32),
                "w2": rng.normal(0, 1, (4, 1, 3, 3)).astype(np.float32)}
    return {"w1": w1, "w2": rng.normal(0, 1, (6, 4, 1, 1)).astype(np.float32)}


def test_depthwise_pair_is_rescaled_to_equal_channel_ranges(rng):
    weights = _weights(rng, depthwise=True)
    before = bind(ConvPReLUDepthwise, **weights)
    plan = plan_equalization(before["main"])
    assert len(plan.pairs) == 1 and plan.pairs[0].depthwise
    lo = np.array([-0.5, -0.05, -0.001, -2.0])
    hi = np.array([4.0, 0.3, 0.02, 9.0])
    rescale = CrossLayerEqualization(plan, {plan.pairs[0].tensor: (lo, hi)})
    after = rescale(before)
    rows = rescale.findings["equalized"]

    # Depthwise reader: s_c = span_c / max span, every channel then spans the widest one's range,
    # except channel 2 (0.2 % of the widest), lifted by at most MAX_BOOST.
    s = np.clip((hi - lo) / (hi - lo).max(), 1 / MAX_BOOST, 1.0)
    assert s[2] == 1 / MAX_BOOST
    expected = bind(ConvPReLUDepthwise, w1=(weights["w1"].astype(np.float64) / s.reshape(4, 1, 1, 1)).astype(np.float32),
                    b1=(weights["b1"].astype(np.float64) / s.reshape(1, 4, 1, 1)).astype(np.float32),
                    slope=weights["slope"],
                    w2=(weights["w2"].astype(np.float64) * s.reshape(4, 1, 1, 1)).astype(np.float32))
    tvm.ir.assert_structural_equal(after, expected)
    assert rows[0]["narrowest_channel_after"] == pytest.approx(0.021 * MAX_BOOST / 11.0)
    assert rows[0]["narrowest_channel_before"] == pytest.approx((0.021) / 11.0)

    x = rng.normal(0, 1, (1, 4, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run_relax(after, x), run_relax(before, x), rtol=1e-5, atol=1e-5)


def test_dense_pair_balances_activation_and_weight_ranges(rng):
    weights = _weights(rng, depthwise=False)
    before = bind(ConvReLUConv, **weights)
    plan = plan_equalization(before["main"])
    assert len(plan.pairs) == 1 and not plan.pairs[0].depthwise
    lo, hi = np.zeros(4), np.array([2.0, 0.2, 1e-5, 6.0])
    scales = equalization_scales(plan.pairs[0], lo, hi, weights["w2"])
    w = np.abs(weights["w2"][:, :, 0, 0].astype(np.float64))
    relative = (w / w.max(axis=1, keepdims=True)).max(axis=0)
    raw = np.sqrt(hi / relative)
    # Nagel's balance, relative to the widest; the dead-ish channel 3 is lifted at most MAX_BOOST.
    np.testing.assert_allclose(scales, np.clip(raw / raw.max(), 1 / MAX_BOOST, 1.0), rtol=1e-12)
    assert scales[2] == pytest.approx(1 / MAX_BOOST)

    rescale = CrossLayerEqualization(plan, {plan.pairs[0].tensor: (lo, hi)})
    x = rng.normal(0, 1, (1, 4, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run_relax(rescale(before), x), run_relax(before, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("module, reason", [(ConvReLU6Conv, "homogeneous"), (TwoReaders, "model output")])
def test_pairs_it_must_not_rescale(rng, module, reason):
    plan = plan_equalization(bind(module, **_weights(rng, depthwise=False))["main"])
    assert plan.pairs == []
    # The first conv is the candidate, named by its first binding (c1, what a model node is bound
    # as); the last conv's output is the model output, always declined.
    assert plan.declined[0].startswith("c1: ") and reason in plan.declined[0], plan.declined
    assert plan.declined[-1].startswith("y: ") and "model output" in plan.declined[-1], plan.declined


def _uneven_channels(seed: int = 0) -> onnx.ModelProto:
    """conv3x3 (8 channels, output scales 1e-2..1) + PReLU -> depthwise3x3 + ReLU -> 1x1 conv:
    SFace's conv/depthwise/pointwise rhythm with the channel spread made extreme. The first conv
    reads 16 channels: a 3-channel (image) conv would stay float by default."""
    rng = np.random.default_rng(seed)
    spread = np.logspace(-2, 0, 8).astype(np.float32)
    rng.shuffle(spread)

    def init(name, arr):
        return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)

    inits = [init("w1", rng.normal(0, 0.15, (8, 16, 3, 3)) * spread.reshape(8, 1, 1, 1)),
             init("b1", rng.normal(0, 0.05, 8) * spread), init("slope", rng.uniform(0.05, 0.3, (8, 1, 1))),
             init("w2", rng.normal(0, 0.3, (8, 1, 3, 3))), init("b2", rng.normal(0, 0.05, 8)),
             # The reader undoes the spread, as a trained network's next layer does: narrow channels
             # matter as much as wide ones in the output.
             init("w3", rng.normal(0, 0.3, (8, 8, 1, 1)) / spread.reshape(1, 8, 1, 1)),
             init("b3", rng.normal(0, 0.05, 8))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["c1", "slope"], ["p1"]),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=8),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["y"])]
    graph = helper.make_graph(nodes, "uneven_channels",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_equalization_recovers_narrow_channels_in_int8():
    model = _uneven_channels()
    rng = np.random.default_rng(1)
    calibration = [rng.uniform(-1, 1, (1, 16, 16, 16)).astype(np.float32) for _ in range(6)]
    tests = [rng.uniform(-1, 1, (1, 16, 16, 16)).astype(np.float32) for _ in range(3)]
    session = ort.InferenceSession(model.SerializeToString())
    equalized = edgetvm.compile(model, quantize="int8", calibration=calibration)
    plain = edgetvm.compile(model, quantize="int8", calibration=calibration, quantize_options={"equalize": False})
    report = equalized.report.details["quantize"]["cross_layer_equalization"]
    assert report["pairs"] == 2 and report["depthwise_pairs"] == 1, report
    assert report["narrowest_channel_after"] > 3 * report["narrowest_channel_before"], report
    assert plain.report.details["quantize"]["cross_layer_equalization"]["pairs"] == 0
    # Both still run every conv as an int8 kernel: equalization changes scales, not the graph.
    assert equalized.report.details["quantize"]["int8_kernels"] == plain.report.details["quantize"]["int8_kernels"]
    for x in tests:
        ref = session.run(None, {"x": x})[0]
        err_eq, err_plain = 1 - _cosine(equalized(x), ref), 1 - _cosine(plain(x), ref)
        assert err_eq < err_plain / 3, (err_eq, err_plain)
        assert err_eq < 1e-4
