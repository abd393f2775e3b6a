"""The ARMv7 fp32 depthwise 3x3 and 5x5 microkernels (kernels/neon_f32_dwconv.py, schedules/cpu.py's
schedule_neon_f32_dwconv): its assembly as documented, which convs take it, and its numbers against
a float64 numpy reference and the host build, under qemu."""

from __future__ import annotations

import re

import numpy as np
import pytest

import edgetvm
from edgetvm.backends.neon_microkernels import microkernel_calls, with_microkernels
from edgetvm.kernels.neon_f32_dwconv import (DWCONV5_PIXELS, DWCONV_PIXELS, dwconv5_row_asm, dwconv5_row_definition,
                                             dwconv5_row_name, dwconv_asm, dwconv_columns, dwconv_definition,
                                             dwconv_definition_of, dwconv_epilogue_fits, dwconv_fused_asm,
                                             dwconv_fused_name, dwconv_name, zero_row_asm)
from edgetvm.kernels.neon_f32_gemm import Epilogue

from ..schedules.nets import NetBuilder
from .arm_checks import ARM, assert_arm_matches_reference_and_host, schedule_rule, window_conv_reference


# (asm of an output row, pixels per group, window rows per call, taps per row, weights' first q, the
# loop counter): the 3x3 kernel (accumulators q0-q3, columns q4-q6, 9 weights q7-q15) and the 5x5
# window-row one (q0-q7, q8-q10, 5 weights q11-q15).
KERNELS = {"3x3": (dwconv_asm, DWCONV_PIXELS, 3, 3, 7, "$5"), "5x5 row": (dwconv5_row_asm, DWCONV5_PIXELS, 1, 5, 11, "$4")}


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", KERNELS)
def test_loop_step_is_column_loads_and_multiply_accumulates_only(kernel, stride):
    asm, pixels, rows, taps, first_weight, counter = KERNELS[kernel]
    lines = asm(stride, 2 * pixels)
    assert len([line for line in lines[:lines.index("1:")] if line.startswith("vld1.32")]) == rows * taps
    loop = lines[lines.index("1:") + 1:lines.index(f"subs {counter}, {counter}, #1")]
    loads = [line for line in loop if line.startswith("vld1.32")]
    macs = [line for line in loop if line.startswith("vmla.f32")]
    # The accumulators in and out with one vldm/vstm, each window row's columns loaded once, every
    # tap of every pixel once, nothing else.
    assert loop[0] == f"vldmia $0, {{d0-d{2 * pixels - 1}}}" and loop[-1] == f"vstmia $0!, {{d0-d{2 * pixels - 1}}}"
    assert len(loads) == rows * dwconv_columns(stride, pixels, taps) and len(macs) == rows * taps * pixels
    assert len(loop) == len(loads) + len(macs) + 2
    used = set()
    for line in macs:
        acc, column, weight = map(int, re.fullmatch(r"vmla\.f32 q(\d+), q(\d+), q(\d+)", line).groups())
        # Accumulators, the 3 rotating input columns and the weights never mixed up.
        assert acc < pixels and pixels <= column < first_weight == pixels + 3 and first_weight <= weight <= 15
        used.add((acc, weight))
    assert len(used) == rows * taps * pixels


def test_5x5_row_of_width_not_multiple_of_8_ends_with_a_shorter_group():
    lines = dwconv5_row_asm(2, 11)
    after = lines[lines.index("bne 1b") + 1:]
    assert after[0] == "vldmia $0, {d0-d5}" and after[-1] == "vstmia $0!, {d0-d5}"
    assert len([line for line in after if line.startswith("vmla.f32")]) == 5 * 3
    assert "1:" not in dwconv5_row_asm(1, 6)


def test_zero_row_stores_4_zeroed_registers_per_4_pixels():
    assert zero_row_asm(7) == [*(f"vmov.i32 q{p}, #0" for p in range(4)), "vstmia $0!, {d0-d7}", "vstmia $0!, {d0-d5}"]


def test_a_row_of_width_not_multiple_of_4_ends_with_a_shorter_group():
    lines = dwconv_asm(1, 7)
    after = lines[lines.index("bne 1b") + 1:]
    assert after[-1] == "vstmia $0!, {d0-d5}"
    assert len([line for line in after if line.startswith("vmla.f32")]) == 9 * 3
    assert "1:" not in dwconv_asm(1, 3)


