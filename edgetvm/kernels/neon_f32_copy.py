"""ARMv7 NEON copy and zero fill of ``n`` contiguous floats: the interior and the border of a padding
(``schedules/padding.py``), as inline assembly (``backends.neon_microkernels``).

Per 32 floats (q0-q7, four 4-register transfers each way, the pointers post-incremented)::

    copy:  vld1.32 {d0-d3}, [x]! ... {d12-d15};  vst1.32 {d0-d3}, [o]! ... {d12-d15}
           subs n, n, #1;  bne 1b                       10 instructions, 0.31 per float
    zero:  vst1.32 {d0-d3}, [o]!  x 4 (q0-q1 zeroed once);  subs;  bne   6 instructions, 0.19 per float

then 16, 8, 4, 2 and 1 floats more as needed. 16 floats per step (q0-q3) was 0.375 per float:
BlazeFace full 54.30 M instructions. What LLVM makes of the same loop in TIR: a
``vld1.64``/``vst1.64`` pair and an address add per 4 floats (the row indices TVM computes keep one
base register per unrolled vector), 0.875 to 1.06 instructions per float, or, rolled, a call to
``memcpy``/``memset``, which counted more instructions still under qemu (BlazeFace full range, its
42 pads of 2.78 M floats: 55.99 M instructions with the unrolled TIR loop, 56.33 M with ``memcpy``).
"""

from __future__ import annotations

import functools
import re

from tvm import tirx

from .neon_asm import inline_asm_definition

COPY_BLOCK = 32  # floats per loop step: q0-q7
# Shorter runs (the stem's 3 channels per pixel) stay TIR loops: cheaper than the call's setup.
COPY_MIN_FLOATS = 16
# The transfers of a step, then of what is left (largest first): (floats, registers).
_TRANSFERS = ((16, ("{d0-d3}", "{d4-d7}")), (8, ("{d0-d3}",)), (4, ("{d0-d1}",)), (2, ("{d0}",)), (1, ("{d0[0]}",)))
_STEP = ("{d0-d3}", "{d4-d7}", "{d8-d11}", "{d12-d15}")
_NAME = re.compile(r"edgetvm_neon_f32_(copy|zero)_n(\d+)")


def copy_name(floats: int, zero: bool) -> str:
    return f"edgetvm_neon_f32_{'zero' if zero else 'copy'}_n{floats}"


def _transfer(registers, zero: bool) -> list[str]:
    """Loads of ``registers`` from ``$1`` then stores to ``$0`` (``zero``: stores of the zeroed q0-q1)."""
    if zero:
        return [f"vst1.32 {'{d0-d3}' if r in _STEP else r}, [$0]!" for r in registers]
    return [f"vld1.32 {r}, [$1]!" for r in registers] + [f"vst1.32 {r}, [$0]!" for r in registers]


def copy_asm(floats: int, zero: bool) -> list[str]:
    """The assembly copying ``floats`` floats from ``$1`` to ``$0`` (``zero``: storing zeros to ``$0``);
    ``$2`` counts the 32-float steps down (the call passes ``floats // 32``)."""
    lines = ["vmov.i32 q0, #0", "vmov.i32 q1, #0"] if zero else []
    blocks, rest = divmod(floats, COPY_BLOCK)
    step = _transfer(_STEP, zero)
    if blocks == 1:
        lines += step
    elif blocks > 1:
        lines += ["1:", *step, "subs $2, $2, #1", "bne 1b"]
    for size, registers in _TRANSFERS:
        if rest >= size:
            lines += _transfer(registers, zero)
            rest -= size
    return lines


@functools.lru_cache(maxsize=None)
def copy_definition(floats: int, zero: bool) -> str:
    return inline_asm_definition(copy_name(floats, zero), ("ptr %o", "ptr %x", "i32 %n"), copy_asm(floats, zero))


def copy_definition_of(name: str) -> str | None:
    """The definition of the copy, zero fill or 3-to-4 channel widening called ``name``; None for another name."""
    match = _NAME.fullmatch(name)
    if match:
        return copy_definition(int(match.group(2)), match.group(1) == "zero")
    match = _WIDEN_NAME.fullmatch(name)
    return widen3_definition(int(match.group(1))) if match else None


def copy_call(floats: int, out: tirx.PrimExpr, x: tirx.PrimExpr | None) -> tirx.Stmt:
    """The call copying ``floats`` floats from address ``x`` to address ``out`` (``x`` None: zeros)."""
    source = out if x is None else x  # the zero fill never reads its second pointer
    return tirx.Evaluate(tirx.call_extern("int32", copy_name(floats, x is None), out, source,
                                          tirx.const(floats // COPY_BLOCK, "int32")))


# 3 channels -> 4 (the 4th zero) of ``n`` pixels: the RGB stem input padded to the NEON GEMM's depth
# step (``transform.PadStemChannels``). Per 4 pixels, de-interleaved by channel and re-interleaved
# with the zeroed q3: 2 ``vld3.32`` + 2 ``vst4.32`` + subs/bne, 1.5 instructions per pixel (the TIR
# loop: 3 scalar copies, a store and the loop, about 10).
WIDEN_BLOCK = 4
_WIDEN_NAME = re.compile(r"edgetvm_neon_f32_widen3_n(\d+)")


def widen3_name(pixels: int) -> str:
    return f"edgetvm_neon_f32_widen3_n{pixels}"


def widen3_asm(pixels: int) -> list[str]:
    """The assembly writing ``pixels`` pixels of 3 floats at ``$1`` as 4 floats (4th zero) at ``$0``;
    ``$2`` counts the 4-pixel steps down (the call passes ``pixels // 4``)."""
    lines = ["vmov.i32 q3, #0"]
    step = ["vld3.32 {d0, d2, d4}, [$1]!", "vld3.32 {d1, d3, d5}, [$1]!",
            "vst4.32 {d0, d2, d4, d6}, [$0]!", "vst4.32 {d1, d3, d5, d7}, [$0]!"]
    blocks, rest = divmod(pixels, WIDEN_BLOCK)
    if blocks == 1:
        lines += step
    elif blocks > 1:
        lines += ["1:", *step, "subs $2, $2, #1", "bne 1b"]
    # The last pixels: the channels in d0-d2, the zero in d3 (vst4 takes 4 consecutive registers).
    lines += ["vmov.i32 d3, #0"] if rest else []
    if rest >= 2:
        lines += ["vld3.32 {d0, d1, d2}, [$1]!", "vst4.32 {d0, d1, d2, d3}, [$0]!"]
        rest -= 2
    if rest:
        lines += ["vld3.32 {d0[0], d1[0], d2[0]}, [$1]!", "vst4.32 {d0[0], d1[0], d2[0], d3[0]}, [$0]!"]
    return lines


@functools.lru_cache(maxsize=None)
def widen3_definition(pixels: int) -> str:
    return inline_asm_definition(widen3_name(pixels), ("ptr %o", "ptr %x", "i32 %n"), widen3_asm(pixels))


def widen3_call(pixels: int, out: tirx.PrimExpr, x: tirx.PrimExpr) -> tirx.Stmt:
    """The call writing ``pixels`` 3-float pixels at address ``x`` as 4-float ones at ``out``."""
    return tirx.Evaluate(tirx.call_extern("int32", widen3_name(pixels), out, x, tirx.const(pixels // WIDEN_BLOCK, "int32")))
