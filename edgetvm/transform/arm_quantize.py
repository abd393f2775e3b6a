"""``relax.quantize`` for ARMv7: TVM's arithmetic, with a rounding that NEON can vectorize.

TVM lowers quantize to ``clamp(round(x / scale) + zero_point)``, rounding half to even
(``nearbyint``, as onnxruntime's QuantizeLinear). ARMv7 NEON has no vector round instruction
(``vrintn`` is ARMv8) and no vector float -> int64 conversion, so LLVM calls libm or
``__aeabi_f2lz`` for every lane: the float -> int8 quantize after MobileFaceNet's float stem cost
57 instructions per element (11 M per inference). Here the clamp comes first, then the rounding is
the float adder's own::

    v = clamp(x / scale, low - z, high - z)          integers low, high: the same result as clamping after
    round(v) = bits(v + 1.5 * 2^23) - bits(1.5 * 2^23)   for |v| < 2^22

``v + 1.5 * 2^23`` lies in [2^23, 2^24), where float32 spacing is 1, so the addition itself rounds
``v`` to an integer, half to even (NEON always rounds to nearest even), and that integer sits in the
low mantissa bits. No conversion instruction at all: ``vadd.f32`` and ``vsub.i32`` on q registers.
The result is bit for bit TVM's (but for a NaN input, which TVM leaves to the hardware).

A constant scale needs no division either (ARMv7 NEON has none: LLVM issued four scalar ``vdiv.f32``
per vector, 14 cycles each, 200,704 of them after MobileFaceNet's float stem). With ``r = RN(1/s)``
computed at compile time, Markstein's correction gives the correctly rounded quotient, so the
result stays bit for bit TVM's ``x / s``::

    q  = RN(x r)
    e  = x - q s            one fused multiply-add: exact (the remainder of a faithful quotient)
    x / s rounded = RN(q + e r)   one more fused multiply-add (Markstein 1990; Muller et al.,
                                  Handbook of Floating-Point Arithmetic, Theorem 4.10)

``vmul.f32`` and two ``vfma.f32``/``vfms.f32`` on q registers per 4 lanes.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx

from ..relax_utils import bound_constant

# 1.5 * 2^23 and its bit pattern: v + MAGIC has v's rounded value in its low mantissa bits.
_MAGIC = float(3 << 22)
_MAGIC_BITS = 0x4B400000
# |v| below this: v + MAGIC stays in [2^23, 2^24), where float32 spacing is exactly 1.
ROUNDING_RANGE = float(1 << 22)


def round_half_to_even(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``round(x)`` (ties to even) as int32, for float32 ``|x| < 2^22`` (see the module docstring)."""
    shifted = x + tirx.const(_MAGIC, "float32")
    return tirx.call_intrin("int32", "tirx.reinterpret", shifted) - tirx.const(_MAGIC_BITS, "int32")


def _fma(a: tirx.PrimExpr, b: tirx.PrimExpr, c: tirx.PrimExpr) -> tirx.PrimExpr:
    """``a b + c`` with one rounding (``vfma.f32``)."""
    return tirx.call_llvm_pure_intrin("float32", "llvm.fma", a, b, c)


def clamp(x: tirx.PrimExpr, lo: tirx.PrimExpr, hi: tirx.PrimExpr) -> tirx.PrimExpr:
    """``min(max(x, lo), hi)`` as ``vmax.f32`` + ``vmin.f32``: ``llvm.minimum``/``maximum`` propagate a NaN
    as NEON does, where a compare-and-select clamp (TIR's max/min) costs two instructions each."""
    low = tirx.call_llvm_pure_intrin("float32", "llvm.maximum", x, lo)
    return tirx.call_llvm_pure_intrin("float32", "llvm.minimum", low, hi)


def divide_by_reciprocal(x: tirx.PrimExpr, scale: tirx.PrimExpr, reciprocal: tirx.PrimExpr) -> tirx.PrimExpr:
    """``RN(x / scale)`` from ``reciprocal = RN(1 / scale)`` without a division (the module docstring),
    for quotients that a quantize clamps to 8 or 16 bits: ``x`` is first clamped to ``+-2^17 scale``
    (beyond it every quotient clamps alike), so an infinite ``x`` keeps the correction finite."""
    bound = scale * tirx.const(float(1 << 17), "float32")
    x = clamp(x, -bound, bound)
    q = x * reciprocal
    remainder = _fma(-q, scale, x)
    return _fma(remainder, reciprocal, q)


def _param(tensor: te.Tensor, indices, axis: int):
    """A quantization parameter: one value, or the one of ``indices[axis]``'s channel."""
    if len(tensor.shape) == 0:
        return tensor[()]
    if len(tensor.shape) == 1 and int(tensor.shape[0]) == 1:
        return tensor[0]
    return tensor[indices[axis]]


def legalize_quantize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """``relax.quantize`` of float32 to integers of up to 16 bits as one TE kernel; anything else keeps
    TVM's lowering."""
    out_dtype = str(call.attrs.out_dtype)
    bits = int("".join(ch for ch in out_dtype if ch.isdigit()) or 0)
    # Up to 16 bits, every clamped value lies within the rounding's range.
    if "int" not in out_dtype or bits > 16 or str(call.args[0].ty.dtype) != "float32":
        return tvm.ir.Op.get("relax.quantize").get_attr("FLegalize")(bb, call)
    low, high = (0, (1 << bits) - 1) if out_dtype.startswith("u") else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    ndim = len(call.args[0].ty.shape)
    axis = int(call.attrs.axis) % ndim

    scale_value = bound_constant(call.args[1])
    reciprocal = None
    if scale_value is not None and str(scale_value.dtype) == "float32":
        # Finite, non-zero, and with a normal reciprocal: where the correction is proven.
        scale64 = np.abs(scale_value.astype(np.float64))
        if np.all(np.isfinite(scale64)) and np.all(scale64 > 0) and np.all(scale64 < 2.0 ** 125):
            reciprocal = relax.const(np.float32(1.0) / scale_value.astype(np.float32))

    def compute(data: te.Tensor, scale: te.Tensor, zero_point: te.Tensor, *recip: te.Tensor) -> te.Tensor:
        def element(*indices):
            s = _param(scale, indices, axis).astype("float32")
            if recip:
                scaled = divide_by_reciprocal(data(*indices), s, _param(recip[0], indices, axis))
            else:
                scaled = data(*indices) / s
            zero = _param(zero_point, indices, axis)
            # Clamped before rounding: low - z and high - z are integers, so the result is the same.
            lo = tirx.const(float(low), "float32") - zero.astype("float32")
            hi = tirx.const(float(high), "float32") - zero.astype("float32")
            clamped = clamp(scaled, lo, hi)
            return (round_half_to_even(clamped) + zero.astype("int32")).astype(out_dtype)

        return te.compute(data.shape, element, name="quantized")

    extra = [reciprocal] if reciprocal is not None else []
    return bb.call_te(compute, call.args[0], call.args[1], call.args[2], *extra, primfunc_name_hint="quantize")
