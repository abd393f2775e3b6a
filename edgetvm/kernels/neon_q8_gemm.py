"""The ARMv7 NEON int8 GEMM microkernel, as an LLVM IR definition whose body is one inline-assembly
statement (``backends.neon_microkernels`` puts it in place of TVM's declaration of the call).

Why assembly: the int8 GEMM's inner loop needs all 16 q registers (8 accumulators, 2 pixels of
input, 4 of weights, 2 of products). Written as NEON intrinsics in TIR, LLVM schedules every
multiply of a step before the first ``vpadal`` and spills; the TIR 1-pixel tile that avoids the
spill reloads the weights for every pixel (3 multiply-adds per instruction measured on MobileFaceNet).

``edgetvm_neon_q8_gemm_2x8(out, x0, x1, w, iterations)``: int32 ``out[16]`` = the dot products of
two input rows ``x0``, ``x1`` (int8, ``16 * iterations`` long) with the 8 weight rows of one tile of
``pack_gemm_weights``' paired layout. Per 8 depth ``d`` and channel pair (m, m')::

    vld2.32    {d0[], d1[]}, [x0]!        d0 = x0[d:d+4] twice, d1 = x0[d+4:d+8] twice
    vmull.s8   q6, d0, d4                 [w_m[d:d+4], w_m'[d:d+4]]: int16 products
    vmlal.s8   q6, d1, d5                 + [w_m[d+4:d+8], w_m'[d+4:d+8]]  (|2 * 128 * 127| < 2^15)
    vpadal.s16 q8, q6                     int32 lanes (m, m, m', m') += adjacent pairs

128 multiply-adds in 28 instructions (2 input loads, 2 weight loads of 32 bytes, 24 arithmetic),
two steps per loop iteration (and one after the loop for a depth of 16 k + 8: ``_tail8``, MobileNetV2's
24-channel 1x1 convs, which went through im2col with the depth padded to 32 before: its two 24 -> 144
convs 11.44 -> 9.67 M instructions, 22.08 -> 18.48 M a7 cycles; at depth 24 the requantize of each
tile is a third of it). At the end ``vpadd.i32`` of each accumulator's halves gives the
pair's two sums: ``out[8 j + c]`` is pixel ``j``, channel ``c`` of the tile.

``edgetvm_neon_q8_gemm_2x8[_w7]_requantize[_negative][_left_shift][_u8][_tail8][_unclamped](y0, y1, x0, x1, w,
iterations, epilogue, z_y, clamp, tiles, count)``: for each of ``tiles`` tiles of 8 channels of the same two
pixels, the same loop, then the requantize in the registers the sums are in (no int32 tile through the
stack, no TIR epilogue reloading it), and the two pixels' 8 bytes stored to ``y0`` and ``y1``. Per tile of 16 outputs: 8 ``vpadd``, 3 or 5 q registers of ``pack_epilogue``
rows per group of 4 channels, per int32x4 ``vadd`` (bias), ``vqrdmulh``, ``vand`` + ``vsra``
(RoundingDivideByPOT's fixup), ``vrshl`` (+4 for the PReLU multiplier's select by sign, +3 for left
shifts), then ``vqmovn`` to int16, ``z_y`` added there 8 lanes at a time, ``vqmovn``/``vqmovun`` to
8 bits and the clamp: about 70 instructions with PReLU, 55 without. Measured on MobileFaceNet int8
(cortex-a7, standalone): 82.83 M -> 81.82 M instructions with the fused tile, 81.10 M with the
``vsra`` fixup and the int16 ``z_y`` (the TIR epilogue LLVM wrote was already close to this one: most
of the tile is the requantize arithmetic itself). The loop is the floor of this scheme: 58
instructions per 256 multiply-adds, 46.6 M of MobileFaceNet's 205.6 M 1x1 multiply-adds.

Reduced-range weights (``_w7``: every weight in [-63, 63], ``int8_nhwc.REDUCED_WEIGHT_MAX``, what
``QuantizeAnnotate`` gives a dense conv): 4 products fit an int16 lane (4 * 128 * 63 = 32256 <
2^15), so one ``vpadal`` per 32 multiply-adds instead of per 16. Per 16 depth (one loop iteration)
and channel pair, with ``pack_gemm_weights(w, reduced=True)``'s 32 bytes of the pair::

    vld4.32    {d0[], d1[], d2[], d3[]}, [x0]!    row 0's 16 bytes, 4 at a time, each twice (once per 16 depth)
    vld4.32    {d4[], d5[], d6[], d7[]}, [x1]!    row 1's
    vld1.8     {d8-d11}, [w]!                     [w_m[d:d+4], w_m'[d:d+4]], ..., [w_m[d+12:d+16], w_m'[..]]
    vmull.s8   q6, d0, d8                         row 0 (q7: row 1, d4-d7)
    vmlal.s8   q6, d1, d9
    vmlal.s8   q6, d2, d10
    vmlal.s8   q6, d3, d11                        |4 * 128 * 63| < 2^15
    vpadal.s16 q8, q6                             int32 lanes (m, m, m', m')

256 multiply-adds in 46 instructions + ``subs``/``bne`` (0.19 per MAC; full range: 58, 0.23) and, by
``neon_cycles``' a7 model (read off its ``dump=``), 104 issue cycles (0.41 per MAC: 64 for the 32
``vmull``/``vmlal`` with a q destination, 16 for the 8 ``vpadal``, 16 for the 4 weight loads, 6 for the 2
splat loads, 2 for ``subs``/``bne``; full range: 122, 0.48; fp32's ``vmla.f32 q`` alone: 0.5). On
MobileFaceNet (803 k iterations) the loop is about 83.5 M of the 1x1 convs' 97.9 M a7 cycles, the
119 k tiles' epilogues and calls 14.4 M (18 M before the run of tiles, the ``_unclamped`` spelling, the
in-place select and the ungated fixup below): the loop, not the epilogue, is what stands between the
int8 build and 0.7x its fp32 (114.2 M; the model is at 121.9 M with ``--reduce-range``). Registers: all 32 d; a depth of 16 k + 8 ends with the 8-deep step
above (its pair blocks stay in the full-range order). Measured on MobileFaceNet int8 (cortex-a7,
standalone, 1 thread, ``bench_arm.py --per-kernel``): the 32 1x1 convs 57.50 -> 49.46 M instructions
and 118.12 -> 103.64 M a7 cycles (0.575 -> 0.504 a7 cycles per MAC); the rest of the tile's cycles
is the requantize and the calls. A 16-deep step cannot keep a pair's weights for both 8-deep halves
in the full-range order (two pointers and register post-increments: 8 weight loads instead of 4,
50 instructions), hence the separate packing.

The first 16 depth are peeled: their ``vpaddl.s16`` start the accumulators instead of 8 ``vmov.i32 #0``
(+ ``subs``/``beq`` past the loop for one iteration), and q7 is zeroed only for left shifts: MobileFaceNet
int8 with ``--reduce-range`` (cortex-a7, standalone, 1 thread, ``bench_arm.py --per-kernel``) 1x1 convs
49.46 -> 48.39 M instructions, 103.64 -> 101.50 M a7 cycles; the model 63.1 -> 62.1 M, 130.0 -> 127.9 M.
Measured and not kept: PReLU's multipliers at one shift (the sign then selects the multiplier only:
``vcge`` + 1 ``vbsl`` instead of ``vcge``, ``vmov``, 2 ``vbsl``) took the model to 126.2 M a7 cycles, but
the smaller side keeps 31 - |e_pos - e_neg| mantissa bits, and with it in every kernel SFace's int8
embedding cosine fell 0.9904 -> 0.9898 (min, under its 0.99 bar): 1.3 % is not worth the precision.
The bias as the accumulators' initial value (a packed [b_m, 0, b_m', 0] tile) would replace 4 ``vadd``
(8 a7 cycles) and the 2 bias loads (4) with 2 loads of 4 d (8) + 4 ``vmov`` q (8) for the second row's
accumulators: more cycles by the a7 model, not built. A larger tile (4 pixels x 4 channels: 8
accumulators, the 2 pairs' 8 weight d held, one pixel's 4 splat d at a time, 2 products) fills the 32 d
registers too and costs 102 a7 cycles per 256 multiply-adds against 104: not built.

The epilogue per tile of 16 outputs, a7 cycles (``neon_cycles`` dump, PReLU, no left shift): 8 ``vpadd``
8; the epilogue rows 2 x 10 (one cycle per d loaded); per int32x4 20 (``vadd`` 2, ``vcge`` + ``vorr`` +
2 ``vbsl`` 8, ``vqrdmulh`` 4, ``vand`` + ``vsra`` 4, ``vrshl`` 2), 18 for the second of a group of 4
channels (``vcge`` + 2 ``vbit`` into the negative side's rows, dead after it: ``requantize_asm``'s
``last``; 4 a7 cycles per tile, MobileFaceNet int8 ``--reduce-range`` 1x1 convs 99.23 -> 98.87 M), 76
for the 4; 2 less each where every multiplier shifts right by at least 1 (``right_shift``, what
``int8_nhwc.only_right_shifts`` tells the fold pass; every MobileFaceNet conv): RoundingDivideByPOT's
fixup is then ``vsra`` of the product's own sign, not gated by the shift with a ``vand`` (MobileFaceNet
int8 ``--reduce-range`` 1x1 convs 98.87 -> 97.92 M a7 cycles, 46.42 -> 45.94 M instructions); the narrows
and ``z_y``
18; the 2 stores 4; the clamp 10 (2 ``vdup.8``, 2 ``ror``, ``vmax``, ``vmin``), only in a kernel whose clamp
cuts into the output type (ReLU, ReLU6: ``int8_nhwc.narrower_clamp``; ``_unclamped`` otherwise, every
MobileFaceNet 1x1 conv: its PReLU and linear outputs saturate at the int8 range, which the saturating
narrows give for free); and since one call runs all the tiles of a pixel pair (``tiles``; x0 and x1
rewound, w and epilogue read on), 5 scalar instructions per tile (``mov``, 2 ``sub``, ``subs``, ``bne``)
instead of TIR's 14 address and constant moves and its loop's 2. A 28x28 PReLU 1x1 conv to 128
channels alone (cortex-a7, standalone, reduced-range weights), a7 cycles per tile: depth 64 566.4 ->
556.4, depth 128 995.4 -> 972.4 (instructions 278.4 -> 263.4, 474.4 -> 455.4).
"""