def test_calls_become_the_assembly_statement_itself():
    name = dwconv_name(2, 14)
    ir = (f"define void @k(ptr %c, ptr %x, ptr %w) {{\n"
          f"  %3 = tail call i32 @{name}(ptr %c, ptr %x, i32 64, i32 1024, i32 -2048, ptr %w, i32 64, i32 64)\n"
          f"  ret void\n}}\n\ndeclare i32 @{name}(ptr, ptr, i32, i32, i32, ptr, i32, i32) local_unnamed_addr\n")
    out = with_microkernels(ir)
    body = out[:out.index("\n}\n")]
    assert not microkernel_calls(out) and dwconv_definition(2, 14) in out
    assert f"call i32 @{name}" not in body and "vmla.f32" in body and "%3 = add i32 0, 0" in body


def test_5x5_row_calls_become_the_assembly_statement_itself():
    name = dwconv5_row_name(1, 24)
    ir = (f"define void @k(ptr %c, ptr %x, ptr %w) {{\n"
          f"  %3 = tail call i32 @{name}(ptr %c, ptr %x, i32 64, i32 -192, ptr %w, i32 64)\n"
          f"  ret void\n}}\n\ndeclare i32 @{name}(ptr, ptr, i32, i32, ptr, i32) local_unnamed_addr\n")
    out = with_microkernels(ir)
    body = out[:out.index("\n}\n")]
    assert not microkernel_calls(out) and dwconv5_row_definition(1, 24) in out
    assert f"call i32 @{name}" not in body and "vmla.f32" in body


def depthwise_net(c: int, h: int, w: int, stride: int, residual: bool = False, seed: int = 0, k: int = 3):
    """Depthwise k x k (pad k // 2) + bias + PReLU [+ residual add], and a float64 numpy reference of it."""
    b = NetBuilder((1, c, h, w), seed=seed)
    y = b.prelu(b.conv("input", c, c, k, stride, groups=c), c)
    if residual:
        y = b.node("Add", [y, "input"])
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    model = b.build(y, (1, c, ho, wo))
    consts = {t.name: np.frombuffer(t.raw_data, np.float32).reshape(t.dims) for t in model.graph.initializer}
    weight, bias, slope = (consts[n].astype(np.float64) for n in [*model.graph.node[0].input[1:], model.graph.node[1].input[1]])

    def reference(x: np.ndarray) -> np.ndarray:
        out = window_conv_reference(x, weight, bias, slope, stride, depthwise=True)
        return out + x if residual else out

    return model, reference


@pytest.mark.parametrize("c,h,w,stride,k", [(8, 6, 8, 1, 3), (12, 6, 14, 2, 3), (8, 6, 10, 1, 5), (8, 6, 14, 2, 5)])
def test_arm_depthwise_convs_take_the_microkernel(c, h, w, stride, k):
    model, _ = depthwise_net(c, h, w, stride, k=k)
    compiled = edgetvm.compile(model, ARM, num_threads=1)
    rule = schedule_rule(compiled, "neon-dwconv")
    assert rule and f"{k}x{k} stride {stride} row of {(w - 1) // stride + 1} microkernel" in rule
    # The padding pass: each row's interior copied and its border filled by the NEON copy assembly,
    # no bounds test per vector.
    kernel = next(f for gv, f in compiled.scheduled.functions.items() if gv.name_hint.startswith("fused_conv2d")).script()
    assert "edgetvm_neon_f32_copy_n" in kernel and "edgetvm_neon_f32_zero_n" in kernel and "if_then_else" not in kernel


def test_channels_not_a_multiple_of_4_and_the_host_keep_their_schedules():
    model, _ = depthwise_net(6, 6, 8, 1)
    assert schedule_rule(edgetvm.compile(model, ARM, num_threads=1), "neon-dwconv") is None
    model, _ = depthwise_net(8, 6, 8, 1)
    assert schedule_rule(edgetvm.compile(model, "host", num_threads=1), "neon-dwconv") is None


