"""The numpy calibration evaluator against onnxruntime, and the compiled-evaluator fallback."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgetvm.pruning.plan import PruningConfig
from edgetvm.pruning.rewrite import prune_function
from edgetvm.pruning.numpy_eval import FunctionStepper, NumpyEvaluator, unsupported_ops
from edgetvm.host import HostEvaluator, calibration_evaluator

from .nets import Net, import_named, run_onnx


def many_ops_net():
    net = Net(shape=(1, 3, 16, 16), seed=5)
    x = net.prelu(net.bn(net.conv("x", 3, 16, stride=2, name="stem"), 16), 16)
    d = net.op("Relu", [net.conv(x, 16, 32, groups=16, name="dw2")])  # depthwise, multiplier 2
    m = net.op("MaxPool", [d], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    a = net.op("AveragePool", [m], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0)
    sizes = net._init("sizes", np.array([8, 24], np.int64))
    net.nodes.append(onnx.helper.make_node("Split", [a, sizes], ["s0", "s1"], axis=1))
    s = net.op("Sigmoid", [net.op("GlobalAveragePool", ["s1"])])
    y = net.op("Concat", [net.op("Mul", ["s1", s]), "s0"], axis=1)
    flat = net.op("Flatten", [net.op("LeakyRelu", [y], alpha=0.1)], axis=1)
    return net.model([net.gemm(flat, 32 * 4 * 4, 10, name="fc")])


def test_numpy_evaluator_matches_onnxruntime():
    model = many_ops_net()
    func, weights = import_named(model)
    assert unsupported_ops(func) == []
    x = np.random.default_rng(0).normal(size=(1, 3, 16, 16)).astype(np.float32)
    got = NumpyEvaluator()(func, weights, [[x]])[0][0]
    np.testing.assert_allclose(got, run_onnx(model, x)[0], rtol=1e-4, atol=1e-4)
    stepper = FunctionStepper(func, weights, [[x], [x]])
    last = [b.var for block in func.body.blocks for b in block.bindings][-1]
    for out in stepper.run_until(last):
        np.testing.assert_allclose(out, got, rtol=1e-5, atol=1e-5)


def test_compiled_fallback_refits_like_the_numpy_stepper():
    net = Net(shape=(1, 3, 8, 8), seed=2)
    x = net.prelu(net.bn(net.conv("x", 3, 16, name="a"), 16), 16)
    y = net.op("Relu", [net.conv(x, 16, 16, k=1, name="b")])
    model = net.model([net.conv(y, 16, 4, k=1, name="c")])
    func, weights = import_named(model)
    rng = np.random.default_rng(1)
    calib = [[rng.normal(size=(1, 3, 8, 8)).astype(np.float32)] for _ in range(6)]
    config = PruningConfig(ratio=0.5)
    fast = prune_function(func, config, weights=weights, evaluate=calibration_evaluator(), calibration=calib)
    slow = prune_function(func, config, weights=weights, evaluate=HostEvaluator(), calibration=calib)
    assert set(fast.recovery.refit) == set(slow.recovery.refit) == {c.out for c in fast.plan.consumers_changed()}
    for name in ("w_b", "w_c"):
        np.testing.assert_allclose(fast.weights[name], slow.weights[name], rtol=1e-3, atol=1e-3)


def resize_net(mode: str, nearest: str, size: int):
    """conv -> nearest Resize to size x size -> conv (RetinaFace's FPN upsamples 10 -> 20 -> 40 so)."""
    net = Net(shape=(1, 3, 10, 10), seed=3)
    x = net.conv("x", 3, 8, name="a")
    roi = net._init("roi", np.zeros(0, np.float32))
    scales = net._init("scales", np.zeros(0, np.float32))
    sizes = net._init("sizes", np.array([1, 8, size, size], np.int64))
    net.nodes.append(onnx.helper.make_node("Resize", [x, roi, scales, sizes], ["up"], mode="nearest",
                                           coordinate_transformation_mode=mode, nearest_mode=nearest))
    return net.model([net.conv("up", 8, 4, k=1, name="b")])


@pytest.mark.parametrize("mode, nearest, size", [("asymmetric", "floor", 20), ("asymmetric", "floor", 13),
                                                 ("half_pixel", "round_prefer_floor", 16),
                                                 ("half_pixel", "round_prefer_ceil", 7), ("asymmetric", "ceil", 15)])
def test_numpy_evaluator_runs_nearest_resize_like_onnxruntime(mode, nearest, size):
    # RetinaFace had no numpy stepper for its FPN's resize, so the centroid refit ran each layer on the
    # original model's input instead of the clustered one's (compression/refit.py).
    model = resize_net(mode, nearest, size)
    func, weights = import_named(model)
    assert unsupported_ops(func) == []
    x = np.random.default_rng(0).normal(size=(1, 3, 10, 10)).astype(np.float32)
    got = NumpyEvaluator()(func, weights, [[x]])[0][0]
    np.testing.assert_allclose(got, run_onnx(model, x)[0], rtol=1e-5, atol=1e-5)
