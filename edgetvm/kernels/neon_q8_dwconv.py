"""The ARMv7 NEON int8 depthwise 3x3 microkernel (channels last, any stride, dilation 1), requantizing
in its registers, as an LLVM IR definition whose body is one inline-assembly statement
(``backends.neon_microkernels`` puts it in place of TVM's declaration of the call).

``edgetvm_neon_q8_dwconv3x3[_w7]_p{P}[_negative][_left_shift][_u8](y, x, w, epilogue, groups, xs, xn, xg,
params)``: ``groups`` groups of ``P`` output pixels of one output row, 8 channels::

    y[p, c] = clamp(z_y + M[c] (bias[c] + sum_{r,s < 3} x_pad[r, p S + s, c] w[r, s, c]))

``x`` points at tap (0, 0) of the first pixel in the zero-point-padded NHWC input; it walks the taps
by post-incremented loads: ``xs`` to the next column of a window row (``C`` bytes), ``xn`` from a
row's last column to the next row's first, ``xg`` from the last tap to the next pixel's first (so
the stride is in the operands, not in the code). ``w`` is the channel block's 9 taps
of 8 bytes (``pack_depthwise_weights``), ``epilogue`` its two groups of 4 channels of
``pack_epilogue`` rows, ``params`` is ``clamp_lo & 0xff | (clamp_hi & 0xff) << 8 | (z_y & 0xffff)
<< 16``. ``y`` steps by ``xs`` too (C bytes: depthwise keeps the channel count).

Registers: q0-q5 the int32 accumulators of 3 pixels (two int32x4 per pixel), d12-d20 the 9 taps'
weights (reloaded per group: the requantize needs q6-q15), d24-d27 input columns, q11/q14 the
int16 products. Per pixel and 8 channels, taps in pairs (``|x_1 w_1 + x_2 w_2| <= 2 * 128 * 127 <
2^15`` fits int16)::

    vld1.8     {d24}, [x :64], xs             tap t
    vld1.8     {d25}, [x :64], xs             tap t + 1
    vmull.s8   q11, d24, d(12 + t)            int16 products
    vmlal.s8   q11, d25, d(13 + t)            + the next tap's
    vaddw.s16  q0, q0, d22                    int32 channels 0-3 (the first two pairs: vaddl.s16
    vaddw.s16  q1, q1, d23                    channels 4-7      of both product registers)

9 loads, 9 multiplies, 8 widening adds: 26 instructions per 72 multiply-accumulates. Per group of
3 pixels: 3 weight loads; per group of 4 channels 1 or 3 epilogue loads and per accumulator the
requantize of ``neon_q8_gemm.requantize_asm`` (bias ``vadd``, ``vqrdmulh``, ``vand`` + ``vsra``,
``vrshl``; +4 with PReLU, +3 with left shifts); per pixel ``vqmovn`` x2, ``z_y`` added in int16,
``vqmovn``, the clamp and one 8-byte store: 152 instructions per 216 multiply-accumulates (0.70 per
MAC), 178 with PReLU (0.82), 197 with PReLU and left shifts. ``P = 1`` runs the 1 or 2 pixels left of
a row (62 to 79 instructions per 72). Measured (cortex-a7, standalone, 1 thread): a 28x28x128
stride-1 layer with PReLU alone 0.92 instructions and 1.65 a7 cycles per MAC, the rest being the
zero-point padding copy and the calls per row and 8 channels; MobileFaceNet int8's 17 depthwise
convs 12.23 -> 9.42 M instructions and 20.77 -> 16.80 M a7 cycles (MobileNetV2's 20.14 -> 17.00 M
and 34.03 -> 29.38 M) against the TIR kernel with NEON intrinsics (which reloaded and re-addressed
every tap per pixel). Of the a7 cycles per pixel and 8
channels, the 10 widening adds take 20, the 9 multiplies 18, the requantize about 40 with PReLU
(``vqrdmulh.s32 q`` alone 4 each).

Reduced-range weights (``_w7``: in [-63, 63], what ``QuantizeAnnotate`` gives a conv): taps 0-3 and
4-7 each summed in one int16 product (``vmull`` + 3 ``vmlal``, ``|4 * 128 * 63| < 2^15``), tap 8 alone:
9 loads, 9 multiplies, 4 widening adds, 22 instructions per pixel and 8 channels instead of 26 (a7:
4 ``vaddw.s16 q`` fewer, 8 cycles).

The first two products are widened and added by one ``vaddl.s16`` per half (both are still in the
two product registers) instead of ``vmovl`` of the first and ``vaddw`` of the second: 2 instructions
and 4 a7 cycles fewer per pixel and 8 channels (a 28x28x128 stride-1 PReLU layer alone, reduced-range
weights: 105.5 -> 101.5 a7 cycles per pixel and 8 channels; MobileFaceNet int8 ``--reduce-range``
stride 1 6.74 -> 6.50 M instructions, 12.38 -> 11.92 M a7 cycles; stride 2 1.45 -> 1.41 M, 2.52 ->
2.43 M).

A clamp that does not cut into the output type (PReLU and linear outputs: every MobileFaceNet depthwise
conv) takes the ``_unclamped`` spelling: ``params`` is z_y alone, no ``vdup.8``/``ror`` per group nor
``vmax``/``vmin`` per pixel (9 a7 cycles per group of 3 pixels; the saturating narrows clamp): MobileFaceNet
int8 ``--reduce-range`` (cortex-a7, standalone, ``bench_arm.py --per-kernel``) stride 1 7.29 -> 6.83 M
instructions, 13.03 -> 12.56 M a7 cycles; stride 2 1.56 -> 1.47 M, 2.64 -> 2.55 M.

With PReLU the last pixel of a group selects its multipliers in place (``requantize_asm``'s ``last``:
``vbit`` into the negative side's registers, no copy of the mask): 4 a7 cycles per group, MobileFaceNet
int8 ``--reduce-range`` stride 1 12.56 -> 12.38 M a7 cycles, stride 2 2.55 -> 2.52 M.

With only right shifts (``right_shift``: ``int8_nhwc.only_right_shifts`` of the multipliers) the
requantize's rounding fixup is one ``vsra`` of the product's sign, no ``vand`` gating it by the shift: 4 a7
cycles per pixel and 8 channels; MobileFaceNet int8 ``--reduce-range`` stride 1 6.50 -> 6.27 M
instructions, 11.92 -> 11.45 M a7 cycles; stride 2 1.41 -> 1.36 M, 2.43 -> 2.34 M.

Not done: sharing a window's columns between neighbouring pixels at stride 1 (12 instead of 27 loads
per 3 pixels) needs registers the requantize of 3 pixels takes; multiplies by ``vmlal.s16`` after
widening (18 per pixel, 4 multiply-adds each) cost the same issue cycles as the pairs above and need
the 9 weights widened to 9 q registers.
"""

