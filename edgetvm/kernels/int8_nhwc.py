"""Channels-last int8 kernels written directly in TIR, with a NEON or a portable microkernel.

``FoldQuantScales`` emits these for the convolutions that dominate the face models (1x1, depthwise,
and dense KxK through im2col; int8 activations, weights in [-127, 127], the GEMM faster for weights in
[-63, 63]: ``REDUCED_WEIGHT_MAX``) and for the residual ADD
between them; the activations between two of them stay NHWC, so one load brings neighbouring input
channels. The kernels are written with ``isa="portable"`` (integer vector arithmetic, any LLVM
target) and ``schedules.int8`` writes them again for the target: ``isa="neon"`` for ARM, ``"avx2"``
for x86 cores that have it (the GEMM with ``vpmaddwd``). Every spelling computes
the same integers: every sum is exact, and the requantize matches
``kernels.fixed_point.requantize_reference`` bit for bit.

1x1 convolution, a GEMM ``acc[p, o] = bias[o] + sum_c q_x[p, c] q_w[o, c]`` over pixels ``p``
(``_gemm_paired``, 8 output channels per tile). Per 8 input channels ``d`` and a pair of output
channels (m, m')::

    vld1.32    {d_lo[]}, x[d:d+4]             both halves: x[d:d+4]
    vmull.s8   q_p, d_lo, [w_m[d:d+4], w_m'[d:d+4]]          int16 lanes: x[k] w[k]
    vmlal.s8   q_p, d_hi, [w_m[d+4:d+8], w_m'[d+4:d+8]]      ... + x[4+k] w[4+k]  (|2 * 128 * 127| < 2^15)
    vpadal.s16 q_acc, q_p                     int32 lanes (m, m, m', m') += adjacent pairs

16 multiply-adds in three instructions (fp32 NEON: 4 in one ``vmla.f32``); at the end one ``vpadd``
per accumulator gives the pair's two sums. Measured alternatives (instruction counts under qemu):
one channel per accumulator with 4 channels x 2 pixels per tile needs 8 accumulators, and LLVM
issues all 8 multiplies before the first ``vpadal`` and spills; the paired tile needs 12 q
registers even then. 4 output channels per tile (``_gemm_rows``, 16 depth per step) when
``O % 8 != 0``.

Depthwise convolution: 8 channels per vector, taps in pairs ``vmull.s8`` + ``vmlal.s8``, widened
into two int32x4 accumulators with ``vaddw.s16``. Padding is a copy of the input filled with the
input zero point (the zero-point correction is in the bias, see ``kernels.int8_nchw``). On ARM a
3x3 window with an int8/uint8 output runs the assembly microkernel ``kernels.neon_q8_dwconv``
(3 pixels per step, requantized in its registers).

Requantize (per int32x4, TFLite's NEON spelling of gemmlowp's fixed point)::

    x     = acc << max(e, 0)
    high  = vqrdmulh(x, m)                      SaturatingRoundingDoublingHighMul, exactly
    fixup = (high & min(e, 0)) >> 31            -1 where high < 0 and there is a right shift
    y     = vrshl(vqadd(high, fixup), min(e,0)) RoundingDivideByPOT: ties away from zero

then ``+ z_y`` (saturating), ``vqmovn`` to int16 and int8 (the full-range clamp for free), a
narrower clamp (ReLU, ReLU6) on the 8-bit lanes. ``vqrdmulh`` rounds half up, which is what
gemmlowp's ``(ab + nudge) / 2^31`` with ``nudge = ab >= 0 ? 2^30 : 1 - 2^30`` and truncating
division gives; tests/quantization checks ties of both roundings under qemu.
"""

from __future__ import annotations

import json

import numpy as np

import tvm
from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script.builder import ir as T

from .fixed_point import integer_range
from .int8_nchw import ADD_LEFT_SHIFT, multiply_by_quantized_multiplier

# The func attr that marks these kernels and records how to write them again (schedules.int8).
KERNEL_ATTR = "edgetvm.int8_nhwc"
# Register tile of ``_gemm_rows``: output channels (one int32x4 of results) x pixels. One pixel: with
# two, LLVM spills the 8 accumulators (measured: 20% more instructions).
GEMM_CHANNELS = 4
GEMM_PIXELS = 1
# Output channels of a tile of the paired microkernel (two per accumulator).
PAIRED_CHANNELS = 8
# Input channels per microkernel step (two int8x8 d registers).
GEMM_DEPTH = 16
# Largest |weight| of the reduced-range GEMM tile: 4 int8 x weight products then fit one int16 lane
# (4 * 128 * 63 = 32256 < 2^15), against 2 for full-range weights (2 * 128 * 127).
REDUCED_WEIGHT_MAX = 63
DEPTHWISE_LANES = 8
# The ARMv7 microkernel of the paired GEMM (2 pixels x 8 channels), defined in inline assembly by
# ``backends.neon_microkernels`` (the assembly: ``kernels.neon_q8_gemm``) when the kernels' LLVM module is built for ARM.
NEON_Q8_GEMM_2X8 = "edgetvm_neon_q8_gemm_2x8"
# The ARMv7 3x3 depthwise microkernel (``kernels.neon_q8_dwconv``) and the output pixels of one of its
# groups (its 6 int32x4 accumulators; the requantize takes the other 10 q registers).
NEON_Q8_DWCONV3X3 = "edgetvm_neon_q8_dwconv3x3"
DWCONV_GROUP_PIXELS = 3


def neon_q8_gemm_name(tail: bool = False, reduced: bool = False) -> str:
    """The 2x8 microkernel (int32 sums out); ``tail``: for a depth of 16 k + 8 (one 8-deep step more);
    ``reduced``: for weights in [-63, 63] (``REDUCED_WEIGHT_MAX``, 4 products per int16 lane)."""
    return f"{NEON_Q8_GEMM_2X8}{'_w7' if reduced else ''}{'_tail8' if tail else ''}"


def neon_q8_gemm_requantize_name(negative: bool, left_shift: bool, unsigned: bool, tail: bool = False,
                                 reduced: bool = False, clamped: bool = True, right_shift: bool = False) -> str:
    """The 2x8 microkernel that also requantizes and stores its tile (``kernels.neon_q8_gemm``): one per
    epilogue shape (PReLU/LeakyReLU multipliers, left shifts, only right shifts: ``right_shift``, uint8
    output, a clamp narrower than the output type: ``clamped``), depth (``tail``) and weight range
    (``reduced``)."""
    assert not (left_shift and right_shift)
    return (f"{NEON_Q8_GEMM_2X8}{'_w7' if reduced else ''}_requantize{'_negative' if negative else ''}"
            f"{'_left_shift' if left_shift else ''}{'_right_shift' if right_shift else ''}{'_u8' if unsigned else ''}"
            f"{'_tail8' if tail else ''}{'' if clamped else '_unclamped'}")


def narrower_clamp(clamp, out_dtype: str) -> bool:
    """Whether ``clamp`` (lo, hi) cuts into ``out_dtype``'s range (ReLU, ReLU6): else the saturating
    narrows clamp for free and the kernel needs no ``vmax``/``vmin``."""
    type_lo, type_hi = integer_range(out_dtype)
    return int(clamp[0]) > type_lo or int(clamp[1]) < type_hi


