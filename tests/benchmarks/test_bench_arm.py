"""benchmarks/bench_arm.py: kernel kinds and multiply-accumulates read off a compiled model, and the
per-kind instruction and cycle report under qemu."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import edgetvm

from ..schedules.nets import NetBuilder

_SPEC = importlib.util.spec_from_file_location(
    "bench_arm", Path(__file__).resolve().parents[2] / "benchmarks" / "bench_arm.py")
bench_arm = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("bench_arm", bench_arm)  # its dataclasses look their module up there
_SPEC.loader.exec_module(bench_arm)


@pytest.fixture(scope="module")
def compiled():
    """RGB stem 3x3/2 (3 -> 16), depthwise 3x3 (16), 1x1 (16 -> 32) on a 16x16 image."""
    b = NetBuilder((1, 3, 16, 16))
    y = b.prelu(b.conv("input", 3, 16, 3, 2), 16)
    y = b.prelu(b.conv(y, 16, 16, 3, groups=16), 16)
    y = b.conv(y, 16, 32, 1, pad=0)
    return edgetvm.compile(b.build(y, (1, 32, 8, 8)), "cortex-a7", num_threads=1)


def test_kernel_kinds_and_macs_come_from_the_shapes(compiled):
    kinds = {call.kind: call.macs for call in bench_arm.kernel_calls(compiled)}
    pixels = 8 * 8
    assert kinds["conv3x3 stem"] == pixels * 16 * 27
    assert kinds["dwconv3x3 s1"] == pixels * 16 * 9
    assert kinds["conv1x1"] == pixels * 32 * 16


def test_int8_kernel_kinds_and_macs_come_from_their_recipes():
    # The same layers in int8 (the stem kept float): depthwise and 1x1 kernels, their MACs as in fp32.
    b = NetBuilder((1, 3, 16, 16))
    y = b.prelu(b.conv("input", 3, 16, 3, 2), 16)
    y = b.prelu(b.conv(y, 16, 16, 3, groups=16), 16)
    y = b.conv(b.prelu(b.conv(y, 16, 32, 1, pad=0), 32), 32, 16, 1, pad=0)
    rng = np.random.default_rng(0)
    int8 = edgetvm.compile(b.build(y, (1, 16, 8, 8)), "cortex-a7", num_threads=1, quantize="int8",
                           calibration=[rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(4)])
    kinds = [(call.kind, call.macs) for call in bench_arm.kernel_calls(int8) if call.kind.startswith("int8")]
    pixels = 8 * 8
    assert kinds == [("int8 dwconv3x3 s1", pixels * 16 * 9), ("int8 conv1x1", pixels * 32 * 16),
                     ("int8 conv1x1", pixels * 16 * 32)], kinds


@pytest.mark.arm
def test_per_kernel_report_counts_every_kind_under_qemu(compiled, tmp_path):
    report = bench_arm.per_kernel(compiled, tmp_path)
    for kind in ("conv3x3 stem", "dwconv3x3 s1", "conv1x1"):
        row = report[kind]
        assert row["calls"] == 1 and row["minsn"] > 0
        # Issue cycles are at least one per instruction; a q-register op costs two on the A7.
        assert row["mcycles_a7"] >= row["mcycles_a9"] >= row["minsn"] * 0.99
        # 4 fp32 MACs per NEON instruction at most: below 0.25 per MAC the MACs were miscounted.
        assert row["insn_per_mac"] >= 0.25


def test_int8_rows_get_their_a7_cycles_over_the_same_models_fp32():
    rows = [{"model": "sface", "precision": "fp32", "mcycles_a7": 400.0},
            {"model": "sface", "precision": "int8", "mcycles_a7": 300.0},
            {"model": "retinaface", "precision": "fp32", "mcycles_a7": 200.0},
            {"model": "retinaface", "precision": "int8", "mcycles_a7": 139.0},
            {"model": "yunet", "precision": "int8", "mcycles_a7": 10.0}]   # no fp32 row: no ratio
    bench_arm.int8_against_fp32(rows)
    assert [(r.get("int8_a7_ratio"), r.get("goal_met")) for r in rows] == [
        (None, None), (0.75, False), (None, None), (0.695, True), (None, None)]


def test_face_onnx_models_take_real_faces_at_their_input_size():
    model, fill, shapes, calibration = bench_arm.face_onnx_model("retinaface")
    assert shapes == {"input": (1, 3, 320, 320)} and len(calibration) == 6
    assert all(c.shape == (1, 3, 320, 320) for c in calibration) and np.ptp(calibration[0]) > 100
    model, fill, shapes, calibration = bench_arm.face_onnx_model("sface")
    assert shapes is None and calibration[0].shape == (1, 3, 112, 112)
    assert "retinaface" in bench_arm.MODELS and "sface" in bench_arm.MODELS


def test_winograd_pieces_are_their_own_kinds_and_carry_the_convs_macs():
    # A dense 3x3 conv (16 -> 16, 12x12): F(6,3), its pieces counted against the conv's MACs.
    b = NetBuilder((1, 16, 12, 12))
    y = b.conv("input", 16, 16, 3)
    compiled = edgetvm.compile(b.build(y, (1, 16, 12, 12)), "cortex-a7", num_threads=1)
    kinds = {call.kind: call.macs for call in bench_arm.kernel_calls(compiled)}
    assert kinds["winograd output F(6,3)"] == 12 * 12 * 16 * 9 * 16
    assert kinds["winograd gemm"] == 64 * 4 * 16 * 16  # 2x2 tiles, 64 transform points
    assert kinds["winograd input F(6,3)"] == 0 and "conv3x3 s1" not in kinds
