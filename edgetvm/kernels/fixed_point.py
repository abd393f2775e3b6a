"""Integer arithmetic of edgetvm's int8 path: quantization parameters and fixed-point requantization.

The scheme (the one TFLite's int8 spec and gemmlowp use):

* activations: per tensor, asymmetric int8, ``x ~ s * (q - z)`` with ``q, z in [-128, 127]``;
  the range [lo, hi] is first widened to contain 0 so that 0 (padding, ReLU) is exact.
* weights: per output channel, symmetric int8, ``w ~ s_w[oc] * q`` with ``q in [-127, 127]``,
  zero point 0, so the accumulator needs no weight-offset correction.
* bias: int32 with scale ``s_x * s_w[oc]`` (zero point 0).

An int8 x int8 convolution accumulates exactly in int32 (``acc = sum (q_x - z_x) q_w + q_b``), and
the output is ``q_y = z_y + M[oc] * acc`` with the real multiplier ``M = s_x s_w / s_y``. ``M`` is
applied in fixed point, ``M = m * 2^(e - 31)`` with a Q31 mantissa ``m in [2^30, 2^31)``::

    q_y = clamp(z_y + RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc * 2^max(e,0), m), max(-e,0)))

(gemmlowp's ``fixedpoint.h``; Jacob et al., "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference", CVPR 2018, section 2.2). The numpy functions here are
the reference the TIR kernels are checked against bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

INT8_MIN, INT8_MAX = -128, 127


def integer_range(dtype: str) -> tuple[int, int]:
    """The (lowest, highest) value of a quantized tensor of ``dtype``: uint8, else int8."""
    return (0, 255) if dtype == "uint8" else (INT8_MIN, INT8_MAX)
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class QuantParams:
    """Per-tensor affine quantization ``real = scale * (q - zero_point)`` into ``dtype``."""

    scale: float
    zero_point: int
    dtype: str = "int8"

    @property
    def qmin(self) -> int:
        return 0 if self.dtype == "uint8" else INT8_MIN

    @property
    def qmax(self) -> int:
        return 255 if self.dtype == "uint8" else INT8_MAX


def activation_qparams(lo: float, hi: float, dtype: str = "int8") -> QuantParams:
    """Asymmetric per-tensor parameters covering [lo, hi] (widened to hold 0 exactly).

    ``s = (hi - lo) / 255``, ``z = qmin - round(lo / s)``, clamped into the integer range.
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmin, qmax = integer_range(dtype)
    if hi - lo < 1e-12:
        return QuantParams(1.0, qmin if dtype == "uint8" else 0, dtype)
    scale = (hi - lo) / (qmax - qmin)
    zero_point = int(np.clip(qmin - round(lo / scale), qmin, qmax))
    return QuantParams(float(np.float32(scale)), zero_point, dtype)