def neon_q8_dwconv_name(pixels: int, negative: bool, left_shift: bool, unsigned: bool, reduced: bool = False,
                        clamped: bool = True, right_shift: bool = False) -> str:
    """The 3x3 depthwise microkernel of groups of ``pixels`` output pixels x 8 channels that requantizes
    and stores them too (``kernels.neon_q8_dwconv``), one per epilogue shape (``clamped``: a clamp
    narrower than the output type, ``narrower_clamp``; ``right_shift``: only right shifts) and weight
    range (``reduced``: in [-63, 63], 4 taps per int16 product)."""
    assert not (left_shift and right_shift)
    return (f"{NEON_Q8_DWCONV3X3}{'_w7' if reduced else ''}_p{pixels}{'_negative' if negative else ''}"
            f"{'_left_shift' if left_shift else ''}{'_right_shift' if right_shift else ''}{'_u8' if unsigned else ''}"
            f"{'' if clamped else '_unclamped'}")


def only_right_shifts(mantissas, exponents) -> bool:
    """Whether every nonzero multiplier ``m 2^(e - 31)`` has ``e < 0`` (a right shift of at least 1): the
    NEON requantize's RoundingDivideByPOT fixup then needs no gate by the shift (``right_shift``)."""
    m, e = np.asarray(mantissas).ravel(), np.asarray(exponents).ravel()
    return bool(np.all((e < 0) | (m == 0)))


def _ramp(base, lanes: int) -> tirx.PrimExpr:
    return tirx.Ramp(base, 1, lanes)


def _i32(value, lanes: int = 1) -> tirx.PrimExpr:
    scalar = tirx.const(int(value), "int32")
    return scalar if lanes == 1 else tirx.Broadcast(scalar, lanes)


def _shuffle(vectors, indices) -> tirx.PrimExpr:
    return tirx.Shuffle(list(vectors), [tirx.const(i, "int32") for i in indices])


class IntegerVectorOps:
    """The vector operations of the kernels: NEON intrinsics (``isa="neon"``) or portable TIR (also for
    ``"avx2"``, whose GEMM has its own spelling).

    Each method documents the lane semantics; the portable spelling computes exactly that.
    """

    ISAS = ("portable", "neon", "avx2")

    def __init__(self, isa: str):
        assert isa in self.ISAS, isa
        self.isa = isa
        self.neon = isa == "neon"

    def _intrin(self, dtype: str, name: str, *args) -> tirx.PrimExpr:
        return tirx.call_llvm_pure_intrin(dtype, name, *args)

    def widening_mul(self, a, b) -> tirx.PrimExpr:
        """int8x8 x int8x8 -> int16x8, lane by lane (``vmull.s8``; an add of two is ``vmlal.s8``)."""
        if self.neon:
            return self._intrin("int16x8", "llvm.arm.neon.vmulls", a, b)
        return a.astype("int16x8") * b.astype("int16x8")

    def pairwise_accumulate(self, acc, products) -> tirx.PrimExpr:
        """``acc[i] += products[2i] + products[2i+1]`` in int32 (``vpadal.s16``)."""
        if self.neon:
            return self._intrin("int32x4", "llvm.arm.neon.vpadals", acc, products)
        return (acc + _shuffle([products], [0, 2, 4, 6]).astype("int32x4")
                + _shuffle([products], [1, 3, 5, 7]).astype("int32x4"))

    @staticmethod
    def widen_accumulate(acc, products, half: int) -> tirx.PrimExpr:
        """``acc[i] += products[4 half + i]`` in int32 (``vaddw.s16``; LLVM matches the pattern)."""
        return acc + _shuffle([products], range(4 * half, 4 * half + 4)).astype("int32x4")

    def sum_lanes(self, accs) -> tirx.PrimExpr:
        """Four int32x4 accumulators -> ``[sum(accs[0]), ..., sum(accs[3])]`` (six ``vpadd.i32``)."""
        if self.neon:
            def vpadd(a, b):
                return self._intrin("int32x2", "llvm.arm.neon.vpadd", a, b)

            halves = [vpadd(_shuffle([a], [0, 1]), _shuffle([a], [2, 3])) for a in accs]
            return _shuffle([vpadd(halves[0], halves[1]), vpadd(halves[2], halves[3])], [0, 1, 2, 3])
        total = None
        for lane in range(4):
            part = _shuffle(accs, [lane, 4 + lane, 8 + lane, 12 + lane])
            total = part if total is None else total + part
        return total

    def pair_sums(self, a, b) -> tirx.PrimExpr:
        """int32x4 ``a``, ``b`` -> ``[a0 + a1, a2 + a3, b0 + b1, b2 + b3]`` (two ``vpadd.i32``)."""
        if self.neon:
            def vpadd(v):
                return self._intrin("int32x2", "llvm.arm.neon.vpadd", _shuffle([v], [0, 1]), _shuffle([v], [2, 3]))

            return _shuffle([vpadd(a), vpadd(b)], [0, 1, 2, 3])
        return _shuffle([a, b], [0, 2, 4, 6]) + _shuffle([a, b], [1, 3, 5, 7])

    def multiply_by_quantized_multiplier(self, acc, mantissa, exponent, left_shift: bool) -> tirx.PrimExpr:
        """``acc * m * 2^(e - 31)`` rounded, int32x4 (``kernels.fixed_point`` semantics).

        ``left_shift=False`` promises ``e <= 0`` in every lane (no left shift to apply).
        """
        if not self.neon:
            return multiply_by_quantized_multiplier(acc, mantissa, exponent)
        lanes = 4
        if left_shift:
            acc = acc << tirx.max(exponent, _i32(0, lanes))
            right = tirx.min(exponent, _i32(0, lanes))
        else:
            right = exponent
        high = self._intrin("int32x4", "llvm.arm.neon.vqrdmulh", acc, mantissa)
        fixup = (high & right) >> _i32(31, lanes)
        fixed = self._intrin("int32x4", "llvm.sadd.sat", high, fixup)
        return self._intrin("int32x4", "llvm.arm.neon.vrshifts", fixed, right)

    def requantize(self, acc, mpos, epos, mneg, eneg, *, zero_point: int, clamp: tuple[int, int],
                   left_shift: bool) -> tirx.PrimExpr:
        """``clamp(z_y + M acc)`` per lane, the negative multiplier where ``acc < 0`` (int32x4)."""
        # Bound to variables: the fixed-point multiply repeats its operands several times.
        acc = T.Bind(acc)
        if mneg is not None:
            nonneg = acc >= _i32(0, 4)
            mpos = tirx.Select(nonneg, mpos, mneg)
            epos = tirx.Select(nonneg, epos, eneg)
        scaled = self.multiply_by_quantized_multiplier(acc, T.Bind(mpos), T.Bind(epos), left_shift)
        return self.add_zero_point(scaled, zero_point)

    def add_zero_point(self, value, zero_point: int) -> tirx.PrimExpr:
        """``value + z`` saturated to int32 (the reference adds in int64, then clamps to the output range)."""
        lanes = tvm.runtime.DataType(str(value.ty)).lanes
        return self._intrin(f"int32x{lanes}", "llvm.sadd.sat", value, _i32(zero_point, lanes))

    def narrow(self, value, out_dtype: str, clamp: tuple[int, int]) -> tirx.PrimExpr:
        """int32 lanes (4 or 8) -> ``clamp(value)`` in ``out_dtype`` (int8/uint8).

        NEON: saturating narrows (``vqmovn.s32``, then ``vqmovn.s16``/``vqmovun.s16``) clamp to the
        output type for free; a narrower clamp (ReLU, ReLU6) is one ``vmax``/``vmin`` on 8-bit lanes.
        """
        lanes = tvm.runtime.DataType(str(value.ty)).lanes
        lo, hi = (int(v) for v in clamp)
        if not self.neon:
            return tirx.max(tirx.min(value, _i32(hi, lanes)), _i32(lo, lanes)).astype(f"{out_dtype}x{lanes}")
        quarters = [value] if lanes == 4 else [_shuffle([value], range(4)), _shuffle([value], range(4, 8))]
        halves = [self._intrin("int16x4", "llvm.arm.neon.vqmovns", q) for q in quarters]
        wide = _shuffle(halves if len(halves) == 2 else halves * 2, range(8))
        name = "llvm.arm.neon.vqmovnsu" if out_dtype == "uint8" else "llvm.arm.neon.vqmovns"
        narrow = self._intrin(f"{out_dtype}x8", name, wide)
        type_lo, type_hi = integer_range(out_dtype)
        if lo > type_lo:
            narrow = tirx.max(narrow, tirx.Broadcast(tirx.const(lo, out_dtype), 8))
        if hi < type_hi:
            narrow = tirx.min(narrow, tirx.Broadcast(tirx.const(hi, out_dtype), 8))
        if lanes == 8:
            return narrow
        # Four bytes: as the low int32 lane (one vst1.32 lane store; a 4 x int8 vector is not a NEON type).
        return _shuffle([tirx.call_intrin("int32x2", "tirx.reinterpret", narrow)], [0])


