"""``compile(..., optimize="size")``: a smaller standalone .so computing the same outputs, on the host
and under qemu-arm (backends/standalone/build.py)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import edgetvm
from edgetvm import emulate
from edgetvm.backends.neon_microkernels import microkernel_definition, with_microkernels
from edgetvm.backends.standalone import build_standalone
from edgetvm.errors import ArtifactError, InputError

from .standalone_models import small_convnet


def text_bytes(so, tool: str) -> int:
    """The .text section of ``so`` (the kernels' code: the weights live in .rodata)."""
    listing = subprocess.run([tool, "-A", str(so)], capture_output=True, text=True, check=True).stdout
    return next(int(line.split()[1]) for line in listing.splitlines() if line.startswith(".text "))


def numpy_reference(model, x: np.ndarray) -> np.ndarray:
    """``small_convnet``'s first output in float64 numpy, independent of TVM."""
    w = {init.name: np.frombuffer(init.raw_data, np.float32).reshape(init.dims).astype(np.float64)
         for init in model.graph.initializer}

    def conv(a, weight, bias, stride, groups):
        n, c, h, width = a.shape
        o, _, kh, kw = weight.shape
        pad = kh // 2
        a = np.pad(a, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        oh, ow = (h + 2 * pad - kh) // stride + 1, (width + 2 * pad - kw) // stride + 1
        out = np.zeros((n, o, oh, ow))
        per = c // groups
        for oc in range(o):
            g = oc // (o // groups)
            for i in range(kh):
                for j in range(kw):
                    patch = a[:, g * per:(g + 1) * per, i:i + stride * oh:stride, j:j + stride * ow:stride]
                    out[:, oc] += np.einsum("nchw,c->nhw", patch, weight[oc, :, i, j])
        return out + bias[None, :, None, None]

    r1 = np.maximum(conv(x.astype(np.float64), w["w1"], w["b1"], 2, 1), 0)
    r2 = np.maximum(conv(r1, w["w2"], w["b2"], 1, 8), 0)
    c3 = conv(r2, w["w3"], w["b3"], 1, 1)
    return ((c3 + c3).mean(axis=(2, 3))) @ w["fc"]


def test_size_mode_is_smaller_with_the_same_outputs_on_the_host(tmp_path, rng):
    model = small_convnet(hw=32)
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    outputs, sizes = {}, {}
    for goal in ("speed", "size"):
        so = edgetvm.compile(model, "host", optimize=goal).export(tmp_path / f"{goal}.so", standalone=True)
        sizes[goal] = text_bytes(so, "size")
        outputs[goal] = edgetvm.load(so)(x)
    assert sizes["size"] < 0.6 * sizes["speed"], sizes
    for fast, small in zip(outputs["speed"], outputs["size"]):
        np.testing.assert_array_equal(small, fast)
    np.testing.assert_allclose(outputs["size"][0], numpy_reference(model, x), rtol=1e-4, atol=1e-4)


@pytest.mark.arm
def test_size_mode_is_smaller_and_bit_exact_under_qemu(tmp_path, rng):
    model = small_convnet(hw=32)
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    arm = edgetvm.compile(model, "cortex-a7")
    assert any(rule.startswith("neon-") for rule in arm.report.details["schedules"]["kernels"].values())
    runs, sizes = {}, {}
    for goal in ("speed", "size"):
        build = build_standalone(arm.scheduled, arm.imported, arm.target, tmp_path / goal, "m", optimize=goal)
        sizes[goal] = text_bytes(build.so, "arm-linux-gnueabihf-size")
        runs[goal] = emulate.run_standalone_arm(build.so, [x], cpu=arm.target.qemu_cpu)
        ir = (tmp_path / goal / "kernels_neon.ll").read_text()
        # Called, not inlined: each microkernel the kernels use is one function and every tile calls it.
        assert ("call i32 @edgetvm_neon_" in ir) == (goal == "size")
        assert ("%edgetvm.asm." in ir) == (goal == "speed")
    assert sizes["size"] < 0.6 * sizes["speed"], sizes
    for fast, small in zip(runs["speed"].outputs, runs["size"].outputs):
        np.testing.assert_array_equal(small, fast)
    np.testing.assert_allclose(runs["size"].outputs[0], numpy_reference(model, x), rtol=1e-4, atol=1e-4)


def test_microkernels_are_called_without_inline():
    name = "edgetvm_neon_f32_gemm_p5x8_u4_b"
    assert microkernel_definition(name) is not None
    ir = (f"declare i32 @{name}(ptr, ptr, i32, i32, i32, ptr, i32, i32, ptr)\n"
          f"  %r = call i32 @{name}(ptr %o, ptr %x, i32 1, i32 2, i32 3, ptr %w, i32 4, i32 5, ptr %b)\n")
    assert "%edgetvm.asm" in with_microkernels(ir)
    called = with_microkernels(ir, inline=False)
    assert "call i32 @edgetvm_neon_f32_gemm_p5x8_u4_b(" in called and "%edgetvm.asm" not in called


def test_bad_optimize_value_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="--optimize 'tiny': choose speed .* or size"):
        edgetvm.compile(small_convnet(), "host", optimize="tiny")
    compiled = edgetvm.compile(small_convnet(), "host", optimize="size")
    with pytest.raises(ArtifactError, match="--optimize size builds the standalone C module only"):
        compiled.export(tmp_path / "vm.so")
