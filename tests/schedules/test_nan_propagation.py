"""A NaN input stays NaN through relu, clip (ReLU6) and max/min by a constant, as in onnxruntime.

TVM lowers ``max(x, 0)`` to ``select(x > 0, x, 0)``, which maps NaN to 0: before the NaN-keeping
legalizations (schedules/nan_propagation.py) an all-NaN image gave finite outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgetvm
from edgetvm import emulate


def activations_model(hw: int = 16) -> onnx.ModelProto:
    """conv + Relu -> depthwise conv + Clip(0, 6) -> conv: the NaN-dropping lowerings (Clip becomes
    max/min by constants in LayoutFriendlyActivations), fused into conv epilogues."""
    rng = np.random.default_rng(3)

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.4).astype(np.float32), name)

    inits = [weight("w1", 8, 3, 3, 3), weight("b1", 8), weight("w2", 8, 1, 3, 3), weight("b2", 8),
             weight("w3", 4, 8, 1, 1), numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "activations", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, hw, hw])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def inputs() -> dict[str, np.ndarray]:
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    one_pixel = x.copy()
    one_pixel[0, 1, 5, 7] = np.nan  # NaN spreads to that pixel's neighbourhood, the rest stays finite
    return {"all-nan": np.full_like(x, np.nan), "one-nan-pixel": one_pixel, "finite": x}


def reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def assert_like_onnxruntime(got: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = ~np.isnan(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-4, atol=1e-4)


def test_nan_propagates_on_host():
    model = activations_model()
    compiled = edgetvm.compile(model, "host")
    for name, x in inputs().items():
        assert_like_onnxruntime(np.asarray(compiled(x)), reference(model, x)), name
    assert np.isnan(reference(model, inputs()["all-nan"])).all()


def test_nan_propagates_through_relu_alone():
    # Relu on its own legalizes to a kernel of its own (no conv to fuse into).
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = np.array([[np.nan, -1, 0, 1, -np.inf], [np.inf, np.nan, -0.0, 2.5, -3]], np.float32)
    assert_like_onnxruntime(np.asarray(edgetvm.compile(model, "host")(x)), reference(model, x))


def test_integer_clip_keeps_tvm_legalization():
    graph = helper.make_graph([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], "int_clip",
                              [helper.make_tensor_value_info("x", TensorProto.INT32, [6])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [6])],
                              [numpy_helper.from_array(np.array(-2, np.int32), "lo"),
                               numpy_helper.from_array(np.array(3, np.int32), "hi")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = np.array([-9, -2, 0, 2, 3, 100], np.int32)
    np.testing.assert_array_equal(np.asarray(edgetvm.compile(model, "host")(x)), np.clip(x, -2, 3))


@pytest.mark.arm
def test_nan_propagates_on_arm_under_qemu(tmp_path):
    model = activations_model()
    compiled = edgetvm.compile(model, "cortex-a7")
    so = tmp_path / "activations_arm.so"
    compiled.export(so, standalone=True)
    cases = inputs()
    results = emulate.run_standalone_arm(so, [cases["all-nan"]], cpu=compiled.target.qemu_cpu)
    assert_like_onnxruntime(results.outputs[0], reference(model, cases["all-nan"]))
    results = emulate.run_standalone_arm(so, [cases["one-nan-pixel"]], cpu=compiled.target.qemu_cpu)
    assert_like_onnxruntime(results.outputs[0], reference(model, cases["one-nan-pixel"]))