def _halves(vector16):
    return _shuffle([vector16], range(8)), _shuffle([vector16], range(8, 16))


def _flat(buffer: tirx.Buffer, size: int) -> tirx.Buffer:
    return T.decl_buffer((size,), str(buffer.dtype), data=buffer.data)


def _epilogue_args(float_out: bool, negative: bool, channels: int, packed: bool = False):
    """The per-channel parameter buffers: ``bias`` then (mpos, epos[, mneg, eneg]) or (out_scale,).

    ``packed`` (the GEMM kernels, not float_out): one (O/4, rows, 4) int32 array from
    ``pack_epilogue``, the rows of a tile of 4 channels side by side (one pointer, no address
    arithmetic per row).
    """
    if packed and not float_out:
        rows = len(EPILOGUE_ROWS) if negative else 3
        return {"packed": T.arg("epilogue", T.buffer((channels // 4, rows, 4), "int32")), "rows": rows}
    args = {"bias": T.arg("bias", T.buffer((channels,), "int32"))}
    if float_out:
        args["scale"] = T.arg("out_scale", T.buffer((channels,), "float32"))
        return args
    args["mpos"] = T.arg("mult_pos", T.buffer((channels,), "int32"))
    args["epos"] = T.arg("shift_pos", T.buffer((channels,), "int32"))
    if negative:
        args["mneg"] = T.arg("mult_neg", T.buffer((channels,), "int32"))
        args["eneg"] = T.arg("shift_neg", T.buffer((channels,), "int32"))
    return args


# Rows of a packed epilogue (``pack_epilogue``): bias, then the fixed-point multipliers.
EPILOGUE_ROWS = ("bias", "mpos", "epos", "mneg", "eneg")


def pack_epilogue(bias, mpos, epos, mneg=None, eneg=None) -> np.ndarray:
    """(O,) int32 arrays -> (O/4, rows, 4): per tile of 4 channels its bias, mult_pos, shift_pos[,
    mult_neg, shift_neg] rows, one after the other."""
    rows = [bias, mpos, epos] + ([mneg, eneg] if mneg is not None else [])
    stacked = np.stack([np.asarray(r, dtype=np.int32) for r in rows])  # (rows, O)
    return stacked.reshape(len(rows), -1, 4).transpose(1, 0, 2).copy()


def _epi(epi: dict, name: str, channel) -> tirx.PrimExpr:
    """int32x4 (float32x4 for the scale) of parameter ``name`` for channels ``channel .. channel+3``."""
    if "packed" in epi:
        row = EPILOGUE_ROWS.index(name)
        return epi["packed"][channel // 4, row, _ramp(0, 4)]
    return epi[name][_ramp(channel, 4)]


def _right(cfg: dict) -> bool:
    """The ``right_shift`` spelling of the NEON microkernels (``left_shift`` takes precedence)."""
    return bool(cfg["right_shift"]) and not cfg["left_shift"]


def _has(epi: dict, name: str) -> bool:
    return name in epi or ("packed" in epi and EPILOGUE_ROWS.index(name) < epi["rows"])


def _finish(ops: IntegerVectorOps, acc, epi: dict, channel, cfg: dict, *, add_bias: bool) -> tirx.PrimExpr:
    """int32x4 accumulators of channels ``channel .. channel+3`` (bias added here when ``add_bias``)
    -> ``z_y + M acc`` (int32, to narrow) or the float output."""
    if add_bias:
        acc = acc + _epi(epi, "bias", channel)
    if "scale" in epi:
        return acc.astype("float32x4") * _epi(epi, "scale", channel)
    neg = _has(epi, "mneg")
    return ops.requantize(acc, _epi(epi, "mpos", channel), _epi(epi, "epos", channel),
                          _epi(epi, "mneg", channel) if neg else None, _epi(epi, "eneg", channel) if neg else None,
                          zero_point=cfg["y_zero_point"], clamp=tuple(cfg["clamp"]), left_shift=cfg["left_shift"])


def _out_lanes(ops: IntegerVectorOps, value: tirx.PrimExpr, out_dtype: str, cfg: dict) -> tirx.PrimExpr:
    return value if out_dtype == "float32" else ops.narrow(value, out_dtype, cfg["clamp"])


def _loop(extent: int, parallel: bool):
    return T.parallel(0, extent) if parallel and extent > 1 else T.serial(0, extent)


def pack_gemm_weights(w: np.ndarray, reduced: bool = False) -> np.ndarray:
    """(O, K) -> (tiles, steps, 4, 16), in the order the microkernel reads them (one pointer).

    8 channels per tile (``O % 8 == 0``, ``_gemm_paired``): per 8 depth and channel pair (m, m'),
    ``[w_m[d:d+4], w_m'[d:d+4], w_m[d+4:d+8], w_m'[d+4:d+8]]``; ``reduced`` (weights in
    [-63, 63], the microkernel's 16-deep step): per 16 depth a pair's two 8-deep blocks side by side,
    and a last 8 depth of 16 k + 8 as without ``reduced``. Else 4 channels per tile (``_gemm_rows``):
    per 16 depth the 4 rows' 16 bytes side by side.
    """
    o, k = w.shape
    if o % PAIRED_CHANNELS == 0:
        # (tile, pair, m/m', step, half, 4) -> (tile, step, pair, half, m/m', 4)
        blocks = w.reshape(o // PAIRED_CHANNELS, PAIRED_CHANNELS // 2, 2, k // 8, 2, 4)
        packed = blocks.transpose(0, 3, 1, 4, 2, 5).reshape(o // PAIRED_CHANNELS, k // 8, 4, 16)
        if reduced:
            full = k // GEMM_DEPTH * 2
            # (tile, step pair, step, pair, 16) -> (tile, step pair, pair, step, 16)
            head = packed[:, :full].reshape(o // PAIRED_CHANNELS, full // 2, 2, 4, 16).transpose(0, 1, 3, 2, 4)
            packed = np.concatenate([head.reshape(o // PAIRED_CHANNELS, full, 4, 16), packed[:, full:]], axis=1)
        return packed.copy()
    return w.reshape(o // GEMM_CHANNELS, GEMM_CHANNELS, k // GEMM_DEPTH, GEMM_DEPTH).transpose(0, 2, 1, 3).copy()


def _packed_weight_shape(channels_out: int, depth: int) -> tuple[int, ...]:
    if channels_out % PAIRED_CHANNELS == 0:
        return (channels_out // PAIRED_CHANNELS, depth // 8, 4, 16)
    return (channels_out // GEMM_CHANNELS, depth // GEMM_DEPTH, GEMM_CHANNELS, GEMM_DEPTH)


def _gemm(ops: IntegerVectorOps, xf, depth_total: int, pixels: int, wq, channels_out: int, epi: dict, yf,
          y_dtype: str, cfg: dict, parallel: bool) -> None:
    if channels_out % PAIRED_CHANNELS == 0:
        return _gemm_paired(ops, xf, depth_total, pixels, wq, channels_out, epi, yf, y_dtype, cfg, parallel)
    return _gemm_rows(ops, xf, depth_total, pixels, wq, channels_out, epi, yf, y_dtype, cfg, parallel)


def _gemm_paired(ops: IntegerVectorOps, xf, depth_total: int, pixels: int, wq, channels_out: int, epi: dict, yf,
                 y_dtype: str, cfg: dict, parallel: bool) -> None:
    """The GEMM with 8 output channels per tile, two per accumulator: per 8 depth ``d``::

        x_lo = [x[d:d+4], x[d:d+4]]              (one vld1.32 {d[]} each)
        x_hi = [x[d+4:d+8], x[d+4:d+8]]
        for each pair (m, m'):
          p   = vmull.s8(x_lo, [w_m[d:d+4], w_m'[d:d+4]]) + vmull.s8(x_hi, [w_m[d+4:d+8], w_m'[d+4:d+8]])
          acc = vpadal.s16(acc, p)               lanes: m, m, m', m'

    ``vpadd`` of an accumulator's halves then gives the pair's two sums. The NEON spelling runs this
    for 2 pixels at once in the assembly microkernel ``NEON_Q8_GEMM_2X8`` (the weights loaded once
    for both; 16 q registers, which LLVM cannot schedule without spilling); with an int8/uint8
    output the microkernel requantizes and stores the tile too (``neon_q8_gemm_requantize_name``), one
    call per pixel pair running all its tiles of 8 channels, so only the float output goes through a
    stack tile and the TIR epilogue. The portable spelling is
    TIR, 1 pixel per tile.
    """
    c_, o_ = depth_total, channels_out
    y64 = T.decl_buffer((pixels * o_ // 8,), "int64", data=yf.data) if y_dtype != "float32" else None
    tiles_o = o_ // PAIRED_CHANNELS
    # The microkernel's loop takes 16 depth per iteration, then 8 more for a depth of 16 k + 8.
    tail = c_ % GEMM_DEPTH != 0

    def finish(acc, pixel, tile_o, at: int) -> None:
        """Requantize and store the tile's 8 sums ``acc[at : at + 8]`` of ``pixel``."""
        outs = [_finish(ops, acc[_ramp(at + 4 * g, 4)], epi, tile_o * PAIRED_CHANNELS + 4 * g, cfg, add_bias=True)
                for g in range(PAIRED_CHANNELS // 4)]
        value = _shuffle(outs, range(PAIRED_CHANNELS))
        if y_dtype == "float32":
            T.buffer_store(yf, value, [_ramp(pixel * o_ + tile_o * PAIRED_CHANNELS, PAIRED_CHANNELS)])
        else:
            out = ops.narrow(value, y_dtype, cfg["clamp"])
            # Eight bytes as one int64 store (no 8 x int8 store needed for the portable spelling either).
            T.buffer_store(y64, tirx.call_intrin("int64", "tirx.reinterpret", out),
                           [(pixel * o_ + tile_o * PAIRED_CHANNELS) // 8])

    if ops.neon and y_dtype != "float32":
        # The microkernel requantizes and stores too: the int32 sums stay in registers.
        name = neon_q8_gemm_requantize_name(_has(epi, "mneg"), bool(cfg["left_shift"]), y_dtype == "uint8", tail,
                                            cfg["reduced"], narrower_clamp(cfg["clamp"], y_dtype), _right(cfg))
        lo, hi = (int(v) for v in cfg["clamp"])
        clamp_bits = (lo & 0xFF) | (hi & 0xFF) << 8

        def run2(pixel0, both: bool) -> None:
            """All ``tiles_o`` tiles of 8 channels of pixels ``pixel0`` (and the next, with ``both``) in one
            call: the microkernel loops over them (the last operand is its scratch depth count)."""
            second = pixel0 + 1 if both else pixel0
            T.evaluate(tirx.call_extern(
                "int32", name, tirx.address_of(yf[pixel0 * o_]), tirx.address_of(yf[second * o_]),
                tirx.address_of(xf[pixel0 * c_]), tirx.address_of(xf[second * c_]), tirx.address_of(wq[0]),
                c_ // GEMM_DEPTH, tirx.address_of(epi["packed"][0, 0, 0]), cfg["y_zero_point"], clamp_bits, tiles_o,
                0))

        if pixels // 2:
            with _loop(pixels // 2, parallel) as t:
                run2(t * 2, True)
        if pixels % 2:
            run2(pixels - 1, False)
        return
    if ops.neon:
        def tile2(pixel0, tile_o, both: bool) -> None:
            # "global" scope: a small constant buffer whose address is taken stays on the stack.
            acc = T.alloc_buffer((2 * PAIRED_CHANNELS,), "int32", scope="global")
            second = pixel0 + 1 if both else pixel0
            # The microkernel writes all 16 sums, also for a lone last pixel whose epilogue reads 8: an
            # access pointer over the whole buffer keeps TVM from compacting it to the 8 read (a stack
            # overflow into the kernel's saved registers).
            T.evaluate(tirx.call_extern("int32", neon_q8_gemm_name(tail, cfg["reduced"]), acc.access_ptr("w"),
                                        tirx.address_of(xf[pixel0 * c_]), tirx.address_of(xf[second * c_]),
                                        tirx.address_of(wq[tile_o * (c_ * PAIRED_CHANNELS)]), c_ // GEMM_DEPTH))
            finish(acc, pixel0, tile_o, 0)
            if both:
                finish(acc, pixel0 + 1, tile_o, PAIRED_CHANNELS)

    if ops.neon:
        if pixels // 2:
            with _loop(pixels // 2 * tiles_o, parallel) as t:
                tile2(t // tiles_o * 2, t % tiles_o, True)
        if pixels % 2:
            with T.serial(0, tiles_o) as tile_o:
                tile2(pixels - 1, tile_o, False)
        return

    pairs = PAIRED_CHANNELS // 2
    steps = c_ // 8
    x32 = T.decl_buffer((pixels * c_ // 4,), "int32", data=xf.data)
    full = steps // 2 * 2 if cfg["reduced"] else 0

    def weights_at(tile_o, step, q):
        """The 16 weight bytes of 8-deep ``step`` and pair ``q`` (``pack_gemm_weights``' order)."""
        if not full:
            return ((tile_o * steps + step) * pairs + q) * 16
        within = tirx.if_then_else(step < full, step // 2 * 128 + q * 32 + step % 2 * 16, step * 64 + q * 16)
        return tile_o * steps * 64 + within

    def step_portable(acc, pixel, tile_o, step) -> None:
        # 4 input channels as one int32, splat to both halves of a d register.
        x_lo, x_hi = (T.Bind(tirx.call_intrin("int8x8", "tirx.reinterpret", tirx.Broadcast(
            x32[(pixel * c_ + step * 8) // 4 + h], 2))) for h in range(2))
        for q in range(pairs):
            w_lo, w_hi = _halves(T.Bind(wq[_ramp(weights_at(tile_o, step, q), 16)]))
            products = ops.widening_mul(x_lo, w_lo) + ops.widening_mul(x_hi, w_hi)
            T.buffer_store(acc, ops.pairwise_accumulate(acc[_ramp(4 * q, 4)], products), [_ramp(4 * q, 4)])

    def step_avx2(acc, pixel, tile_o, step) -> None:
        # vpmaddwd: int16x16 x int16x16 -> int32x8 sums of adjacent products. With the input
        # [x[d:d+4], x[d:d+4], x[d+4:d+8], x[d+4:d+8]] against a pair's 16 packed weights, the lanes
        # are (m, m, m', m', m, m, m', m'): 16 multiply-adds in one instruction (the portable
        # spelling: about 10 instructions for the same, measured on the host's assembly).
        x8 = T.Bind(xf[_ramp(pixel * c_ + step * 8, 8)])
        x16 = T.Bind(_shuffle([x8, x8], [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15]).astype("int16x16"))
        for q in range(pairs):
            w16 = wq[_ramp(weights_at(tile_o, step, q), 16)].astype("int16x16")
            dot = tirx.call_llvm_pure_intrin("int32x8", "llvm.x86.avx2.pmadd.wd", x16, w16)
            T.buffer_store(acc, acc[_ramp(8 * q, 8)] + dot, [_ramp(8 * q, 8)])

    # Accumulator lanes per channel pair: 4 (m, m, m', m') portable, 8 with AVX2 (twice that).
    width = 8 if ops.isa == "avx2" else 4
    with _loop(pixels * tiles_o, parallel) as t:
        pixel, tile_o = t // tiles_o, t % tiles_o
        acc = T.alloc_buffer((pairs * width,), "int32", scope="local")
        for q in range(pairs):
            T.buffer_store(acc, _i32(0, width), [_ramp(width * q, width)])
        with T.serial(0, steps) as step:
            (step_avx2 if width == 8 else step_portable)(acc, pixel, tile_o, step)
        halves = [acc[_ramp(width * q, 4)] for q in range(pairs)]
        if width == 8:
            halves = [T.Bind(half + acc[_ramp(width * q + 4, 4)]) for q, half in enumerate(halves)]
        sums = T.alloc_buffer((PAIRED_CHANNELS,), "int32", scope="local")
        for g in range(PAIRED_CHANNELS // 4):
            T.buffer_store(sums, ops.pair_sums(halves[2 * g], halves[2 * g + 1]), [_ramp(4 * g, 4)])
        finish(sums, pixel, tile_o, 0)


def _gemm_rows(ops: IntegerVectorOps, xf, depth_total: int, pixels: int, wq, channels_out: int, epi: dict, yf,
               y_dtype: str, cfg: dict, parallel: bool) -> None:
    """``y[p, o] = finish(bias[o] + sum_k x[p, k] w[o, k])`` over flat row-major ``x`` (pixels x depth)
    and ``w`` (channels_out x depth), ``y`` (pixels x channels_out): the register-tiled microkernel."""
    c_, o_ = depth_total, channels_out
    y32 = T.decl_buffer((pixels * o_ // 4,), "int32", data=yf.data) if y_dtype != "float32" else None

    def tile(pixel0, num_pixels: int, channel0):
        acc = T.alloc_buffer((num_pixels * GEMM_CHANNELS * 4,), "int32", scope="local")
        for i in range(num_pixels * GEMM_CHANNELS):
            T.buffer_store(acc, _i32(0, 4), [_ramp(4 * i, 4)])
        with T.serial(0, c_ // GEMM_DEPTH) as step:
            depth = step * GEMM_DEPTH
            # One 16-byte load each, used as its two d-register halves.
            xs = [_halves(T.Bind(xf[_ramp((pixel0 + j) * c_ + depth, 16)])) for j in range(num_pixels)]
            for m in range(GEMM_CHANNELS):
                # Packed weights: the tile's 4 rows of this step are 64 contiguous bytes.
                at = ((channel0 // GEMM_CHANNELS * (c_ // GEMM_DEPTH) + step) * GEMM_CHANNELS + m) * GEMM_DEPTH
                w0, w1 = _halves(T.Bind(wq[_ramp(at, 16)]))
                for j, (x0, x1) in enumerate(xs):
                    slot = _ramp(4 * (j * GEMM_CHANNELS + m), 4)
                    products = ops.widening_mul(x0, w0) + ops.widening_mul(x1, w1)
                    T.buffer_store(acc, ops.pairwise_accumulate(acc[slot], products), [slot])
        for j in range(num_pixels):
            sums = ops.sum_lanes([acc[_ramp(4 * (j * GEMM_CHANNELS + m), 4)] for m in range(GEMM_CHANNELS)])
            value = _finish(ops, sums, epi, channel0, cfg, add_bias=True)
            out = _out_lanes(ops, value, y_dtype, cfg)
            if str(out.ty) == "int32":  # four int8 lanes packed in one int32 (NEON narrow)
                T.buffer_store(y32, out, [((pixel0 + j) * o_ + channel0) // 4])
            else:
                T.buffer_store(yf, out, [_ramp((pixel0 + j) * o_ + channel0, 4)])

    # One loop over all tiles, not a pixel loop around a channel loop: in nested loops LLVM hoists a
    # fully unrolled row of input (or weight) loads out of the inner loop and spills it.
    tiles_o = o_ // GEMM_CHANNELS
    full = pixels // GEMM_PIXELS
    if full:
        with _loop(full * tiles_o, parallel) as t:
            tile(t // tiles_o * GEMM_PIXELS, GEMM_PIXELS, t % tiles_o * GEMM_CHANNELS)
    for rest in range(full * GEMM_PIXELS, pixels):
        with T.serial(0, tiles_o) as ot:
            tile(rest, 1, ot * GEMM_CHANNELS)


def gemm_fits(depth: int, channels_out: int) -> bool:
    """Whether the 1x1 GEMM takes ``depth`` input and ``channels_out`` output channels: 16 k depth and 4 m
    channels, or (the paired tile, its microkernel's 8-deep tail) 16 k + 8 depth and 8 m channels."""
    return (depth % GEMM_DEPTH == 0 and channels_out % GEMM_CHANNELS == 0) or \
        (depth % 8 == 0 and depth > GEMM_DEPTH and channels_out % PAIRED_CHANNELS == 0)


def _gemm_params(name: str, x_shape, depth: int, channels_out: int, y_shape, y_dtype: str, negative: bool):
    """The parameters of a GEMM kernel, declared in the open ``T.prim_func``: int8 ``x``, the weights
    packed by ``pack_gemm_weights``, the epilogue (``_epilogue_args``, packed) and the output ``y``."""
    T.func_name(name)
    x = T.arg("x", T.buffer(x_shape, "int8"))
    wq = T.arg("w", T.buffer(_packed_weight_shape(channels_out, depth), "int8"))
    epi = _epilogue_args(y_dtype == "float32", negative, channels_out, packed=True)
    y = T.arg("y", T.buffer(y_shape, y_dtype))
    T.func_attr({"tirx.noalias": True})
    return x, wq, epi, y


def int8_conv1x1_nhwc(*, x_shape, channels_out: int, out_dtype: str, y_zero_point: int = 0, clamp=(0, 0),
                      negative: bool = False, float_out: bool = False, left_shift: bool = True, reduced: bool = False,
                      right_shift: bool = False, isa: str = "portable", parallel: bool = False) -> tirx.PrimFunc:
    """``y[n, h, w, o] = requantize(bias[o] + sum_c x[n, h, w, c] w[o, c])`` (or float ``acc * scale[o]``).

    Parameters: ``x`` (N, H, W, C) int8, ``w`` (O, C) int8 in [-127, 127] (``reduced``: in
    [-63, 63], ``REDUCED_WEIGHT_MAX``) packed by ``pack_gemm_weights(w, reduced)``, then ``epilogue`` (``pack_epilogue`` of bias, mult_pos, shift_pos[,
    mult_neg, shift_neg]) or, with ``float_out``, ``bias`` (O,) int32 and ``out_scale`` (O,) float32,
    and the output (N, H, W, O). Needs ``gemm_fits(C, O)``. ``left_shift=False`` promises every exponent
    ``e <= 0``; ``right_shift`` promises more, ``only_right_shifts`` of the multipliers (the NEON
    requantize then adds the product's sign as RoundingDivideByPOT's fixup without gating it by the shift).
    """
    n_, h_, w_, c_ = (int(d) for d in x_shape)
    o_ = int(channels_out)
    assert gemm_fits(c_, o_), (c_, o_)
    pixels = n_ * h_ * w_
    cfg = {"y_zero_point": y_zero_point, "clamp": clamp, "left_shift": left_shift, "reduced": reduced,
           "right_shift": right_shift}
    y_dtype = "float32" if float_out else out_dtype
    with IRBuilder() as ib:
        with T.prim_func():
            x, wq, epi, y = _gemm_params("int8_conv1x1_nhwc", (n_, h_, w_, c_), c_, o_, (n_, h_, w_, o_), y_dtype,
                                         negative)
            _gemm(IntegerVectorOps(isa), _flat(x, pixels * c_), c_, pixels, _flat(wq, o_ * c_), o_, epi,
                  _flat(y, pixels * o_), y_dtype, cfg, parallel)
    return ib.get()


def im2col_depth(kernel_size, channels: int) -> int:
    """Columns of the im2col matrix: ``KH KW C`` rounded up to the microkernel's 16 (zero weights)."""
    depth = int(kernel_size[0]) * int(kernel_size[1]) * int(channels)
    return -(-depth // GEMM_DEPTH) * GEMM_DEPTH


def int8_conv_im2col_nhwc(*, x_shape, x_layout: str, channels_out: int, kernel_size, strides, padding, dilation,
                          x_zero_point: int, out_dtype: str, y_zero_point: int = 0, clamp=(0, 0),
                          negative: bool = False, float_out: bool = False, left_shift: bool = True,
                          reduced: bool = False, right_shift: bool = False, isa: str = "portable",
                          parallel: bool = False) -> tirx.PrimFunc:
    """A dense (groups = 1) KH x KW convolution as im2col + the 1x1 kernel's GEMM:
    ``col[p, (r KW + s) C + c] = x_pad[n, c, i S_h + r D_h, j S_w + s D_w]`` (``z_x`` outside, 0 in the
    columns padding the depth to 16), ``y[p, o] = requantize(bias[o] + sum_k col[p, k] w[o, k])``.

    Parameters: ``x`` in ``x_layout`` (NCHW: the model input's quantize gives that), ``w``
    (O, depth) int8 in (r, s, c) order packed by ``pack_gemm_weights(w, reduced)``, the epilogue as for
    ``int8_conv1x1_nhwc``, output (N, OH, OW, O). For the first convolution of a network: 3 input
    channels are too few for vectors along C.
    """
    if x_layout == "NCHW":
        n_, c_, h_, w_ = (int(d) for d in x_shape)
    else:
        n_, h_, w_, c_ = (int(d) for d in x_shape)
    kh, kw = (int(k) for k in kernel_size)
    sh, sw = (int(v) for v in strides)
    dh, dw = (int(v) for v in dilation)
    pt, pl, pb, pr = (int(v) for v in padding)
    oh = (h_ + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w_ + pl + pr - (kw - 1) * dw - 1) // sw + 1
    o_ = int(channels_out)
    assert o_ % GEMM_CHANNELS == 0, o_
    depth = im2col_depth((kh, kw), c_)
    pixels = n_ * oh * ow
    cfg = {"y_zero_point": y_zero_point, "clamp": clamp, "left_shift": left_shift, "reduced": reduced,
           "right_shift": right_shift}
    y_dtype = "float32" if float_out else out_dtype
    with IRBuilder() as ib:
        with T.prim_func():
            x, wq, epi, y = _gemm_params("int8_conv_im2col_nhwc", tuple(int(d) for d in x_shape), depth, o_,
                                         (n_, oh, ow, o_), y_dtype, negative)
            col = T.alloc_buffer((pixels * depth,), "int8")
            # Channels-last rows of 8 channels are copied as vectors (one vld1/vst1 per 8 bytes):
            # byte by byte the copy cost as much as the GEMM (RetinaFace: 75 M instructions).
            lanes = 8 if x_layout == "NHWC" and c_ % 8 == 0 else 1
            xf = _flat(x, n_ * h_ * w_ * c_)
            with _loop(pixels, parallel) as p:
                n, i, j = p // (oh * ow), p % (oh * ow) // ow, p % ow
                for r in range(kh):
                    for s_ in range(kw):
                        yy, xx = i * sh + r * dh - pt, j * sw + s_ * dw - pl
                        inside = tirx.all(yy >= 0, yy < h_, xx >= 0, xx < w_)
                        at = p * depth + (r * kw + s_) * c_
                        if lanes == 1:
                            with T.serial(0, c_) as c:
                                value = x[n, c, yy, xx] if x_layout == "NCHW" else x[n, yy, xx, c]
                                T.buffer_store(col, tirx.if_then_else(inside, value, tirx.const(x_zero_point, "int8")),
                                               [at + c])
                            continue
                        with T.If(inside):
                            with T.Then():
                                with T.serial(0, c_ // lanes) as v:
                                    source = ((n * h_ + yy) * w_ + xx) * c_ + v * lanes
                                    T.buffer_store(col, xf[_ramp(source, lanes)], [_ramp(at + v * lanes, lanes)])
                            with T.Else():
                                with T.serial(0, c_ // lanes) as v:
                                    T.buffer_store(col, tirx.Broadcast(tirx.const(x_zero_point, "int8"), lanes),
                                                   [_ramp(at + v * lanes, lanes)])
                for k in range(kh * kw * c_, depth):
                    T.buffer_store(col, tirx.const(0, "int8"), [p * depth + k])
            _gemm(IntegerVectorOps(isa), col, depth, pixels, _flat(wq, o_ * depth), o_, epi,
                  _flat(y, pixels * o_), y_dtype, cfg, parallel)
    return ib.get()


def pack_depthwise_weights(w: np.ndarray) -> np.ndarray:
    """(KH, KW, C) -> (C/8, KH KW, 8): a block of 8 channels' taps contiguous, in the order the
    microkernel loads them (one pointer per channel block)."""
    kh, kw, c = w.shape
    return np.ascontiguousarray(w.reshape(kh * kw, c // DEPTHWISE_LANES, DEPTHWISE_LANES).transpose(1, 0, 2))


def _neon_dwconv3x3_rows(ni, shape: tuple, strides: tuple, xp, yf, wf, epi: dict, cfg: dict, y_dtype: str) -> None:
    """Output row ``ni`` (of ``N OH``) by the assembly microkernel: per 8 channels one call for its
    groups of ``DWCONV_GROUP_PIXELS`` pixels and one for the 1 or 2 pixels left. ``shape``: (OH, OW,
    C, padded H, padded W); dilation 1."""
    oh_, ow_, c_, hp, wp = shape
    sh, sw = strides
    lo, hi = (int(v) for v in cfg["clamp"])
    clamped = narrower_clamp((lo, hi), y_dtype)
    # Unclamped, the microkernel reads z_y alone (the saturating narrows are the clamp).
    params = (lo & 0xFF) | (hi & 0xFF) << 8 | (int(cfg["y_zero_point"]) & 0xFFFF) << 16 if clamped else \
        int(cfg["y_zero_point"]) & 0xFFFF
    params -= (1 << 32) if params >= 1 << 31 else 0  # an int32 operand
    # Byte steps of the input pointer (see kernels.neon_q8_dwconv): next column, next window row, next pixel.
    xs, xn, xg = c_, wp * c_ - 2 * c_, sw * c_ - 2 * wp * c_ - 2 * c_
    n, i = ni // oh_, ni % oh_
    groups, rest = divmod(ow_, DWCONV_GROUP_PIXELS)
    flavour = (_has(epi, "mneg"), bool(cfg["left_shift"]), y_dtype == "uint8", cfg["reduced"], clamped, _right(cfg))
    with T.serial(0, c_ // DEPTHWISE_LANES) as cb:
        for first, count, pixels in ((0, groups, DWCONV_GROUP_PIXELS), (groups * DWCONV_GROUP_PIXELS, rest, 1)):
            if count:
                channel = cb * DEPTHWISE_LANES
                T.evaluate(tirx.call_extern(
                    "int32", neon_q8_dwconv_name(pixels, *flavour),
                    tirx.address_of(yf[(ni * ow_ + first) * c_ + channel]),
                    tirx.address_of(xp[((n * hp + i * sh) * wp + first * sw) * c_ + channel]),
                    tirx.address_of(wf[cb * 9 * DEPTHWISE_LANES]), tirx.address_of(epi["packed"][cb * 2, 0, 0]),
                    count, xs, xn, xg, params))


def int8_depthwise_nhwc(*, x_shape, kernel_size, strides, padding, dilation, x_zero_point: int, out_dtype: str,
                        y_zero_point: int = 0, clamp=(0, 0), negative: bool = False, float_out: bool = False,
                        left_shift: bool = True, reduced: bool = False, right_shift: bool = False,
                        isa: str = "portable", parallel: bool = False) -> tirx.PrimFunc:
    """``y[n, i, j, c] = requantize(bias[c] + sum_{r,s} x_pad[n, i S_h + r D_h, j S_w + s D_w, c] w[r, s, c])``.

    Parameters: ``x`` (N, H, W, C) int8, ``w`` (KH, KW, C) int8 in [-127, 127] (``reduced``: in
    [-63, 63], the 3x3 NEON microkernel then sums 4 taps in int16, not 2) packed by
    ``pack_depthwise_weights``, then ``epilogue`` (``pack_epilogue`` of bias, mult_pos, shift_pos[,
    mult_neg, shift_neg]) or, with ``float_out``, ``bias`` (C,) int32 and ``out_scale`` (C,) float32,
    and the output (N, OH, OW, C). ``x_pad`` is ``x`` padded with its zero point. Needs ``C % 8 == 0``.
    Taps go in pairs: ``|x_1 w_1 + x_2 w_2| < 2^15`` fits int16.
    """
    n_, h_, w_, c_ = (int(d) for d in x_shape)
    kh, kw = (int(k) for k in kernel_size)
    sh, sw = (int(v) for v in strides)
    dh, dw = (int(v) for v in dilation)
    pt, pl, pb, pr = (int(v) for v in padding)
    assert c_ % DEPTHWISE_LANES == 0, c_
    hp, wp = h_ + pt + pb, w_ + pl + pr
    oh = (hp - (kh - 1) * dh - 1) // sh + 1
    ow = (wp - (kw - 1) * dw - 1) // sw + 1
    cfg = {"y_zero_point": y_zero_point, "clamp": clamp, "left_shift": left_shift, "reduced": reduced,
           "right_shift": right_shift}
    ops = IntegerVectorOps(isa)
    y_dtype = "float32" if float_out else out_dtype
    lanes = DEPTHWISE_LANES
    taps = [(r, s) for r in range(kh) for s in range(kw)]
    with IRBuilder() as ib:
        with T.prim_func():
            T.func_name("int8_depthwise_nhwc")
            x = T.arg("x", T.buffer((n_, h_, w_, c_), "int8"))
            wq = T.arg("w", T.buffer((c_ // lanes, kh * kw, lanes), "int8"))
            epi = _epilogue_args(float_out, negative, c_, packed=True)
            y = T.arg("y", T.buffer((n_, oh, ow, c_), y_dtype))
            T.func_attr({"tirx.noalias": True})
            xf = _flat(x, n_ * h_ * w_ * c_)
            yf = _flat(y, n_ * oh * ow * c_)
            wf = _flat(wq, kh * kw * c_)
            if pt or pl or pb or pr:
                # A copy padded with z_x: sum (q_x - z_x) q_w is then exact at the borders too. Only the
                # border is filled (filling it all first wrote every interior byte twice).
                xp = T.alloc_buffer((n_ * hp * wp * c_,), "int8")
                zero = tirx.Broadcast(tirx.const(x_zero_point, "int8"), lanes)
                with T.serial(0, n_) as n:
                    for r in [*range(pt), *range(hp - pb, hp)]:
                        with T.serial(0, wp * c_ // lanes) as k:
                            T.buffer_store(xp, zero, [_ramp((n * hp + r) * wp * c_ + k * lanes, lanes)])
                row = w_ * c_
                with _loop(n_ * h_, parallel) as nh:
                    start = (nh // h_ * hp + nh % h_ + pt) * wp * c_
                    for first, columns in ((0, pl), (pl + w_, pr)):
                        if columns:
                            with T.serial(0, columns * c_ // lanes) as k:
                                T.buffer_store(xp, zero, [_ramp(start + first * c_ + k * lanes, lanes)])
                    with T.serial(0, row // lanes) as k:
                        T.buffer_store(xp, xf[_ramp(nh * row + k * lanes, lanes)],
                                       [_ramp(start + pl * c_ + k * lanes, lanes)])
            else:
                xp = xf
            # The microkernel's output pointer steps by its input column step: dilation 1.
            if ops.neon and (kh, kw) == (3, 3) and (dh, dw) == (1, 1) and not float_out:
                with _loop(n_ * oh, parallel) as ni:
                    _neon_dwconv3x3_rows(ni, (oh, ow, c_, hp, wp), (sh, sw), xp, yf, wf, epi, cfg, y_dtype)
            else:
                with _loop(n_ * oh, parallel) as ni:
                    n, i = ni // oh, ni % oh
                    with T.serial(0, c_ // lanes) as cb:
                        channel = cb * lanes
                        weights = [T.Bind(wf[_ramp((cb * len(taps) + t) * lanes, lanes)]) for t in range(len(taps))]
                        with T.serial(0, ow) as j:
                            def tap(t):
                                r, s = taps[t]
                                at = ((n * hp + i * sh + r * dh) * wp + j * sw + s * dw) * c_ + channel
                                return xp[_ramp(at, lanes)]

                            acc = [T.Bind(_epi(epi, "bias", channel)), T.Bind(_epi(epi, "bias", channel + 4))]
                            for t in range(0, len(taps), 2):
                                products = ops.widening_mul(tap(t), weights[t])
                                if t + 1 < len(taps):
                                    products = products + ops.widening_mul(tap(t + 1), weights[t + 1])
                                products = T.Bind(products)
                                acc = [T.Bind(ops.widen_accumulate(acc[h], products, h)) for h in range(2)]
                            halves = [_finish(ops, acc[h], epi, channel + 4 * h, cfg, add_bias=False) for h in range(2)]
                            value = _shuffle(halves, range(8))
                            T.buffer_store(yf, _out_lanes(ops, value, y_dtype, cfg),
                                           [_ramp((ni * ow + j) * c_ + channel, lanes)])
    return ib.get()


def int8_add_flat(*, shape, a_zero_point: int, a_mult, b_zero_point: int, b_mult, y_zero_point: int, y_mult,
                  clamp, out_dtype: str, isa: str = "portable", parallel: bool = False) -> tirx.PrimFunc:
    """TFLite's int8 ADD (``kernels.int8_nchw.int8_add_requantize``) of two same-shape tensors, 8 lanes
    at a time. Needs ``size % 8 == 0``.

    The input of the larger scale has the multiplier 0.5 exactly (``FoldQuantScales``: ``s / (2 max(s_a,
    s_b))``): its rescale is a shift (``is_half``). MobileFaceNet int8 (cortex-a7, standalone,
    ``bench_arm.py --per-kernel``): 95.3 -> 83.3 a7 cycles per 8 outputs, its 12 adds 2.20 -> 2.01 M
    instructions, 4.34 -> 3.77 M a7 cycles."""
    shape = [int(d) for d in shape]
    size = 1
    for d in shape:
        size *= d
    assert size % 8 == 0, size
    ops = IntegerVectorOps(isa)
    lo, hi = clamp

    def is_half(mult) -> bool:
        """Whether ``mult`` is exactly 0.5 (what the input of the larger scale gets: ``m = 2^30, e = 0``): its
        rescale of ``(q - z) << 20``, an even number, is then exactly ``(q - z) << 19``, one shift less in
        the widening and no ``vqrdmulh``/``vrshl`` (a7: 12 cycles per 8 outputs)."""
        return (int(mult[0]), int(mult[1])) == (1 << 30, 0)

    def rescale(value, mult):
        if is_half(mult):
            return value
        return ops.multiply_by_quantized_multiplier(value, _i32(mult[0], 4), _i32(mult[1], 4), mult[1] > 0)

    with IRBuilder() as ib:
        with T.prim_func():
            T.func_name("int8_add_flat")
            a = T.arg("a", T.buffer(shape, "int8"))
            b = T.arg("b", T.buffer(shape, "int8"))
            y = T.arg("y", T.buffer(shape, out_dtype))
            T.func_attr({"tirx.noalias": True})
            af, bf, yf = _flat(a, size), _flat(b, size), _flat(y, size)
            with _loop(size // 8, parallel) as i:
                # (q - z) << 20 as ((q - z) << 4 in int16, exact: |q - z| <= 255) << 16 in int32: LLVM
                # writes vsubl.s8, vshl.i16 and vshll.s16 (widening each int32x4 on its own, it wrote
                # vzip, vmovl and two shifts to sign-extend, 62 instructions per 8 outputs in all).
                shifted = [T.Bind((v.astype("int16x8") - tirx.Broadcast(tirx.const(z, "int16"), 8))
                                  << tirx.Broadcast(tirx.const(ADD_LEFT_SHIFT - 16 - is_half(m), "int16"), 8))
                           for v, z, m in ((af[_ramp(i * 8, 8)], a_zero_point, a_mult),
                                           (bf[_ramp(i * 8, 8)], b_zero_point, b_mult))]
                halves = []
                for h in range(2):
                    def widened(v16):
                        return _shuffle([v16], range(4 * h, 4 * h + 4)).astype("int32x4") << _i32(16, 4)

                    total = T.Bind(rescale(T.Bind(widened(shifted[0])), a_mult)
                                   + rescale(T.Bind(widened(shifted[1])), b_mult))
                    halves.append(ops.add_zero_point(rescale(total, y_mult), y_zero_point))
                T.buffer_store(yf, ops.narrow(_shuffle(halves, range(8)), out_dtype, (lo, hi)), [_ramp(i * 8, 8)])
    return ib.get()


KERNELS = {"conv1x1": int8_conv1x1_nhwc, "im2col": int8_conv_im2col_nhwc, "depthwise": int8_depthwise_nhwc,
           "add": int8_add_flat}


def make_kernel(kind: str, *, isa: str = "portable", parallel: bool = False, **params) -> tirx.PrimFunc:
    """The kernel ``kind`` with ``params``, its recipe recorded in the ``KERNEL_ATTR`` func attr so that
    ``schedules.int8`` can write it again for the target (instruction set, threads)."""
    func = KERNELS[kind](isa=isa, parallel=parallel, **params)
    recipe = json.dumps({"kind": kind, "params": params}, sort_keys=True)
    return func.with_attr(KERNEL_ATTR, recipe)


def remake_kernel(func: tirx.PrimFunc, *, isa: str, parallel: bool) -> tirx.PrimFunc | None:
    """``func`` written again for instruction set ``isa`` and/or with parallel loops (None: not one of
    these kernels)."""
    recipe = func.attrs.get(KERNEL_ATTR) if func.attrs is not None else None
    if recipe is None:
        return None
    recipe = json.loads(str(recipe))
    new = KERNELS[recipe["kind"]](isa=isa, parallel=parallel, **recipe["params"])
    for key, value in func.attrs.items():
        new = new.with_attr(key, value)
    return new
