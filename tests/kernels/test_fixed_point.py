"""The requantize arithmetic: gemmlowp semantics, the multiplier's accuracy, and its TIR twin."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te

from edgetvm.kernels.fixed_point import (
    INT32_MAX,
    INT32_MIN,
    activation_qparams,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    quantize_weight_per_channel,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from edgetvm.kernels.int8_nchw import multiply_by_quantized_multiplier as tir_multiply


def test_gemmlowp_primitives_on_known_values():
    # SaturatingRoundingDoublingHighMul: round(a * b / 2^31), the one overflow saturates.
    assert saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN) == INT32_MAX
    assert saturating_rounding_doubling_high_mul(1 << 30, 1 << 30) == 1 << 29
    assert saturating_rounding_doubling_high_mul(-(1 << 30), 1 << 30) == -(1 << 29)
    assert saturating_rounding_doubling_high_mul(3, 1 << 30) == 2  # 1.5 rounds away from zero
    assert saturating_rounding_doubling_high_mul(-3, 1 << 30) == -1  # gemmlowp's nudge: -1.5 -> -1
    # RoundingDivideByPOT: ties away from zero.
    assert [int(rounding_divide_by_pot(v, 1)) for v in (3, -3, 5, -5)] == [2, -2, 3, -3]
    assert [int(rounding_divide_by_pot(v, 2)) for v in (5, -5, 6, -6, 7)] == [1, -1, 2, -2, 2]


@pytest.mark.parametrize("real", [0.5, 0.75, 1.0 / 3.0, 2.0**-20 * 1.7, 0.999999, 1.5, 37.25, -0.2])
def test_quantize_multiplier_represents_the_real_scale(real):
    mantissa, exponent = quantize_multiplier(real)
    assert 2**30 <= abs(mantissa) < 2**31
    assert abs(mantissa * 2.0 ** (exponent - 31) - real) <= abs(real) * 2.0**-30


def test_requantize_is_within_one_unit_of_the_real_scale(rng):
    """``acc * M`` in fixed point vs. exact rational arithmetic, over the int8 output range."""
    worst = 0.0
    exact_rounding = 0
    total = 0
    for _ in range(200):
        real = float(np.exp(rng.uniform(np.log(1e-6), np.log(4.0))))
        mantissa, exponent = quantize_multiplier(real)
        # Accumulators whose scaled value spans the int8 output range.
        acc = np.clip(np.rint(rng.uniform(-300, 300, 256) / real), -(2**31) + 1, 2**31 - 1).astype(np.int32)
        got = multiply_by_quantized_multiplier(acc, np.int32(mantissa), np.int32(exponent)).astype(np.float64)
        ideal = acc.astype(np.float64) * real
        worst = max(worst, float(np.max(np.abs(got - ideal))))
        half_away = np.sign(ideal) * np.floor(np.abs(ideal) + 0.5)
        exact_rounding += int(np.sum(got == half_away))
        total += acc.size
    # Always one of the two integers around the exact value (less than one unit off) ...
    assert worst < 1.0, f"fixed-point requantize is {worst} units off the real scale"
    # ... and almost always the nearest one (the two roundings, at bit 31 and at the shift, can
    # each push a value that sits close to a half the other way).
    assert exact_rounding / total > 0.95


def test_tir_requantize_matches_numpy_bit_for_bit(rng):
    size = 4096
    acc = np.concatenate([
        rng.integers(-(2**31) + 1, 2**31 - 1, size // 2, dtype=np.int64),
        rng.integers(-(2**16), 2**16, size // 2, dtype=np.int64),
    ]).astype(np.int32)
    acc[:8] = [0, 1, -1, 2**31 - 1, -(2**31) + 1, 1 << 20, -(1 << 20), 12345]
    pairs = [quantize_multiplier(float(r)) for r in np.exp(rng.uniform(np.log(1e-9), np.log(0.99), size))]
    mantissa = np.array([p[0] for p in pairs], dtype=np.int32)
    exponent = np.array([p[1] for p in pairs], dtype=np.int32)
    # Left shifts (multiplier > 1) only where the shifted accumulator still fits in int32, as in TFLite.
    big = rng.random(size) < 0.1
    mantissa[big], exponent[big] = quantize_multiplier(5.5)
    acc[big] = np.clip(acc[big], -(2**27), 2**27)

    a = te.placeholder((size,), "int32", name="acc")
    m = te.placeholder((size,), "int32", name="m")
    e = te.placeholder((size,), "int32", name="e")
    out = te.compute((size,), lambda i: tir_multiply(a[i], m[i], e[i]), name="out")
    func = te.create_prim_func([a, m, e, out])
    lib = tvm.compile(tvm.IRModule({"main": func}), target="llvm")
    dev = tvm.cpu()
    result = tvm.runtime.tensor(np.zeros(size, dtype=np.int32), dev)
    lib["main"](tvm.runtime.tensor(acc, dev), tvm.runtime.tensor(mantissa, dev), tvm.runtime.tensor(exponent, dev),
                result)
    expected = multiply_by_quantized_multiplier(acc, mantissa, exponent)
    np.testing.assert_array_equal(result.numpy(), expected)


def test_activation_and_weight_parameters():
    params = activation_qparams(-1.0, 3.0)
    assert params.qmin == -128 and params.qmax == 127
    # Real 0 is exactly representable; the range ends land on the integer range ends.
    assert params.scale * (params.zero_point - params.zero_point) == 0.0
    assert abs(params.scale * (-128 - params.zero_point) + 1.0) <= params.scale
    assert abs(params.scale * (127 - params.zero_point) - 3.0) <= params.scale
    # A positive-only range still contains 0 (ReLU outputs): zero point at the bottom.
    assert activation_qparams(0.5, 2.0).zero_point == -128

    w = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [0.01, 0.02, -0.03]])
    q, scale = quantize_weight_per_channel(w, axis=0)
    assert q.dtype == np.int8 and q.min() >= -127
    np.testing.assert_allclose(scale, [2.0 / 127, 1.0, 0.03 / 127], rtol=1e-6)
    np.testing.assert_allclose(q * scale[:, None], w, atol=scale.max() / 2 + 1e-9)
    # Reduced range (a dense conv's weights, for the GEMM's 4 products per int16 lane): 7 bits.
    q7, scale7 = quantize_weight_per_channel(w, axis=0, qmax=63)
    assert q7.dtype == np.int8 and np.abs(q7).max() == 63 and q7[0, 1] == -63
    np.testing.assert_allclose(scale7, [2.0 / 63, 1.0, 0.03 / 63], rtol=1e-6)
    np.testing.assert_allclose(q7 * scale7[:, None], w, atol=scale7.max() / 2 + 1e-9)