from __future__ import annotations

import itertools

from .int8_nhwc import neon_q8_gemm_name, neon_q8_gemm_requantize_name
from .neon_asm import inline_asm_definition


def _gemm_step(x0: str = "$1", x1: str = "$2", w: str = "$3") -> list[str]:
    """One 8-deep step: 2 input rows x 4 channel pairs (accumulators q8-q11 row 0, q12-q15 row 1);
    ``x0``, ``x1``, ``w``: the operands holding the pointers."""
    lines = [f"vld2.32 {{d0[], d1[]}}, [{x0}]!", f"vld2.32 {{d2[], d3[]}}, [{x1}]!",
             f"vld1.8 {{d4-d7}}, [{w}]!", f"vld1.8 {{d8-d11}}, [{w}]!"]
    for pair in range(4):
        w_lo, w_hi = 4 + 2 * pair, 5 + 2 * pair
        lines += [f"vmull.s8 q6, d0, d{w_lo}", f"vmull.s8 q7, d2, d{w_lo}",
                  f"vmlal.s8 q6, d1, d{w_hi}", f"vmlal.s8 q7, d3, d{w_hi}",
                  f"vpadal.s16 q{8 + pair}, q6", f"vpadal.s16 q{12 + pair}, q7"]
    return lines


def _gemm_step_reduced(x0: str = "$1", x1: str = "$2", w: str = "$3") -> list[str]:
    """One 16-deep step of the reduced-range tile (weights in [-63, 63]: 4 products per int16 lane);
    d0-d3 row 0's 16 bytes, d4-d7 row 1's, d8-d11 one channel pair's 32 weight bytes."""
    lines = [f"vld4.32 {{d0[], d1[], d2[], d3[]}}, [{x0}]!", f"vld4.32 {{d4[], d5[], d6[], d7[]}}, [{x1}]!"]
    for pair in range(4):
        lines += [f"vld1.8 {{d8-d11}}, [{w}]!", "vmull.s8 q6, d0, d8", "vmull.s8 q7, d4, d8"]
        for quarter in range(1, 4):
            lines += [f"vmlal.s8 q6, d{quarter}, d{8 + quarter}", f"vmlal.s8 q7, d{4 + quarter}, d{8 + quarter}"]
        lines += [f"vpadal.s16 q{8 + pair}, q6", f"vpadal.s16 q{12 + pair}, q7"]
    return lines


