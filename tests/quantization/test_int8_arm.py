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
