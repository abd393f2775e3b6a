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
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx

# 1.5 * 2^23 and its bit pattern: v + MAGIC has v's rounded value in its low mantissa bits.
_MAGIC = float(3 << 22)
_MAGIC_BITS = 0x4B400000
# |v| below this: v + MAGIC stays in [2^23, 2^24), where float32 spacing is exactly 1.
ROUNDING_RANGE = float(1 << 22)


def round_half_to_even(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``round(x)`` (ties to even) as int32, for float32 ``|x| < 2^22`` (see the module docstring)."""
    shifted = x + tirx.const(_MAGIC, "float32")
    return tirx.call_intrin("int32", "tirx.reinterpret", shifted) - tirx.const(_MAGIC_BITS, "int32")


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

    def compute(data: te.Tensor, scale: te.Tensor, zero_point: te.Tensor) -> te.Tensor:
        def element(*indices):
            scaled = data(*indices) / _param(scale, indices, axis).astype("float32")
            zero = _param(zero_point, indices, axis)
            # Clamped before rounding: low - z and high - z are integers, so the result is the same.
            lo = tirx.const(float(low), "float32") - zero.astype("float32")
            hi = tirx.const(float(high), "float32") - zero.astype("float32")
            clamped = tirx.max(tirx.min(scaled, hi), lo)
            return (round_half_to_even(clamped) + zero.astype("int32")).astype(out_dtype)

        return te.compute(data.shape, element, name="quantized")

    return bb.call_te(compute, call.args[0], call.args[1], call.args[2], primfunc_name_hint="quantize")