@pytest.mark.arm
@pytest.mark.parametrize("c,h,w,stride,residual,threads,k", [
    (16, 5, 10, 1, True, 1, 3),    # 2 groups of 4 pixels + 2
    (8, 7, 7, 1, False, 1, 3),     # the 7-wide stage: 1 group + 3
    (12, 9, 3, 1, False, 1, 3),    # no full group
    (16, 14, 14, 2, False, 1, 3),  # stride 2, 7 wide
    (8, 9, 17, 2, False, 1, 3),    # odd input: 9 output columns
    (32, 16, 16, 1, False, 2, 3),  # 8192 outputs: the row loops run in parallel
    (8, 6, 21, 1, True, 1, 5),     # 5x5: 2 groups of 8 pixels + 5
    (12, 9, 6, 1, False, 1, 5),    # 5x5: no full group
    (8, 12, 21, 2, False, 1, 5),   # 5x5 stride 2: 1 group + 3
    (32, 16, 16, 1, False, 2, 5),  # 5x5: 8192 outputs, 2 groups, the row loops in parallel
])
def test_arm_microkernel_matches_numpy_and_the_host_build(c, h, w, stride, residual, threads, k, tmp_path):
    model, reference = depthwise_net(c, h, w, stride, residual=residual, k=k)
    x = np.random.default_rng(1).uniform(-1, 1, (1, c, h, w)).astype(np.float32)
    compiled = edgetvm.compile(model, ARM, num_threads=threads)
    rule = schedule_rule(compiled, "neon-dwconv")
    # 3x3: bias, PReLU [and the residual] in the fused row's registers.
    assert rule and ("fused epilogue b_prelu" in rule) == (k == 3)
    assert_arm_matches_reference_and_host(compiled, model, reference, x, threads, tmp_path, bit_exact=True)


RELU6 = (("max", 0), ("min", 0x40C00000))
PRELU_RES = Epilogue(True, (("prelu", None), ("res", None)))


@pytest.mark.parametrize("stride", [1, 2])
def test_fused_row_zeroes_in_registers_and_stores_each_pixel_once(stride):
    lines = dwconv_fused_asm(stride, 9, PRELU_RES)
    loop = lines[lines.index("1:") + 1:lines.index("subs $5, $5, #1")]
    # No accumulator goes through memory: the taps (with a bias the first tap's products start the
    # accumulators: no zeroing), the epilogue in q4-q6.
    assert not any(line.startswith(("vldm", "vstm", "vmov")) for line in lines)
    start = next(i for i, line in enumerate(loop) if line.startswith("vadd.f32")) - 2
    taps, epilogue = loop[:start], loop[start:]
    products = [line for line in taps if line.startswith(("vmla.f32", "vmul.f32"))]
    assert len(products) == 36 and [line.split(",")[0] for line in products if line.startswith("vmul")] == [
        f"vmul.f32 q{p}" for p in range(4)]
    assert all(line.startswith("vmul") for line in [next(x for x in products if x.split(",")[0].endswith(f"q{p}"))
                                                    for p in range(4)])
    # Slope and bias loaded again per group into the freed columns; the bias added to every
    # accumulator first (the bias register is then a temporary), then the PReLU, residual, store.
    assert epilogue[:2] == ["vld1.32 {d8-d9}, [$9]", "vld1.32 {d10-d11}, [$8]"]
    assert epilogue[2:6] == [f"vadd.f32 q{p}, q{p}, q5" for p in range(4)]
    assert epilogue[6:12] == ["vcgt.f32 q6, q0, #0", "vmul.f32 q5, q0, q4", "vbif q0, q5, q6",
                              "vld1.32 {d12-d13}, [$10 :128], $2", "vadd.f32 q0, q0, q6", "vst1.32 {d0-d1}, [$0 :128], $2"]
    assert len([line for line in loop if line.startswith("vst1.32")]) == 4
    # The 1 pixel after the loop: the same epilogue on q0 alone.
    after = lines[lines.index("bne 1b") + 1:]
    assert after[-1] == "vst1.32 {d0-d1}, [$0 :128], $2" and after.count("vmul.f32 q0, q4, q7") == 1


def test_fused_row_without_a_bias_zeroes_its_accumulators():
    # The host's sum starts at +0: only a bias after it makes a sum started by the first product equal.
    lines = dwconv_fused_asm(1, 8, Epilogue(False, RELU6))
    loop = lines[lines.index("1:") + 1:lines.index("subs $5, $5, #1")]
    assert loop[:4] == [f"vmov.i32 q{p}, #0" for p in range(4)] and not any(line.startswith("vmul.f32 q0, q4") for line in loop)