def _first(step: list[str]) -> list[str]:
    """``step`` writing its accumulators instead of adding to them: each accumulator's first
    ``vpadal.s16`` becomes ``vpaddl.s16`` (the same cost), so no ``vmov.i32 #0`` zeroes them."""
    out, seen = [], set()
    for line in step:
        if line.startswith("vpadal.s16 ") and line.split()[1] not in seen:
            seen.add(line.split()[1])
            line = line.replace("vpadal.s16", "vpaddl.s16", 1)
        out.append(line)
    return out


def _gemm_loop(x0: str, x1: str, w: str, iterations: str, tail: bool, reduced: bool) -> list[str]:
    """16 depth per iteration and, with ``tail``, 8 more (the 8-deep step reads its 64 weight bytes in
    ``pack_gemm_weights``' layout of either range). The first iteration is peeled and starts the
    accumulators with ``vpaddl`` (``iterations >= 1``: ``gemm_fits`` takes no depth below 16): 8
    ``vmov.i32 #0`` fewer and a ``subs`` + ``beq`` more per tile."""
    step = _gemm_step(x0, x1, w)
    body = _gemm_step_reduced(x0, x1, w) if reduced else step + step
    count = [f"subs {iterations}, {iterations}, #1"]
    return [*_first(body), *count, "beq 2f", "1:", *body, *count, "bne 1b", "2:", *(step if tail else [])]


