"""numpy references and random cases for the channels-last int8 kernels (kernels.int8_nhwc)."""

from __future__ import annotations

import numpy as np

from edgetvm.kernels.fixed_point import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    quantize_multipliers,
    requantize_reference,
)
from edgetvm.kernels.int8_nchw import ADD_LEFT_SHIFT
from edgetvm.kernels.int8_nhwc import (REDUCED_WEIGHT_MAX, im2col_depth, only_right_shifts, pack_depthwise_weights,
                                      pack_epilogue, pack_gemm_weights)


def epilogue(rng, channels: int, negative: bool, left_shift: bool = False, zero_shift: bool = False):
    """(mult_pos, shift_pos, mult_neg, shift_neg) as the fold pass makes them; PReLU-like slopes.
    ``zero_shift``: every 4th multiplier in [0.5, 1) (exponent 0: no right shift)."""
    real = rng.uniform(0.0004, 0.004, channels)
    if left_shift:
        real[::3] *= 3000.0  # multipliers > 1: exponent > 0
    if zero_shift:
        real[::4] = rng.uniform(0.5, 0.99, real[::4].size)
    mpos, epos = quantize_multipliers(real)
    mneg, eneg = quantize_multipliers(real * rng.uniform(0.05, 0.4, channels)) if negative else (mpos, epos)
    return mpos, epos, mneg, eneg


def right_shift(left_shift: bool, mpos, epos, mneg, eneg) -> bool:
    """The kernels' ``right_shift`` as the fold pass sets it: no left shift and every exponent below 0."""
    return not left_shift and only_right_shifts([mpos, mneg], [epos, eneg])


def finish(acc, mpos, epos, mneg, eneg, *, y_zero_point, clamp, out_dtype, float_out=None):
    """The kernels' epilogue on an NHWC int64 accumulator (channels last)."""
    if float_out is not None:
        return acc.astype(np.float32) * float_out
    return requantize_reference(acc.astype(np.int32), mpos, epos, mneg, eneg, y_zero_point, clamp[0], clamp[1],
                                out_dtype, channel_axis=acc.ndim - 1)


def conv_nhwc(x_nhwc, w_ohwi, bias, strides, padding, dilation, x_zero_point):
    """``bias[o] + sum x_pad[n, i S + r D, j S + s D, c] w[o, r, s, c]`` in int64, padded with z_x."""
    pt, pl, pb, pr = padding
    x = np.pad(x_nhwc.astype(np.int64), ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=x_zero_point)
    n, h, w, _ = x.shape
    o, kh, kw, _ = w_ohwi.shape
    (sh, sw), (dh, dw) = strides, dilation
    oh, ow = (h - (kh - 1) * dh - 1) // sh + 1, (w - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((n, oh, ow, o), dtype=np.int64) + bias.astype(np.int64)
    for r in range(kh):
        for s in range(kw):
            patch = x[:, r * dh:r * dh + sh * (oh - 1) + 1:sh, s * dw:s * dw + sw * (ow - 1) + 1:sw]
            out += np.einsum("nhwc,oc->nhwo", patch, w_ohwi[:, r, s].astype(np.int64))
    return out


def depthwise_nhwc(x_nhwc, w_rsc, bias, strides, padding, dilation, x_zero_point):
    pt, pl, pb, pr = padding
    x = np.pad(x_nhwc.astype(np.int64), ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=x_zero_point)
    n, h, w, c = x.shape
    kh, kw, _ = w_rsc.shape
    (sh, sw), (dh, dw) = strides, dilation
    oh, ow = (h - (kh - 1) * dh - 1) // sh + 1, (w - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((n, oh, ow, c), dtype=np.int64) + bias.astype(np.int64)
    for r in range(kh):
        for s in range(kw):
            out += x[:, r * dh:r * dh + sh * (oh - 1) + 1:sh, s * dw:s * dw + sw * (ow - 1) + 1:sw] * w_rsc[r, s]
    return out


def add_reference(a, b, p):
    """TFLite's int8 ADD with the kernel parameters ``p`` (as make_kernel("add", ...) takes them)."""
    a_s = multiply_by_quantized_multiplier((a.astype(np.int32) - p["a_zero_point"]) << ADD_LEFT_SHIFT,
                                           np.int32(p["a_mult"][0]), np.int32(p["a_mult"][1]))
    b_s = multiply_by_quantized_multiplier((b.astype(np.int32) - p["b_zero_point"]) << ADD_LEFT_SHIFT,
                                           np.int32(p["b_mult"][0]), np.int32(p["b_mult"][1]))
    y = multiply_by_quantized_multiplier(a_s + b_s, np.int32(p["y_mult"][0]), np.int32(p["y_mult"][1]))
    return np.clip(y.astype(np.int64) + p["y_zero_point"], *p["clamp"]).astype(p["out_dtype"])


