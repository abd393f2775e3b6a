"""The RGB stem conv on ARMv7 (transform/pad_stem_channels.py, schedules/cpu.py's schedule_neon_f32_stem,
kernels/neon_f32_gemm.py's strided depth-4 tile): which convs take it, and its numbers against a
float64 numpy reference and the host build, under qemu."""

from __future__ import annotations

import numpy as np
import pytest

import edgetvm
from edgetvm.kernels.neon_f32_gemm import Epilogue, f32_gemm_asm, f32_stem_intrin, f32_stem_tile_asm

from ..schedules.nets import NetBuilder
from .arm_checks import ARM, assert_arm_matches_reference_and_host, schedule_rule, window_conv_reference


def stem_net(cout: int, h: int, w: int, k: int, stride: int, seed: int = 0):
    """k x k conv of 3 channels (pad k // 2) + bias + PReLU, and a float64 numpy reference of it."""
    b = NetBuilder((1, 3, h, w), seed=seed)
    y = b.prelu(b.conv("input", 3, cout, k, stride), cout)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    model = b.build(y, (1, cout, ho, wo))
    consts = {t.name: np.frombuffer(t.raw_data, np.float32).reshape(t.dims) for t in model.graph.initializer}
    weight, bias, slope = (consts[n].astype(np.float64) for n in [*model.graph.node[0].input[1:], model.graph.node[1].input[1]])

    def reference(x: np.ndarray) -> np.ndarray:
        return window_conv_reference(x, weight, bias, slope, stride, depthwise=False)

    return model, reference


def test_stem_loop_is_one_window_row_then_the_next():
    lines = f32_gemm_asm(1, 4, 2, 3, window_row=True)
    loop = lines[lines.index("1:") + 1:lines.index("subs $7, $7, #1")]
    pixel_loads = [line for line in loop if line.startswith("vld1.32 {d") and "[$1" in line]
    # 3 taps of 4 pixels: a tap's last pixel steps to the next tap ($4), the row's last to the next row ($3).
    assert [line.rsplit(", ", 1)[1] for line in pixel_loads] == ["$2", "$2", "$2", "$4"] * 2 + ["$2", "$2", "$2", "$3"]
    assert len([line for line in loop if line.startswith("vmla.f32")]) == 3 * 32
    assert lines[0].startswith("vldmia") and lines[-1].startswith("vstmia")


def test_fused_stem_tile_is_the_window_loop_then_the_epilogue():
    lines = f32_stem_tile_asm(3, Epilogue(True, (("prelu", None),)))
    start, end = lines.index("1:"), lines.index("bne 1b")
    # The same window loop as the tensorized stem tile, without its vldm/vstm of the accumulators.
    loop = f32_gemm_asm(1, 4, 2, 3, window_row=True)[1:-1]
    assert lines[start:end + 1] == loop
    # With a bias the first window row before the loop, its first tap's products starting the 8
    # accumulators (no zeroing; the call passes one row less): without one, zeroed.
    first = [line for line in lines[:start] if line.startswith(("vmul", "vmla"))]
    assert [line.split(",")[0] for line in first[:8]] == [f"vmul.f32 q{q}" for q in range(8, 16)]
    assert all(line.startswith("vmla") for line in first[8:]) and len(first) == 3 * 32
    assert [line.replace("vmul", "vmla") for line in lines[:start]] == loop[1:-2]
    no_bias = f32_stem_tile_asm(3, Epilogue(False, (("max", 0),)))
    assert no_bias[:no_bias.index("1:")] == [f"vmov.i32 q{q}, #0" for q in range(8, 16)]
    assert lines[end + 1:end + 3] == ["vld1.32 {d0-d3}, [$9]", "vld1.32 {d4-d7}, [$8]"]  # slope, bias
    assert [line for line in lines[end:] if line.startswith("vst1.32")] == [
        f"vst1.32 {{d{16 + 4 * p}-d{19 + 4 * p}}}, [$0 :128], $6" for p in range(4)]
    assert not any("vstm" in line or "vldm" in line for line in lines)


def test_stem_windows_wider_than_the_registered_kernels_are_refused():
    with pytest.raises(ValueError, match="windows 2 to 7 wide"):
        f32_stem_intrin(9, 9, 2)


@pytest.mark.parametrize("cout,w", [(12, 16), (16, 14)])
def test_stems_no_tile_divides_keep_the_register_tiled_schedule(cout, w):
    model, _ = stem_net(cout, 8, w, 3, 2)
    assert schedule_rule(edgetvm.compile(model, ARM, num_threads=1), "neon-stem") is None


@pytest.mark.arm
@pytest.mark.parametrize("cout,h,w,k,stride,threads", [
    (16, 12, 16, 3, 2, 1),   # MobileFaceNet's and MobileNetV2's stem: 3x3 stride 2
    (24, 10, 16, 5, 2, 1),   # BlazeFace's and the palm detector's: 5x5 stride 2
    (8, 6, 8, 3, 1, 1),      # stride 1
    (32, 16, 32, 3, 2, 2),   # 4096 outputs: the tile loops run in parallel
])
def test_arm_stem_matches_numpy_and_the_host_build(cout, h, w, k, stride, threads, tmp_path):
    model, reference = stem_net(cout, h, w, k, stride)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, h, w)).astype(np.float32)
    compiled = edgetvm.compile(model, ARM, num_threads=threads)
    rule = schedule_rule(compiled, "neon-stem")
    assert rule and f"{k}x{k} stride {stride}, fused tile 1x4x8_win{k}_fused_b_prelu" in rule
    assert_arm_matches_reference_and_host(compiled, model, reference, x, threads, tmp_path, bit_exact=True)