def q8_gemm_2x8_asm(tail: bool = False, reduced: bool = False) -> list[str]:
    """``tail``: one 8-deep step after the loop (a depth of 16 k + 8); ``reduced``: weights in [-63, 63]."""
    loop = _gemm_loop("$1", "$2", "$3", "$4", tail, reduced)
    # vpadd of accumulator q(8+k)'s halves d(16+2k), d(17+2k): channels (2k, 2k+1) of its row.
    sums = [f"vpadd.i32 d{k}, d{16 + 2 * k}, d{17 + 2 * k}" for k in range(8)]
    store = ["vst1.32 {d0-d3}, [$0]!", "vst1.32 {d4-d7}, [$0]"]
    return loop + sums + store


def requantize_asm(acc: int, negative: bool, left_shift: bool, last: bool = False, right_shift: bool = False) -> list[str]:
    """``M (acc + bias)`` of int32x4 q``acc`` in place (``kernels.fixed_point`` semantics, the NEON
    spelling of ``IntegerVectorOps.requantize`` without ``z_y``): bias q8, mult_pos q9, shift_pos q10,
    mult_neg q11, shift_neg q12, zero q7; q6, q13-q15 scratch.

    ``last``: the last accumulator of these parameters, so the PReLU select may overwrite the negative
    side's: ``vbit`` of the positive side into q11 and q12 where ``acc >= 0``, without the copy of the
    mask that 2 ``vbsl`` need (a ``vorr`` q, 2 a7 cycles). ``right_shift``: every shift is a right shift
    of at least 1 (``int8_nhwc.only_right_shifts``), so the fixup is the product's own sign, one ``vsra``
    without the ``vand`` gating it by the shift (2 a7 cycles).

    The fixup of RoundingDivideByPOT is ``vsra`` (a plain add), not a saturating add: |m| < 2^31
    (``quantize_multiplier``) keeps ``vqrdmulh`` above INT32_MIN, so adding -1 cannot overflow.
    """
    a = f"q{acc}"
    lines = [f"vadd.i32 {a}, {a}, q8"]
    mult, shift = "q9", "q10"
    if negative and last:
        lines += [f"vcge.s32 q13, {a}, #0", "vbit q11, q9, q13", "vbit q12, q10, q13"]
        mult, shift = "q11", "q12"
    elif negative:
        lines += [f"vcge.s32 q13, {a}, #0", "vmov q14, q13", "vbsl q13, q9, q11", "vbsl q14, q10, q12"]
        mult, shift = "q13", "q14"
    if left_shift:
        lines += [f"vmax.s32 q6, {shift}, q7", f"vshl.s32 {a}, {a}, q6", f"vmin.s32 q6, {shift}, q7"]
        shift = "q6"
    assert not (left_shift and right_shift)
    # RoundingDivideByPOT: -1 where the product is negative and there is a right shift.
    fixup = [f"vsra.s32 {a}, {a}, #31"] if right_shift else [f"vand q15, {a}, {shift}", f"vsra.s32 {a}, q15, #31"]
    return lines + [f"vqrdmulh.s32 {a}, {a}, {mult}", *fixup, f"vrshl.s32 {a}, {a}, {shift}"]


