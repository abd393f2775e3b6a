"""Integer operators the int8 passes emit, as TE compute definitions (lowered with ``call_te``).

Every kernel ends in the same requantize epilogue (``kernels.fixed_point``), so its output is
bit-exact against ``kernels.fixed_point.requantize_reference``. Block names are fixed
(``int8_pad``, ``int8_conv2d_acc``, ``int8_dense_acc``, ``int8_requantize``, ``int8_add``) because
``edgetvm.schedules.int8`` finds the kernels by them.

Products are formed in int16: ``|q_x| <= 255`` (uint8) or 128 and ``|q_w| <= 128``, so every
product fits in 16 bits and the multiply maps to NEON's widening ``vmull.s8``/``vmlal.s8`` class
instead of a 32-bit multiply per lane. With ``pair_products`` (weights in [-127, 127] and int8
inputs, the case for weights edgetvm quantizes itself) two products are summed in int16 before
widening, ``|a0 b0 + a1 b1| <= 2 * 128 * 127 < 2^15``, halving the widening adds.
"""

from __future__ import annotations

import tvm
from tvm import te, tirx

SRDHM_NUDGE_POS = 1 << 30
SRDHM_NUDGE_NEG = 1 - (1 << 30)


def _i32(value) -> tirx.PrimExpr:
    return tirx.const(int(value), "int32")


def multiply_by_quantized_multiplier(acc: tirx.PrimExpr, mantissa: tirx.PrimExpr, exponent: tirx.PrimExpr) -> tirx.PrimExpr:
    """TIR twin of ``kernels.fixed_point.multiply_by_quantized_multiplier`` (int32 in, int32 out).

    The saturating case of SaturatingRoundingDoublingHighMul (both operands INT32_MIN) is left out:
    ``quantize_multiplier`` never produces a mantissa of INT32_MIN.
    """
    ty = getattr(acc, "ty", None)  # a TE tensor element has none: a scalar
    lanes = 1 if ty is None else tvm.runtime.DataType(str(ty)).lanes  # int32 or an int32xN vector

    def const(value, dtype="int32"):
        scalar = tirx.const(int(value), dtype)
        return scalar if lanes == 1 else tirx.Broadcast(scalar, lanes)

    int64 = "int64" if lanes == 1 else f"int64x{lanes}"
    left = tirx.max(exponent, const(0))
    right = tirx.max(const(0) - exponent, const(0))
    product = (acc << left).astype(int64) * mantissa.astype(int64)
    nudge = tirx.Select(product >= const(0, "int64"), const(SRDHM_NUDGE_POS, "int64"), const(SRDHM_NUDGE_NEG, "int64"))
    high = tirx.truncdiv(product + nudge, const(1 << 31, "int64")).astype("int32" if lanes == 1 else f"int32x{lanes}")
    mask = (const(1) << right) - const(1)
    threshold = (mask >> const(1)) + tirx.Select(high < const(0), const(1), const(0))
    return (high >> right) + tirx.Select((high & mask) > threshold, const(1), const(0))


def _at(tensor: te.Tensor | None, index):
    return None if tensor is None else tensor[index]


def _requantize_value(acc, mpos, epos, mneg, eneg, zero_point: int, lo: int, hi: int, out_dtype: str):
    """``clamp(z + M acc)``; a second multiplier for ``acc < 0`` only when the kernel has one."""
    scaled = multiply_by_quantized_multiplier(acc, mpos, epos)
    if mneg is not None:
        scaled = tirx.Select(acc >= _i32(0), scaled, multiply_by_quantized_multiplier(acc, mneg, eneg))
    return tirx.max(tirx.min(scaled + _i32(zero_point), _i32(hi)), _i32(lo)).astype(out_dtype)