def add_params(a_scale=0.05, b_scale=0.03, y_scale=0.07, clamp=(-128, 127)):
    twice_max = 2 * max(a_scale, b_scale)
    return {"a_zero_point": 3, "a_mult": list(quantize_multiplier(a_scale / twice_max)), "b_zero_point": -5,
            "b_mult": list(quantize_multiplier(b_scale / twice_max)), "y_zero_point": 2,
            "y_mult": list(quantize_multiplier(twice_max / ((1 << 20) * y_scale))), "clamp": list(clamp),
            "out_dtype": "int8"}


def cases(rng):
    """[(kind, params, inputs, constants, expected)] covering the kernels' shapes and epilogues: pixel
    tails, strides, padding, dilation, im2col from NCHW, PReLU/ReLU/full clamps, uint8 and float outputs."""
    out = []

    def conv1x1(h, w, c, o, negative, clamp, out_dtype="int8", float_out=False, left_shift=False, reduced=False,
                x=None, wq=None, zero_shift=False):
        w_max = REDUCED_WEIGHT_MAX if reduced else 127
        x = rng.integers(-128, 128, (1, h, w, c)).astype(np.int8) if x is None else x
        wq = rng.integers(-w_max, w_max + 1, (o, c)).astype(np.int8) if wq is None else wq
        bias = rng.integers(-3000, 3000, o).astype(np.int32) // (300 if zero_shift else 1)
        mpos, epos, mneg, eneg = epilogue(rng, o, negative, left_shift, zero_shift)
        scale = rng.uniform(1e-4, 1e-3, o).astype(np.float32)
        acc = conv_nhwc(x, wq[:, None, None, :], bias, (1, 1), (0, 0, 0, 0), (1, 1), 0)
        expected = finish(acc, mpos, epos, mneg, eneg, y_zero_point=5, clamp=clamp, out_dtype=out_dtype,
                          float_out=scale if float_out else None)
        consts = [pack_gemm_weights(wq, reduced)] + ([bias, scale] if float_out else
                                            [pack_epilogue(bias, mpos, epos, *((mneg, eneg) if negative else ()))])
        params = {"x_shape": [1, h, w, c], "channels_out": o, "out_dtype": out_dtype, "y_zero_point": 5,
                  "clamp": list(clamp), "negative": negative, "float_out": float_out, "left_shift": left_shift,
                  "reduced": reduced, "right_shift": right_shift(left_shift, mpos, epos, mneg, eneg)}
        out.append(("conv1x1", params, [x], consts, expected))

    conv1x1(3, 5, 32, 8, True, (-128, 127))                       # 15 pixels: a pixel tail
    conv1x1(4, 4, 16, 12, False, (-3, 127), left_shift=True)      # ReLU clamp, multipliers > 1
    conv1x1(2, 3, 48, 4, False, (0, 255), out_dtype="uint8")
    conv1x1(1, 1, 64, 8, False, (0, 0), float_out=True)
    conv1x1(2, 3, 16, 16, True, (-128, 127))                      # one 16-deep step, two tiles of 8
    # The paired tile's fused requantize in each of its spellings: left shifts with a ReLU clamp,
    # uint8 with a narrower clamp, PReLU with left shifts.
    conv1x1(3, 3, 32, 16, False, (-3, 127), left_shift=True)
    conv1x1(2, 2, 16, 8, False, (4, 250), out_dtype="uint8")
    conv1x1(1, 3, 32, 8, True, (-100, 90), left_shift=True)
    # A depth of 16 k + 8 (MobileNetV2's 24 channels): the microkernel's 8-deep tail step.
    conv1x1(3, 3, 24, 16, True, (-128, 127))
    conv1x1(2, 2, 40, 8, False, (4, 250), out_dtype="uint8", left_shift=True)
    conv1x1(1, 3, 24, 8, False, (0, 0), float_out=True)
    # Reduced-range weights ([-63, 63]): the microkernel's 16-deep step with 4 products per int16
    # lane, its 8-deep tail, every epilogue; and the int16 lanes' extremes (x = -128 against
    # w = +-63 four times: +-32256).
    conv1x1(3, 5, 32, 8, True, (-128, 127), reduced=True)
    conv1x1(3, 3, 24, 16, True, (-128, 127), reduced=True)
    conv1x1(2, 2, 40, 8, False, (4, 250), out_dtype="uint8", left_shift=True, reduced=True)
    conv1x1(3, 3, 48, 16, False, (-3, 127), left_shift=True, reduced=True)
    conv1x1(1, 3, 24, 8, False, (0, 0), float_out=True, reduced=True)
    conv1x1(1, 3, 64, 8, False, (0, 0), float_out=True, reduced=True)
    # Multipliers in [0.5, 1) beside small ones (exponent 0: no right shift): the fixup gated by the shift.
    # Small inputs and weights keep those outputs inside int8, where a wrong fixup would show.
    conv1x1(3, 3, 16, 16, True, (-128, 127), reduced=True, zero_shift=True,
            x=rng.integers(-9, 10, (1, 3, 3, 16)).astype(np.int8), wq=rng.integers(-3, 4, (16, 16)).astype(np.int8))
    conv1x1(2, 3, 32, 8, False, (-128, 127), zero_shift=True, x=rng.integers(-9, 10, (1, 2, 3, 32)).astype(np.int8),
            wq=rng.integers(-3, 4, (8, 32)).astype(np.int8))
    extreme_w = np.repeat(np.where(np.arange(8) % 2, -REDUCED_WEIGHT_MAX, REDUCED_WEIGHT_MAX)[:, None], 32, axis=1)
    conv1x1(1, 3, 32, 8, False, (0, 0), float_out=True, reduced=True, x=np.full((1, 1, 3, 32), -128, np.int8),
            wq=extreme_w.astype(np.int8))

    def im2col(layout, h, c, o, k, stride, pad, dil, reduced=False):
        x_nchw = rng.integers(-128, 128, (1, c, h, h + 1)).astype(np.int8)
        x = x_nchw if layout == "NCHW" else np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
        w_max = REDUCED_WEIGHT_MAX if reduced else 127
        w_ohwi = rng.integers(-w_max, w_max + 1, (o, k, k, c)).astype(np.int8)
        depth = im2col_depth((k, k), c)
        w_cols = np.zeros((o, depth), dtype=np.int8)
        w_cols[:, :k * k * c] = w_ohwi.reshape(o, -1)
        bias = rng.integers(-3000, 3000, o).astype(np.int32)
        mpos, epos, mneg, eneg = epilogue(rng, o, True)
        acc = conv_nhwc(x_nchw.transpose(0, 2, 3, 1), w_ohwi, bias, (stride, stride), (pad,) * 4, (dil, dil), -9)
        expected = finish(acc, mpos, epos, mneg, eneg, y_zero_point=-4, clamp=(-128, 127), out_dtype="int8")
        params = {"x_shape": list(x.shape), "x_layout": layout, "channels_out": o, "kernel_size": [k, k],
                  "strides": [stride, stride], "padding": [pad] * 4, "dilation": [dil, dil], "x_zero_point": -9,
                  "out_dtype": "int8", "y_zero_point": -4, "clamp": [-128, 127], "negative": True,
                  "float_out": False, "left_shift": False, "reduced": reduced,
                  "right_shift": right_shift(False, mpos, epos, mneg, eneg)}
        out.append(("im2col", params, [x], [pack_gemm_weights(w_cols, reduced),
                                            pack_epilogue(bias, mpos, epos, mneg, eneg)], expected))

    im2col("NCHW", 9, 3, 8, 3, 2, 1, 1)   # the stem of a face network
    im2col("NHWC", 6, 5, 4, 3, 1, 2, 2)
    im2col("NHWC", 7, 16, 8, 3, 2, 1, 1)  # rows of 8 channels copied as vectors
    im2col("NHWC", 7, 16, 8, 3, 2, 1, 1, reduced=True)
    im2col("NCHW", 9, 3, 8, 3, 2, 1, 1, reduced=True)

    def depthwise(h, c, k, stride, pad, dil, negative, clamp, float_out=False, left_shift=False, out_dtype="int8",
                  y_zero_point=1, reduced=False, x=None, w=None, zero_shift=False):
        w_max = REDUCED_WEIGHT_MAX if reduced else 127
        x = rng.integers(-128, 128, (1, h, h + 2, c)).astype(np.int8) if x is None else x
        w = rng.integers(-w_max, w_max + 1, (k, k, c)).astype(np.int8) if w is None else w
        bias = rng.integers(-3000, 3000, c).astype(np.int32) // (300 if zero_shift else 1)
        mpos, epos, mneg, eneg = epilogue(rng, c, negative, left_shift, zero_shift)
        scale = rng.uniform(1e-4, 1e-3, c).astype(np.float32)
        acc = depthwise_nhwc(x, w, bias, (stride, stride), (pad,) * 4, (dil, dil), 7)
        expected = finish(acc, mpos, epos, mneg, eneg, y_zero_point=y_zero_point, clamp=clamp, out_dtype=out_dtype,
                          float_out=scale if float_out else None)
        consts = [pack_depthwise_weights(w)] + ([bias, scale] if float_out else
                                                [pack_epilogue(bias, mpos, epos, *((mneg, eneg) if negative else ()))])
        params = {"x_shape": [1, h, h + 2, c], "kernel_size": [k, k], "strides": [stride, stride],
                  "padding": [pad] * 4, "dilation": [dil, dil], "x_zero_point": 7, "out_dtype": out_dtype,
                  "y_zero_point": y_zero_point, "clamp": list(clamp), "negative": negative, "float_out": float_out,
                  "left_shift": left_shift, "reduced": reduced,
                  "right_shift": right_shift(left_shift, mpos, epos, mneg, eneg)}
        out.append(("depthwise", params, [x], consts, expected))

    # 3x3 (the NEON microkernel on ARM, dilation 1): output rows of 4, 5 and 8 pixels (groups of 3 and
    # 1 or 2 left), strides 1 and 2, no padding, every epilogue spelling; dilated (TIR on ARM too).
    depthwise(7, 16, 3, 2, 1, 1, True, (-128, 127))
    depthwise(6, 8, 3, 1, 2, 2, False, (-20, 90))
    depthwise(5, 24, 3, 1, 1, 1, True, (-100, 90), left_shift=True)
    depthwise(6, 8, 3, 1, 0, 1, False, (-3, 127), left_shift=True, y_zero_point=-3)
    depthwise(4, 16, 3, 2, 0, 1, False, (4, 250), out_dtype="uint8", y_zero_point=130)
    depthwise(5, 8, 5, 1, 0, 1, False, (0, 0), float_out=True)   # a global depthwise: 5x5 on 5x5
    depthwise(6, 8, 5, 2, 2, 1, True, (-128, 127))
    # Reduced-range weights: the 3x3 microkernel's groups of 4 taps per int16 product, each epilogue;
    # then x = -128 against w = +-63 (4 taps: +-32256 in an int16 lane).
    depthwise(7, 16, 3, 2, 1, 1, True, (-128, 127), reduced=True)
    depthwise(5, 24, 3, 1, 1, 1, True, (-100, 90), left_shift=True, reduced=True)
    depthwise(6, 8, 3, 1, 0, 1, False, (-3, 127), left_shift=True, y_zero_point=-3, reduced=True)
    depthwise(4, 16, 3, 2, 0, 1, False, (4, 250), out_dtype="uint8", y_zero_point=130, reduced=True)
    depthwise(5, 16, 3, 1, 1, 1, False, (-128, 127), reduced=True, zero_shift=True,
              x=rng.integers(-9, 10, (1, 5, 7, 16)).astype(np.int8), w=rng.integers(-3, 4, (3, 3, 16)).astype(np.int8))
    extreme = np.where(np.arange(8) % 2, -REDUCED_WEIGHT_MAX, REDUCED_WEIGHT_MAX).astype(np.int8)
    depthwise(4, 8, 3, 1, 0, 1, False, (-128, 127), reduced=True, x=np.full((1, 4, 6, 8), -128, np.int8),
              w=np.broadcast_to(extreme, (3, 3, 8)).copy())

    shape = [1, 3, 5, 8]
    a = rng.integers(-128, 128, shape).astype(np.int8)
    b = rng.integers(-128, 128, shape).astype(np.int8)
    for clamp in ((-128, 127), (2, 127)):
        p = add_params(clamp=clamp)
        out.append(("add", {"shape": shape, **p}, [a, b], [], add_reference(a, b, p)))
    # Equal input scales: both inputs' multipliers exactly 0.5 (the kernel then shifts instead).
    p = add_params(a_scale=0.04, b_scale=0.04)
    out.append(("add", {"shape": shape, **p}, [a, b], [], add_reference(a, b, p)))
    return out