def q8_gemm_2x8_requantize_asm(negative: bool, left_shift: bool, unsigned: bool, tail: bool = False,
                               reduced: bool = False, clamped: bool = True, right_shift: bool = False) -> list[str]:
    """The 2x8 GEMM with the requantize in the same registers, for a run of ``tiles`` tiles of 8 channels
    of the same two pixels: the tile's 16 int32 sums never leave the registers, and the call, the
    addresses of its operands and its register moves are paid once per run, not per tile.

    Operands: $0 y0, $1 y1 (the two pixels' outputs, stepped by 8 bytes per tile), $2 x0, $3 x1 (rewound
    after each tile), $4 w, $5 iterations, $6 the tiles' ``pack_epilogue`` rows (two groups of 4 channels
    per tile; both $4 and $6 read on from one tile to the next), $7 z_y, $8 ``clamp_lo & 0xff |
    (clamp_hi & 0xff) << 8`` (read only when ``clamped``, else the saturating narrows are the clamp),
    $9 tiles, $10 scratch (the depth count).
    """
    rows = 5 if negative else 3
    params = ["vld1.32 {d16-d19}, [$6]!", "vld1.32 {d20-d23}, [$6]!" if rows == 5 else "vld1.32 {d20-d21}, [$6]!"]
    if rows == 5:
        params.append("vld1.32 {d24-d25}, [$6]!")
    lines = ["3:", "mov $10, $5", *_gemm_loop("$2", "$3", "$4", "$10", tail, reduced)]
    # Sums of rows 0 and 1 in q0 q1 (channels 0-3, 4-7) and q2 q3.
    lines += [f"vpadd.i32 d{k}, d{16 + 2 * k}, d{17 + 2 * k}" for k in range(8)]
    if left_shift:
        lines += ["vmov.i32 q7, #0"]  # the bound of vmax/vmin splitting the shift into left and right
    for group, accs in ((0, (0, 2)), (1, (1, 3))):
        lines += params
        for acc in accs:
            lines += requantize_asm(acc, negative, left_shift, last=acc == accs[-1], right_shift=right_shift)
    narrow = "vqmovun.s16" if unsigned else "vqmovn.s16"
    kind = "u8" if unsigned else "s8"
    # z_y added to the int16 lanes, 8 at a time: where the int16 saturation differs from an int32 add,
    # |value| > 2^15 - 256 and both saturate the 8-bit output alike (|z_y| <= 255).
    lines += ["vqmovn.s32 d0, q0", "vqmovn.s32 d1, q1", "vqmovn.s32 d2, q2", "vqmovn.s32 d3, q3",
              "vdup.16 q4, $7", "vqadd.s16 q0, q0, q4", "vqadd.s16 q1, q1, q4",
              f"{narrow} d0, q0", f"{narrow} d1, q1"]
    if clamped:
        # $8 rotated back to itself for the next tile.
        lines += ["vdup.8 q5, $8", "ror $8, $8, #8", "vdup.8 q6, $8", "ror $8, $8, #24", f"vmax.{kind} q0, q0, q5",
                  f"vmin.{kind} q0, q0, q6"]
    # The next tile: the same input rows (16 bytes per iteration, 8 more with the tail) against the next
    # 8 channels' weights and epilogue rows, which follow in memory.
    rewind = [f"sub {x}, {x}, $5, lsl #4" for x in ("$2", "$3")] + ([f"sub {x}, {x}, #8" for x in ("$2", "$3")]
                                                                       if tail else [])
    return lines + ["vst1.8 {d0}, [$0]!", "vst1.8 {d1}, [$1]!", *rewind, "subs $9, $9, #1", "bne 3b"]


_Q8_GEMM_OPERANDS = ("ptr %out", "ptr %x0", "ptr %x1", "ptr %w", "i32 %iterations")
# Every operand is read and advanced (or overwritten) by the assembly: all tied outputs.
_REQUANTIZE_OPERANDS = ("ptr %y0", "ptr %y1", "ptr %x0", "ptr %x1", "ptr %w", "i32 %iterations", "ptr %epilogue",
                        "i32 %zero_point", "i32 %clamp", "i32 %tiles", "i32 %count")

# microkernel name -> LLVM IR definition (replacing TVM's declaration of the call).
DEFINITIONS = {
    **{neon_q8_gemm_name(t, r): inline_asm_definition(neon_q8_gemm_name(t, r), _Q8_GEMM_OPERANDS,
                                                      q8_gemm_2x8_asm(t, r))
       for t in (False, True) for r in (False, True)},
    **{neon_q8_gemm_requantize_name(*f): inline_asm_definition(
        neon_q8_gemm_requantize_name(*f), _REQUANTIZE_OPERANDS, q8_gemm_2x8_requantize_asm(*f))
       for f in itertools.product((False, True), repeat=7) if not (f[1] and f[6])},
}
