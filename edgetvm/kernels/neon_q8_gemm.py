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
two steps per loop iteration. At the end ``vpadd.i32`` of each accumulator's halves gives the
pair's two sums: ``out[8 j + c]`` is pixel ``j``, channel ``c`` of the tile.
"""

from __future__ import annotations

from .int8_nhwc import NEON_Q8_GEMM_2X8 as Q8_GEMM_2X8


def _gemm_step() -> list[str]:
    """One 8-deep step: 2 input rows x 4 channel pairs (accumulators q8-q11 row 0, q12-q15 row 1)."""
    lines = ["vld2.32 {d0[], d1[]}, [$1]!", "vld2.32 {d2[], d3[]}, [$2]!",
             "vld1.8 {d4-d7}, [$3]!", "vld1.8 {d8-d11}, [$3]!"]
    for pair in range(4):
        w_lo, w_hi = 4 + 2 * pair, 5 + 2 * pair
        lines += [f"vmull.s8 q6, d0, d{w_lo}", f"vmull.s8 q7, d2, d{w_lo}",
                  f"vmlal.s8 q6, d1, d{w_hi}", f"vmlal.s8 q7, d3, d{w_hi}",
                  f"vpadal.s16 q{8 + pair}, q6", f"vpadal.s16 q{12 + pair}, q7"]
    return lines


def q8_gemm_2x8_asm() -> list[str]:
    zero = [f"vmov.i32 q{q}, #0" for q in range(8, 16)]
    loop = ["1:", *_gemm_step(), *_gemm_step(), "subs $4, $4, #1", "bne 1b"]
    # vpadd of accumulator q(8+k)'s halves d(16+2k), d(17+2k): channels (2k, 2k+1) of its row.
    sums = [f"vpadd.i32 d{k}, d{16 + 2 * k}, d{17 + 2 * k}" for k in range(8)]
    store = ["vst1.32 {d0-d3}, [$0]!", "vst1.32 {d4-d7}, [$0]"]
    return zero + loop + sums + store


def _llvm_asm_string(lines: list[str]) -> str:
    return "\\0A\\09".join(line.replace('"', '\\22') for line in lines)


_CLOBBERS = ",".join([f"~{{d{i}}}" for i in range(32)] + ["~{memory}", "~{cc}"])

# microkernel name -> LLVM IR definition (replacing TVM's ``declare i32 @name(ptr, ptr, ptr, ptr, i32)``).
DEFINITIONS = {
    Q8_GEMM_2X8: (
        f"define internal i32 @{Q8_GEMM_2X8}(ptr %out, ptr %x0, ptr %x1, ptr %w, i32 %iterations) alwaysinline nounwind {{\n"
        f"  %r = call {{ ptr, ptr, ptr, ptr, i32 }} asm sideeffect \"{_llvm_asm_string(q8_gemm_2x8_asm())}\", "
        f"\"=r,=r,=r,=r,=r,0,1,2,3,4,{_CLOBBERS}\"(ptr %out, ptr %x0, ptr %x1, ptr %w, i32 %iterations)\n"
        f"  ret i32 0\n}}"
    ),
}