def test_fused_row_definition_keeps_steps_bias_and_slope_read_only():
    name = dwconv_fused_name(1, 8, PRELU_RES)
    assert name == "edgetvm_neon_f32_dwconv3x3_s1_w8_fused_b_prelu_res"
    definition = dwconv_definition_of(name)
    # 7 tied operands (c, x, xn, w, ws, wn, res) and 4 inputs (xs, xg, bias, slope).
    assert "asm sideeffect" in definition and definition.count("=&r") == 7 and "vbif" in definition
    assert dwconv_definition_of(name.replace("prelu", "sigmoid")) is None


def test_an_epilogue_beyond_q4_q6_is_declined():
    assert dwconv_epilogue_fits(Epilogue(True, RELU6)) and dwconv_epilogue_fits(PRELU_RES)
    # Slope, bias and two constants: 4 vectors for 3 registers.
    assert not dwconv_epilogue_fits(Epilogue(True, (("prelu", None), *RELU6)))


def activation_net(c: int, h: int, w: int, stride: int, activation: str, bias: bool = True, pad: int = 1):
    """Depthwise 3x3 (``pad`` 1, or 0 at stride 1) [+ bias] + ``activation``, and a float64 numpy
    reference of it."""
    b = NetBuilder((1, c, h, w), seed=2)
    y = b.conv("input", c, c, 3, stride, groups=c, bias=bias, pad=pad)
    if activation == "relu":
        y = b.node("Relu", [y])
    elif activation == "relu6":
        y = b.node("Clip", [y, b.const(np.float32(0)), b.const(np.float32(6))])
    elif activation == "leaky":
        y = b.node("LeakyRelu", [y], alpha=0.1)
    else:
        y = b.node("Clip", [b.prelu(y, c), b.const(np.float32(0)), b.const(np.float32(6))])
    ho, wo = (h + 2 * pad - 3) // stride + 1, (w + 2 * pad - 3) // stride + 1
    model = b.build(y, (1, c, ho, wo))
    consts = {t.name: np.frombuffer(t.raw_data, np.float32).reshape(t.dims).astype(np.float64)
              for t in model.graph.initializer}
    conv = model.graph.node[0]
    weight = consts[conv.input[1]]
    shift = consts[conv.input[2]] if bias else np.zeros(c)
    slope = consts[model.graph.node[1].input[1]] if activation == "prelu_relu6" else np.ones(c)

    def reference(x: np.ndarray) -> np.ndarray:
        out = window_conv_reference(x, weight, shift, slope, stride, depthwise=True)
        if pad == 0:
            out = out[:, :, 1:-1, 1:-1]
        if activation == "leaky":
            return np.where(out > 0, out, 0.1 * out)
        return np.clip(out, 0, 6) if activation in ("relu6", "prelu_relu6") else np.maximum(out, 0)

    return model, reference


@pytest.mark.arm
@pytest.mark.parametrize("c,h,w,stride,activation,bias,pad,fused", [
    (8, 6, 10, 1, "relu6", True, 1, "b_max00000000_min40c00000"),   # MobileNetV2's: 2 groups + 2
    (12, 9, 13, 2, "relu6", True, 1, "b_max00000000_min40c00000"),  # stride 2: 1 group + 3
    (8, 5, 7, 1, "relu", False, 1, "max00000000"),                  # no bias: the constant alone
    (8, 6, 9, 1, "leaky", True, 1, "b_leaky3dcccccd"),
    (8, 6, 11, 1, "relu6", True, 0, "b_max00000000_min40c00000"),   # no padding pass: x read in place
    (8, 6, 9, 1, "prelu_relu6", True, 1, None),                      # does not fit q4-q6: the TIR tail
])
def test_arm_fused_epilogues_match_numpy_and_the_host_build_bit_for_bit(c, h, w, stride, activation, bias, pad, fused,
                                                                         tmp_path):
    model, reference = activation_net(c, h, w, stride, activation, bias, pad)
    x = np.random.default_rng(3).uniform(-2, 8, (1, c, h, w)).astype(np.float32)
    compiled = edgetvm.compile(model, ARM, num_threads=1)
    rule = schedule_rule(compiled, "neon-dwconv")
    assert rule and (f"fused epilogue {fused}," in rule if fused else "fused" not in rule)
    assert_arm_matches_reference_and_host(compiled, model, reference, x, 1, tmp_path, bit_exact=True)