def int8_conv2d_requantize(x: te.Tensor, w: te.Tensor, bias: te.Tensor, mpos: te.Tensor, epos: te.Tensor,
                           mneg: te.Tensor | None = None, eneg: te.Tensor | None = None, *, strides, padding, dilation, groups: int,
                           x_zero_point: int, y_zero_point: int, clamp: tuple[int, int], out_dtype: str,
                           pair_products: bool, out_scale: te.Tensor | None = None) -> te.Tensor:
    """NCHW conv2d on quantized data, padded with the input zero point, then requantized.

    ``acc[n, o, y, x] = bias[o] + sum_{c, r, s} q_x_pad[n, g(o) C_g + c, y S_h + r D_h, x S_w + s D_w] q_w[o, c, r, s]``
    where ``bias`` already holds ``round(b / (s_x s_w[o])) - z_x sum q_w[o]`` (the zero-point
    correction: padding with ``z_x`` makes ``sum (q_x - z_x) q_w = sum q_x q_w - z_x sum q_w`` exact
    at the borders too).

    With ``out_scale`` (a float32 per-channel ``s_x s_w``) the epilogue dequantizes instead:
    ``y = float(acc) * out_scale[o]`` (a chain whose output only float ops consume, e.g. detector
    heads: an int8 output would round box offsets to 256 levels).
    """
    n_, c_, h_, w_ = (int(d) for d in x.shape)
    oc, icg, kh, kw = (int(d) for d in w.shape)
    pt, pl, pb, pr = (int(p) for p in padding)
    sh, sw = (int(s) for s in strides)
    dh, dw = (int(d) for d in dilation)
    oh = (h_ + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w_ + pl + pr - (kw - 1) * dw - 1) // sw + 1
    ocg = oc // groups
    zero = tirx.const(x_zero_point, x.dtype)
    if pt == pl == pb == pr == 0:
        pad = x  # no copy for the unpadded (1x1) convolutions
    else:
        pad = te.compute(
            (n_, c_, h_ + pt + pb, w_ + pl + pr),
            lambda n, c, y, xx: tirx.if_then_else(
                tirx.all(y >= pt, y < h_ + pt, xx >= pl, xx < w_ + pl), x[n, c, y - pt, xx - pl], zero),
            name="int8_pad",
        )
    rh = te.reduce_axis((0, kh), name="rh")
    rw = te.reduce_axis((0, kw), name="rw")

    def product(n, o, y, xx, c, r, s):
        return (pad[n, (o // ocg) * icg + c, y * sh + r * dh, xx * sw + s * dw].astype("int16")
                * w[o, c, r, s].astype("int16"))

    if pair_products and icg % 2 == 0:
        rc = te.reduce_axis((0, icg // 2), name="rc")
        acc = te.compute(
            (n_, oc, oh, ow),
            lambda n, o, y, xx: te.sum(
                (product(n, o, y, xx, 2 * rc, rh, rw) + product(n, o, y, xx, 2 * rc + 1, rh, rw)).astype("int32"),
                axis=[rc, rh, rw]),
            name="int8_conv2d_acc",
        )
    else:
        rc = te.reduce_axis((0, icg), name="rc")
        acc = te.compute(
            (n_, oc, oh, ow),
            lambda n, o, y, xx: te.sum(product(n, o, y, xx, rc, rh, rw).astype("int32"), axis=[rc, rh, rw]),
            name="int8_conv2d_acc",
        )
    lo, hi = clamp
    if out_scale is not None:
        return te.compute((n_, oc, oh, ow),
                          lambda n, o, y, xx: (acc[n, o, y, xx] + bias[o]).astype("float32") * out_scale[o],
                          name="int8_requantize")
    return te.compute(
        (n_, oc, oh, ow),
        lambda n, o, y, xx: _requantize_value(acc[n, o, y, xx] + bias[o], mpos[o], epos[o], _at(mneg, o), _at(eneg, o),
                                              y_zero_point, lo, hi, out_dtype),
        name="int8_requantize",
    )


def int8_dense_requantize(x: te.Tensor, w_t: te.Tensor, bias: te.Tensor, mpos: te.Tensor, epos: te.Tensor,
                          mneg: te.Tensor | None = None, eneg: te.Tensor | None = None, *, y_zero_point: int, clamp: tuple[int, int],
                          out_dtype: str, pair_products: bool, out_scale: te.Tensor | None = None) -> te.Tensor:
    """``acc[n, m] = bias[m] + sum_k q_x[n, k] q_wT[k, m]`` (weights stored K x M so that the output
    channel is the contiguous, vectorized axis), then requantized per output channel ``m``."""
    n_, k_ = (int(d) for d in x.shape)
    m_ = int(w_t.shape[1])

    def product(n, m, k):
        return x[n, k].astype("int16") * w_t[k, m].astype("int16")

    if pair_products and k_ % 2 == 0:
        rk = te.reduce_axis((0, k_ // 2), name="rk")
        acc = te.compute(
            (n_, m_),
            lambda n, m: te.sum((product(n, m, 2 * rk) + product(n, m, 2 * rk + 1)).astype("int32"), axis=rk),
            name="int8_dense_acc",
        )
    else:
        rk = te.reduce_axis((0, k_), name="rk")
        acc = te.compute((n_, m_), lambda n, m: te.sum(product(n, m, rk).astype("int32"), axis=rk),
                         name="int8_dense_acc")
    lo, hi = clamp
    if out_scale is not None:
        return te.compute((n_, m_), lambda n, m: (acc[n, m] + bias[m]).astype("float32") * out_scale[m],
                          name="int8_requantize")
    return te.compute(
        (n_, m_),
        lambda n, m: _requantize_value(acc[n, m] + bias[m], mpos[m], epos[m], _at(mneg, m), _at(eneg, m),
                                       y_zero_point, lo, hi, out_dtype),
        name="int8_requantize",
    )


def int8_conv2d_dequantize(x: te.Tensor, w: te.Tensor, bias: te.Tensor, out_scale: te.Tensor, *, strides, padding,
                           dilation, groups: int, x_zero_point: int, pair_products: bool) -> te.Tensor:
    """int8 conv2d with a float32 output ``float(acc + bias) * out_scale[o]``."""
    return int8_conv2d_requantize(x, w, bias, None, None, strides=strides, padding=padding, dilation=dilation,
                                  groups=groups, x_zero_point=x_zero_point, y_zero_point=0, clamp=(0, 0),
                                  out_dtype="float32", pair_products=pair_products, out_scale=out_scale)


def int8_dense_dequantize(x: te.Tensor, w_t: te.Tensor, bias: te.Tensor, out_scale: te.Tensor, *,
                          pair_products: bool) -> te.Tensor:
    """int8 dense with a float32 output ``float(acc + bias) * out_scale[m]``."""
    return int8_dense_requantize(x, w_t, bias, None, None, y_zero_point=0, clamp=(0, 0), out_dtype="float32",
                                 pair_products=pair_products, out_scale=out_scale)


def int8_weight_dense(x: te.Tensor, w_t: te.Tensor, w_scale: te.Tensor, bias: te.Tensor) -> te.Tensor:
    """Weight-only int8 dense: ``y[n, m] = s_w[m] sum_k x[n, k] float(q_wT[k, m]) + b[m]``, float input.

    For the classifier/embedding layer, whose long input vector (SFace: 50176 values) would lose the
    most to one per-tensor activation scale; its weights still shrink 4x.
    """
    n_, k_ = (int(d) for d in x.shape)
    m_ = int(w_t.shape[1])
    rk = te.reduce_axis((0, k_), name="rk")
    acc = te.compute((n_, m_), lambda n, m: te.sum(x[n, rk] * w_t[rk, m].astype("float32"), axis=rk),
                     name="int8_dense_acc")
    return te.compute((n_, m_), lambda n, m: acc[n, m] * w_scale[m] + bias[m], name="int8_requantize")


# TFLite's int8 ADD: both inputs are brought to a common scale with 20 bits of headroom first, so
# each rescale keeps the rounding error far below one output step.
ADD_LEFT_SHIFT = 20


def int8_add_requantize(a: te.Tensor, b: te.Tensor, *, a_zero_point: int, a_mult: tuple[int, int],
                        b_zero_point: int, b_mult: tuple[int, int], y_zero_point: int, y_mult: tuple[int, int],
                        clamp: tuple[int, int], out_dtype: str) -> te.Tensor:
    """``q_y = z_y + M_y (M_a (q_a - z_a) 2^20 + M_b (q_b - z_b) 2^20)`` with
    ``M_a = s_a / 2 max(s_a, s_b)``, ``M_b = s_b / 2 max(s_a, s_b)``, ``M_y = 2 max(s_a, s_b) / (2^20 s_y)``;
    ``b`` broadcasts numpy-style against ``a``."""
    shape = [int(d) for d in a.shape]
    b_shape = [int(d) for d in b.shape]
    offset = len(shape) - len(b_shape)
    lo, hi = clamp

    def b_index(idx):
        return [idx[offset + i] if b_shape[i] != 1 else 0 for i in range(len(b_shape))]

    # Three stages, not one expression: the fixed-point multiply repeats its argument several times,
    # so nesting it three deep would blow the expression up (and TE's lowering with it).
    def rescaled(tensor, index, zero_point, mult, name):
        return te.compute(shape, lambda *idx: multiply_by_quantized_multiplier(
            (tensor[index(idx)].astype("int32") - _i32(zero_point)) << _i32(ADD_LEFT_SHIFT), _i32(mult[0]),
            _i32(mult[1])), name=name)

    a_scaled = rescaled(a, lambda idx: tuple(idx), a_zero_point, a_mult, "int8_add_lhs")
    b_scaled = rescaled(b, lambda idx: tuple(b_index(idx)), b_zero_point, b_mult, "int8_add_rhs")

    def compute(*idx):
        value = multiply_by_quantized_multiplier(a_scaled[idx] + b_scaled[idx], _i32(y_mult[0]),
                                                 _i32(y_mult[1])) + _i32(y_zero_point)
        return tirx.max(tirx.min(value, _i32(hi)), _i32(lo)).astype(out_dtype)

    return te.compute(shape, compute, name="int8_add")


def int8_requantize_tensor(q: te.Tensor, *, in_zero_point: int, mult: tuple[int, int], out_zero_point: int,
                           clamp: tuple[int, int], out_dtype: str) -> te.Tensor:
    """One scale change ``q_y = z_y + M (q - z_q)``, ``M = s_q / s_y``: what two consecutive
    (dequantize, quantize) pairs with different parameters fold into."""
    lo, hi = clamp

    def compute(*idx):
        value = multiply_by_quantized_multiplier(q[idx].astype("int32") - _i32(in_zero_point), _i32(mult[0]),
                                                 _i32(mult[1])) + _i32(out_zero_point)
        return tirx.max(tirx.min(value, _i32(hi)), _i32(lo)).astype(out_dtype)

    return te.compute([int(d) for d in q.shape], compute, name="int8_requantize_tensor")