def quantize_weight_per_channel(weight: np.ndarray, axis: int = 0, qmax: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel: ``s[oc] = max|w[oc]| / qmax``, ``q = round(w / s)`` in
    [-qmax, qmax] (``qmax = 63``: reduced range, 7 bits)."""
    moved = np.moveaxis(np.asarray(weight, dtype=np.float64), axis, 0)
    amax = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    scale = np.where(amax > 0, amax / float(qmax), 1.0).astype(np.float32)
    shape = [1] * moved.ndim
    shape[0] = -1
    q = np.clip(np.rint(moved / scale.astype(np.float64).reshape(shape)), -qmax, qmax).astype(np.int8)
    return np.moveaxis(q, 0, axis), scale


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """``real = m * 2^(e - 31)`` with ``|m| in [2^30, 2^31)`` (TFLite's QuantizeMultiplier).

    Returns ``(m, e)``; ``m = 0`` for a zero multiplier. A negative multiplier (PReLU slopes) keeps
    its sign in ``m``. ``|m|`` never reaches 2^31, so SaturatingRoundingDoublingHighMul's one
    overflow case (both operands INT32_MIN) cannot occur.
    """
    if real_multiplier == 0.0:
        return 0, 0
    frac, exponent = math.frexp(float(real_multiplier))
    mantissa = int(round(frac * (1 << 31)))
    if abs(mantissa) == 1 << 31:
        mantissa //= 2
        exponent += 1
    if exponent < -31:
        # Below 2^-31 every int32 accumulator rounds to 0 anyway.
        return 0, 0
    return mantissa, exponent


def quantize_multipliers(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(r)) for r in np.ravel(real)]
    return (np.array([p[0] for p in pairs], dtype=np.int32).reshape(np.shape(real)),
            np.array([p[1] for p in pairs], dtype=np.int32).reshape(np.shape(real)))


# --- numpy reference (gemmlowp fixedpoint.h semantics, int32 wrap-around like C) -------------------

def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a * b * 2 + 2^31) >> 32`` rounded to nearest (ties away from zero), saturated."""
    a = np.asarray(a, dtype=np.int32)
    b = np.asarray(b, dtype=np.int32)
    overflow = (a == b) & (a == INT32_MIN)
    ab = a.astype(np.int64) * b.astype(np.int64)
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    total = ab + nudge
    # C integer division truncates toward zero; numpy's // floors, so divide magnitudes.
    high = np.sign(total) * (np.abs(total) // np.int64(1 << 31))
    return np.where(overflow, np.int32(INT32_MAX), high.astype(np.int32))


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """``x / 2^exponent`` rounded to nearest, ties away from zero."""
    x = np.asarray(x, dtype=np.int32)
    exponent = np.asarray(exponent, dtype=np.int32)
    mask = (np.int32(1) << exponent) - np.int32(1)
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int32)
    return (x >> exponent) + (remainder > threshold).astype(np.int32)


def multiply_by_quantized_multiplier(acc: np.ndarray, mantissa: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """``acc * m * 2^(e - 31)`` rounded, in int32 arithmetic only."""
    acc = np.asarray(acc, dtype=np.int32)
    exponent = np.asarray(exponent, dtype=np.int32)
    left = np.maximum(exponent, 0)
    right = np.maximum(-exponent, 0)
    with np.errstate(over="ignore"):
        shifted = (acc.astype(np.int64) << left.astype(np.int64)).astype(np.int32)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, mantissa), right)


def requantize_reference(acc: np.ndarray, mult_pos, shift_pos, mult_neg, shift_neg, zero_point: int,
                         lo: int, hi: int, out_dtype: str = "int8", channel_axis: int = 1) -> np.ndarray:
    """The requantize epilogue of edgetvm's int8 kernels, in numpy.

    ``acc >= 0`` uses the positive multiplier, ``acc < 0`` the negative one (ReLU: 0, LeakyReLU and
    PReLU: ``alpha * M``), then ``+ z_y`` and clamp to ``[lo, hi]`` (ReLU6/Clip folded in there).
    """
    acc = np.asarray(acc, dtype=np.int32)
    shape = [1] * acc.ndim
    shape[channel_axis] = -1

    def per_channel(v):
        v = np.asarray(v, dtype=np.int32)
        return v.reshape(shape) if v.ndim == 1 and v.size > 1 else v.reshape(-1)[0] if v.size == 1 else v

    pos = multiply_by_quantized_multiplier(acc, per_channel(mult_pos), per_channel(shift_pos))
    neg = multiply_by_quantized_multiplier(acc, per_channel(mult_neg), per_channel(shift_neg))
    out = np.where(acc >= 0, pos, neg).astype(np.int64) + zero_point
    return np.clip(out, lo, hi).astype(out_dtype)


def activation_clamp(kind: str, params: QuantParams, clip: tuple[float, float] | None = None) -> tuple[int, int]:
    """The integer clamp that replaces an activation: ReLU -> [z, qmax], Clip(a, b) -> [q(a), q(b)]."""
    lo, hi = params.qmin, params.qmax
    if kind == "relu":
        lo = max(lo, params.zero_point)
    elif kind == "clip" and clip is not None:
        lo = max(lo, params.zero_point + int(round(clip[0] / params.scale)))
        hi = min(hi, params.zero_point + int(round(clip[1] / params.scale)))
    return lo, hi