from __future__ import annotations

import itertools

from .int8_nhwc import DWCONV_GROUP_PIXELS, neon_q8_dwconv_name
from .neon_asm import inline_asm_definition
from .neon_q8_gemm import requantize_asm

TAPS = 9
# Registers of the weights (d12 + t), the inputs (rotating) and the int16 products (alternating).
_WEIGHTS = 12
_INPUTS = (24, 25, 26, 27)
_PRODUCTS = (11, 14)
_OPERANDS = ("ptr %y", "ptr %x", "ptr %w", "ptr %epilogue", "i32 %groups", "i32 %xs", "i32 %xn", "i32 %xg",
             "i32 %params")


def _tap_step(t: int) -> str:
    """The operand stepping ``x`` after loading tap ``t``: next column, next window row, next pixel."""
    return "$7" if t == TAPS - 1 else "$6" if t % 3 == 2 else "$5"


def _accumulate(pixel: int, loads: list[int], group: int) -> list[str]:
    """The 9 taps of one pixel into q(2 pixel), q(2 pixel + 1), ``group`` taps per int16 product (2, or
    4 with weights in [-63, 63]); ``loads`` counts the input loads so far."""
    lo, hi = f"q{2 * pixel}", f"q{2 * pixel + 1}"
    lines = []
    for k, first in enumerate(range(0, TAPS, group)):
        taps = list(range(first, min(first + group, TAPS)))
        regs = []
        for t in taps:
            reg = _INPUTS[len(loads) % len(_INPUTS)]
            loads.append(reg)
            regs.append(reg)
            lines.append(f"vld1.8 {{d{reg}}}, [$1 :64], {_tap_step(t)}")
        product = _PRODUCTS[k % 2]
        lines.append(f"vmull.s8 q{product}, d{regs[0]}, d{_WEIGHTS + taps[0]}")
        lines += [f"vmlal.s8 q{product}, d{reg}, d{_WEIGHTS + t}" for reg, t in zip(regs[1:], taps[1:])]
        low, high = f"d{2 * product}", f"d{2 * product + 1}"
        if k == 1:
            # The first two products (in both product registers now) widened and added in one vaddl each.
            first = _PRODUCTS[0]
            lines += [f"vaddl.s16 {lo}, d{2 * first}, {low}", f"vaddl.s16 {hi}, d{2 * first + 1}, {high}"]
        elif k > 1:
            lines += [f"vaddw.s16 {lo}, {lo}, {low}", f"vaddw.s16 {hi}, {hi}, {high}"]
    return lines


