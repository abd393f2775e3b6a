"""The int8 kernels on ARMv7 (standalone build under qemu) compute what they compute on the host."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import edgetvm

from .models import small_cnn


@pytest.mark.arm
def test_int8_standalone_on_cortex_a7_matches_host(tmp_path):
    from edgetvm import emulate

    rng = np.random.default_rng(1)
    calibration = [rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(8)]
    x = rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    model = small_cnn()
    arm = edgetvm.compile(model, "cortex-a7", quantize="int8", calibration=calibration, num_threads=1)
    so = arm.export(tmp_path / "small_int8.so", standalone=True)
    host = edgetvm.compile(model, quantize="int8", calibration=calibration)
    got = emulate.run_standalone_arm(so, [x], cpu="cortex-a7").outputs[0]
    # Integer kernels are exact on both; only the float tail (average pool, weight-only Gemm) may
    # round differently.
    np.testing.assert_allclose(got, host(x), rtol=1e-5, atol=1e-6)
    # The kernels run on NEON: int8 x int8 -> int16 multiplies (vmull.s8, the pair's vmlal.s8), widened
    # into int32 accumulators (vpadal.s16, vaddw.s16), the fixed-point requantize (vqrdmulh.s32).
    disassembly = subprocess.run(["arm-linux-gnueabihf-objdump", "-d", str(so)], capture_output=True, text=True,
                                 check=True).stdout
    for instruction in ("vmull.s8", "vmlal.s8", "vpadal.s16", "vaddw.s16", "vqrdmulh.s32"):
        assert instruction in disassembly, instruction


def _embedding_layer(features: int = 256, units: int = 32):
    """SFace's last layer in small: a Gemm whose int8 build keeps a float input (weight-only int8)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.normal(0, 0.1, (units, features)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.1, units).astype(np.float32), "b")]
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "embedding",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, features])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, units])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.arm
def test_weight_only_dense_widens_16_weights_at_a_time_and_matches_host(tmp_path):
    # SFace's 50176 x 128 layer: 4-lane vectors loaded and widened one by one cost 20.9 M a7 cycles, 16-lane
    # vectors (one 16-byte load, widened in registers) 16.3 M (benchmarks/bench_arm.py --per-kernel).
    from edgetvm import emulate

    rng = np.random.default_rng(1)
    calibration = [rng.uniform(-1, 1, (1, 256)).astype(np.float32) for _ in range(4)]
    arm = edgetvm.compile(_embedding_layer(), "cortex-a7", quantize="int8", calibration=calibration, num_threads=1)
    rule = arm.report.details["schedules"]["kernels"]["int8_weight_dense"]
    assert rule.startswith("register-tiled:dense (tile 1x1x16"), rule
    x = rng.uniform(-1, 1, (1, 256)).astype(np.float32)
    so = arm.export(tmp_path / "dense.so", standalone=True)
    got = emulate.run_standalone_arm(so, [x], cpu="cortex-a7").outputs[0]
    host = edgetvm.compile(_embedding_layer(), quantize="int8", calibration=calibration)(x)
    np.testing.assert_array_equal(got.view(np.uint32), np.asarray(host, np.float32).view(np.uint32))
