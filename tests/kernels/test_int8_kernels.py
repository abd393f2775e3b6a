"""Integer kernels are bit-exact against a plain numpy reference of the same quantized graph.

The graphs are written in QDQ form with chosen integer weights and scales (what an imported QDQ
model looks like), folded by ``FoldQuantScales``, lowered and scheduled by edgetvm, run on the
TVM VM, and compared integer for integer with numpy doing the same integer arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from edgetvm.backends.vm import build_vm
from edgetvm.quantization.fold_quant_scales import FoldQuantScales
from edgetvm.kernels.fixed_point import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    quantize_multipliers,
    requantize_reference,
)
from edgetvm.schedules.int8 import schedule_int8_kernels
from edgetvm.schedules.lower import legalize_and_fuse
from edgetvm.targets import resolve_target

HOST = resolve_target("host")


def _f32(v):
    return relax.const(np.float32(v), "float32")


def _zp(v, dtype="int8"):
    return relax.const(np.array(v, dtype=dtype), dtype)


def _weight(bb, w_q, scale, axis):
    zeros = np.zeros(scale.shape, dtype=np.int8)
    return bb.emit(relax.op.dequantize(relax.const(w_q), relax.const(scale.astype(np.float32)),
                                       relax.const(zeros), axis=axis, out_dtype="float32"))


def _conv_reference(x_q, x_zero, w_q, stride, pad, groups):
    """``sum (q_x - z_x) q_w`` in int64, padding with real 0 (= z_x)."""
    x = np.pad(x_q.astype(np.int64) - x_zero, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, w = x.shape
    oc, icg, kh, kw = w_q.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, oc, oh, ow), dtype=np.int64)
    ocg = oc // groups
    for g in range(groups):
        xs = x[:, g * icg:(g + 1) * icg]
        ws = w_q[g * ocg:(g + 1) * ocg].astype(np.int64)
        for r in range(kh):
            for s in range(kw):
                patch = xs[:, :, r:r + stride * oh:stride, s:s + stride * ow:stride]
                out[:, g * ocg:(g + 1) * ocg] += np.einsum("nchw,oc->nohw", patch, ws[:, :, r, s])
    return out


def _requant(acc, real, zero, lo, hi, real_neg=None, dtype="int8"):
    m, e = quantize_multipliers(np.asarray(real, dtype=np.float64))
    mn, en = (m, e) if real_neg is None else quantize_multipliers(np.asarray(real_neg, dtype=np.float64))
    assert np.all(np.abs(acc) < 2**31)
    return requantize_reference(acc.astype(np.int32), m, e, mn, en, zero, lo, hi, dtype)


def _add_reference(a_q, a_scale, a_zero, b_q, b_scale, b_zero, y_scale, y_zero, lo, hi):
    """TFLite's int8 ADD in numpy."""
    twice_max = 2 * max(a_scale, b_scale)
    ma, ea = quantize_multiplier(a_scale / twice_max)
    mb, eb = quantize_multiplier(b_scale / twice_max)
    my, ey = quantize_multiplier(twice_max / ((1 << 20) * y_scale))
    a = multiply_by_quantized_multiplier((a_q.astype(np.int32) - a_zero) << 20, np.int32(ma), np.int32(ea))
    b = multiply_by_quantized_multiplier((b_q.astype(np.int32) - b_zero) << 20, np.int32(mb), np.int32(eb))
    y = multiply_by_quantized_multiplier(a + b, np.int32(my), np.int32(ey)).astype(np.int64) + y_zero
    return np.clip(y, lo, hi).astype(np.int8)


def _build_and_run(mod, *inputs):
    folder = FoldQuantScales()
    folded = folder(mod)
    scheduled = schedule_int8_kernels(legalize_and_fuse(folded, HOST), HOST)
    vm = relax.VirtualMachine(build_vm(scheduled, HOST), tvm.cpu())
    result = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
    outs = [r.numpy() for r in result] if not hasattr(result, "numpy") else [result.numpy()]
    return outs, folder.report, scheduled