def q8_dwconv3x3_asm(pixels: int, negative: bool, left_shift: bool, unsigned: bool, reduced: bool = False,
                     clamped: bool = True, right_shift: bool = False) -> list[str]:
    """The assembly of ``groups`` (operand $4) groups of ``pixels`` output pixels; operands: ``_OPERANDS``.
    Not ``clamped`` (the clamp is the output type's range), ``params`` is z_y alone and there is no
    ``vmax``/``vmin``: the saturating narrows clamp."""
    assert 1 <= pixels <= DWCONV_GROUP_PIXELS, pixels
    rows = 5 if negative else 3
    lines = ["1:", "vld1.8 {d12-d15}, [$2]!", "vld1.8 {d16-d19}, [$2]!", "vld1.8 {d20}, [$2]", "sub $2, $2, #64"]
    loads: list[int] = []
    for p in range(pixels):
        lines += _accumulate(p, loads, 4 if reduced else 2)
    if left_shift:
        lines.append("vmov.i32 q7, #0")
    # The requantize's registers (neon_q8_gemm.requantize_asm): bias q8, mult_pos q9, shift_pos q10,
    # mult_neg q11, shift_neg q12, zero q7; q6, q13-q15 scratch. The weights are dead by now.
    for half in range(2):
        lines.append("vld1.32 {d16-d19}, [$3]!")
        lines += ["vld1.32 {d20-d23}, [$3]!", "vld1.32 {d24-d25}, [$3]!"] if rows == 5 else ["vld1.32 {d20-d21}, [$3]!"]
        for p in range(pixels):
            lines += requantize_asm(2 * p + half, negative, left_shift, last=p == pixels - 1, right_shift=right_shift)
    lines.append(f"sub $3, $3, #{2 * rows * 16}")
    # clamp_lo in d20, clamp_hi in d21, z_y in the int16 lanes of q9; $8 rotated back to itself.
    lines += ["vdup.8 d20, $8", "ror $8, $8, #8", "vdup.8 d21, $8", "ror $8, $8, #8", "vdup.16 q9, $8",
              "ror $8, $8, #16"] if clamped else ["vdup.16 q9, $8"]
    narrow = "vqmovun.s16" if unsigned else "vqmovn.s16"
    kind = "u8" if unsigned else "s8"
    for p in range(pixels):
        # z_y added to the int16 lanes: where that saturates differently from an int32 add, |value| >
        # 2^15 - 256 and both saturate the 8-bit output alike (|z_y| <= 255).
        out = f"d{4 * p}"
        lines += [f"vqmovn.s32 {out}, q{2 * p}", f"vqmovn.s32 d{4 * p + 1}, q{2 * p + 1}",
                  f"vqadd.s16 q{2 * p}, q{2 * p}, q9", f"{narrow} {out}, q{2 * p}"]
        if clamped:
            lines += [f"vmax.{kind} {out}, {out}, d20", f"vmin.{kind} {out}, {out}, d21"]
        lines.append(f"vst1.8 {{{out}}}, [$0 :64], $5")
    return lines + ["subs $4, $4, #1", "bne 1b"]


# microkernel name -> LLVM IR definition (replacing TVM's declaration of the call).
DEFINITIONS = {
    neon_q8_dwconv_name(p, *f): inline_asm_definition(neon_q8_dwconv_name(p, *f), _OPERANDS, q8_dwconv3x3_asm(p, *f))
    for p in (1, DWCONV_GROUP_PIXELS) for f in itertools.product((False, True), repeat=6) if not (f[1] and f[5])
}
