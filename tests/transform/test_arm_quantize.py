"""ARMv7's quantize: TVM's rounding (half to even) without a libm call, bit for bit."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import tvm
from tvm import te

from edgetvm.transform.arm_quantize import ROUNDING_RANGE, round_half_to_even

TRICKY = np.array([0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999997, -0.49999997, 1.4999999, 126.5,
                   -128.5, 4194303.5, -4194303.5, 4194302.5, -4194304.0, 1e-40, -1e-40, 0.7, -0.7],
                  dtype=np.float32)


def _reference(x: np.ndarray) -> np.ndarray:
    """numpy's round half to even."""
    return np.rint(x)


def test_rounding_matches_round_half_to_even_on_host():
    rng = np.random.default_rng(0)
    x = np.concatenate([TRICKY, (rng.standard_normal(4000) * 300).astype(np.float32),
                        (rng.integers(-600, 600, 1000) / 2).astype(np.float32)])
    data = te.placeholder((x.size,), "float32", name="x")
    assert -ROUNDING_RANGE <= x.min() and x.max() < ROUNDING_RANGE
    out = te.compute(data.shape, lambda i: round_half_to_even(data[i]), name="rounded")
    func = tvm.tirx.build(te.create_prim_func([data, out]), target="llvm")
    got = tvm.runtime.tensor(np.zeros(x.shape, np.int32))
    func(tvm.runtime.tensor(x), got)
    np.testing.assert_array_equal(got.numpy(), _reference(x).astype(np.int32))


@pytest.mark.arm
def test_arm_quantize_kernel_calls_no_roundf(tmp_path):
    import edgetvm
    from onnx import TensorProto, helper, numpy_helper

    # float input -> QuantizeLinear -> DequantizeLinear: the quantize kernel alone.
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])],
        [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(3, np.int8), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    arm = edgetvm.compile(model, "armv7-neon", num_threads=1)
    path = arm.export(tmp_path / "q.so")
    text = subprocess.run([shutil.which("arm-linux-gnueabihf-objdump"), "-d", str(path)], capture_output=True,
                          text=True, check=True).stdout
    assert not re.search(r"<(?:round|nearbyint|rint)f?@plt>", text)
    x = (np.random.default_rng(1).standard_normal((1, 8, 4, 4)) * 4).astype(np.float32)
    x.flat[:4] = [0.025, -0.025, 0.075, -0.125]  # ties at the scale 0.05
    x.flat[4:10] = [1e10, -1e10, 3e38, -np.inf, np.inf, 6.375]  # clamped, whatever their size
    host = edgetvm.compile(model, "host", num_threads=1)
    standalone = arm.export(tmp_path / "q_standalone.so", standalone=True)
    emulated = edgetvm.load(standalone, emulate=True)
    np.testing.assert_array_equal(np.asarray(emulated(x)), np.asarray(host(x)))


@pytest.mark.arm
def test_arm_quantize_by_a_constant_scale_divides_by_none_and_rounds_as_the_division(tmp_path):
    """A constant scale: the reciprocal and Markstein's correction, no ``vdiv``, the same integers as
    ``rint(x / s)`` even for inputs at and next to every tie."""
    import edgetvm
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    channels, size = 8, 64 * 64
    # Scales of all sorts of mantissas (the correction's hard cases are not one family), one per channel.
    scales = np.exp(rng.uniform(np.log(1e-4), np.log(10.0), channels)).astype(np.float32)
    scales[0] = np.float32(0.019628942012786865)  # MobileFaceNet's stem output
    zeros = rng.integers(-60, 60, channels).astype(np.int8)
    x = np.empty((1, channels, size), np.float32)
    for c, s in enumerate(scales):
        ties = ((rng.integers(-140, 140, size // 4) + 0.5) * np.float64(s)).astype(np.float32)
        x[0, c] = np.concatenate([ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf)),
                                  (rng.standard_normal(size // 4) * 60 * s).astype(np.float32)])
    x = x.reshape(1, channels, 64, 64)
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)],
        "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
        [numpy_helper.from_array(scales, "s"), numpy_helper.from_array(zeros, "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    arm = edgetvm.compile(model, "cortex-a7", num_threads=1)
    standalone = arm.export(tmp_path / "q_standalone.so", standalone=True)
    text = subprocess.run([shutil.which("arm-linux-gnueabihf-objdump"), "-d", str(standalone)], capture_output=True,
                          text=True, check=True).stdout
    assert "vdiv.f32" not in text and "vfms.f32" in text
    per_channel = (1, channels, 1, 1)
    # numpy divides float32 by float32 correctly rounded, as TVM's x / s does on the host.
    q = np.clip(np.rint(x / scales.reshape(per_channel)) + zeros.reshape(per_channel), -128, 127)
    expected = ((q - zeros.reshape(per_channel)) * scales.reshape(per_channel)).astype(np.float32)
    got = np.asarray(edgetvm.load(standalone, emulate=True)(x))
    np.testing.assert_array_equal(got, expected)