@pytest.mark.parametrize("x_dtype, x_zero", [("int8", -7), ("uint8", 131)])
def test_conv_chain_residual_add_and_requantize_bit_exact(rng, x_dtype, x_zero):
    c_in, c = 6, 8
    x_scale = 0.02
    w1 = rng.integers(-127, 128, (c, c_in, 3, 3)).astype(np.int8)
    s_w1 = rng.uniform(0.002, 0.01, c)
    b1 = rng.normal(0, 0.2, c)
    s1, z1 = 0.05, -20
    w2 = rng.integers(-127, 128, (c, 1, 3, 3)).astype(np.int8)
    s_w2 = rng.uniform(0.005, 0.02, c)
    b2 = rng.normal(0, 0.1, c)
    alpha = rng.uniform(0.05, 0.3, c)
    s2, z2 = 0.04, 5
    w3 = rng.integers(-127, 128, (c, c, 1, 1)).astype(np.int8)
    s_w3 = rng.uniform(0.005, 0.02, c)
    s3, z3 = 0.06, -3
    s4, z4 = 0.07, -60
    s5, z5 = 0.11, 10

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, c_in, 10, 10), x_dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            d = bb.emit(relax.op.dequantize(x, _f32(x_scale), _zp(x_zero, x_dtype), axis=1))
            y = bb.emit(relax.op.nn.conv2d(d, _weight(bb, w1, s_w1, 0), padding=[1, 1, 1, 1]))
            y = bb.emit(relax.op.add(y, relax.const(b1.reshape(1, c, 1, 1).astype(np.float32))))
            y = bb.emit(relax.op.nn.relu(y))
            y1 = bb.emit(relax.op.quantize(y, _f32(s1), _zp(z1), axis=1, out_dtype="int8"))
            d1 = bb.emit(relax.op.dequantize(y1, _f32(s1), _zp(z1), axis=1))
            y = bb.emit(relax.op.nn.conv2d(d1, _weight(bb, w2, s_w2, 0), strides=[2, 2], padding=[1, 1, 1, 1],
                                           groups=c))
            y = bb.emit(relax.op.add(y, relax.const(b2.reshape(1, c, 1, 1).astype(np.float32))))
            y = bb.emit(relax.op.nn.prelu(y, relax.const(alpha.astype(np.float32)), axis=1))
            y2 = bb.emit(relax.op.quantize(y, _f32(s2), _zp(z2), axis=1, out_dtype="int8"))
            y = bb.emit(relax.op.nn.conv2d(d1, _weight(bb, w3, s_w3, 0), strides=[2, 2]))
            y3 = bb.emit(relax.op.quantize(y, _f32(s3), _zp(z3), axis=1, out_dtype="int8"))
            total = bb.emit(relax.op.add(bb.emit(relax.op.dequantize(y2, _f32(s2), _zp(z2), axis=1)),
                                         bb.emit(relax.op.dequantize(y3, _f32(s3), _zp(z3), axis=1))))
            y4 = bb.emit(relax.op.quantize(bb.emit(relax.op.nn.relu(total)), _f32(s4), _zp(z4), axis=1,
                                           out_dtype="int8"))
            y5 = bb.emit(relax.op.quantize(bb.emit(relax.op.dequantize(y4, _f32(s4), _zp(z4), axis=1)), _f32(s5),
                                           _zp(z5), axis=1, out_dtype="int8"))
            out = bb.emit_output(relax.Tuple([y1, y2, y3, y4, y5]))
        bb.emit_func_output(out)

    lo, hi = (0, 255) if x_dtype == "uint8" else (-128, 127)
    x_q = rng.integers(lo, hi + 1, (1, c_in, 10, 10)).astype(x_dtype)
    (g1, g2, g3, g4, g5), report, scheduled = _build_and_run(bb.get(), x_q)
    assert report.kernels == {"conv2d": 3, "add": 1, "requantize": 1}, report
    # The dense 3x3 and the strided 1x1 (im2col + GEMM), the depthwise and the ADD after them run
    # channels-last; the first conv on uint8 input keeps the NCHW kernel (no int8 x int8 pairs).
    expected_nhwc = {"im2col": 2 if x_dtype == "int8" else 1, "depthwise": 1, "add": 1}
    assert report.channels_last == expected_nhwc, report

    acc_scale1 = x_scale * s_w1
    acc1 = _conv_reference(x_q, x_zero, w1, 1, 1, 1) + np.rint(b1 / acc_scale1).astype(np.int64).reshape(1, c, 1, 1)
    r1 = _requant(acc1, acc_scale1 / s1, z1, max(-128, z1), 127)
    np.testing.assert_array_equal(g1, r1)

    acc_scale2 = s1 * s_w2
    acc2 = _conv_reference(r1, z1, w2, 2, 1, c) + np.rint(b2 / acc_scale2).astype(np.int64).reshape(1, c, 1, 1)
    r2 = _requant(acc2, acc_scale2 / s2, z2, -128, 127, real_neg=acc_scale2 / s2 * alpha)
    np.testing.assert_array_equal(g2, r2)

    acc3 = _conv_reference(r1, z1, w3, 2, 0, 1)
    r3 = _requant(acc3, s1 * s_w3 / s3, z3, -128, 127)
    np.testing.assert_array_equal(g3, r3)

    r4 = _add_reference(r2, s2, z2, r3, s3, z3, s4, z4, max(-128, z4), 127)
    np.testing.assert_array_equal(g4, r4)

    m5, e5 = quantize_multiplier(s4 / s5)
    r5 = np.clip(multiply_by_quantized_multiplier(r4.astype(np.int32) - z4, np.int32(m5), np.int32(e5)) + z5,
                 -128, 127).astype(np.int8)
    np.testing.assert_array_equal(g5, r5)
    # Every integer kernel got edgetvm's int8 schedule.
    kernels = [g.name_hint for g, f in scheduled.functions.items() if g.name_hint.startswith("int8_")]
    assert kernels and all(bool(scheduled[k].attrs["tirx.is_scheduled"]) for k in kernels)


def test_dense_with_leaky_relu_bit_exact(rng):
    k, m = 64, 24
    x_scale, x_zero = 0.03, 4
    w = rng.integers(-127, 128, (k, m)).astype(np.int8)
    s_w = rng.uniform(0.002, 0.01, m)
    b = rng.normal(0, 0.3, m)
    y_scale, y_zero = 0.08, -10
    alpha = 0.1

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, k), "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            d = bb.emit(relax.op.dequantize(x, _f32(x_scale), _zp(x_zero), axis=1))
            y = bb.emit(relax.op.matmul(d, _weight(bb, w, s_w, 1)))
            y = bb.emit(relax.op.add(y, relax.const(b.reshape(1, m).astype(np.float32))))
            y = bb.emit(relax.op.nn.leakyrelu(y, alpha))
            out = bb.emit_output(bb.emit(relax.op.quantize(y, _f32(y_scale), _zp(y_zero), axis=1, out_dtype="int8")))
        bb.emit_func_output(out)
    x_q = rng.integers(-128, 128, (2, k)).astype(np.int8)
    (got,), report, _ = _build_and_run(bb.get(), x_q)
    assert report.kernels == {"dense": 1}
    acc_scale = x_scale * s_w
    acc = (x_q.astype(np.int64) - x_zero) @ w.astype(np.int64) + np.rint(b / acc_scale).astype(np.int64)
    ref = requantize_reference(acc.astype(np.int32), *quantize_multipliers(acc_scale / y_scale),
                               *quantize_multipliers(acc_scale / y_scale * alpha), y_zero, -128, 127, "int8")
    np.testing.assert_array_equal(got, ref)


def test_fold_declines_asymmetric_weights_and_says_why():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 6, 6), "int8"))
    w = np.ones((4, 4, 1, 1), dtype=np.int8)
    with bb.function("main", [x]):
        with bb.dataflow():
            d = bb.emit(relax.op.dequantize(x, _f32(0.1), _zp(0), axis=1))
            wd = bb.emit(relax.op.dequantize(relax.const(w), relax.const(np.full(4, 0.1, np.float32)),
                                             relax.const(np.full(4, 3, np.int8)), axis=0))
            y = bb.emit(relax.op.nn.conv2d(d, wd))
            out = bb.emit_output(bb.emit(relax.op.quantize(y, _f32(0.2), _zp(0), axis=1, out_dtype="int8")))
        bb.emit_func_output(out)
    folder = FoldQuantScales()
    folded = folder(bb.get())
    assert folder.report.kernels == {}
    assert any("zero point is not 0" in why for why in folder.report.declined)
    # The chain is left as it was: float conv between dequantize and quantize.
    assert "R.nn.conv2d" in folded.script() and "call_tir" not in folded.script()
