"""ARMv7 NEON copy and zero fill of ``n`` contiguous floats: the interior and the border of a padding
(``schedules/padding.py``), as inline assembly (``backends.neon_microkernels``).

Per 16 floats (q0-q3, two 4-register transfers each way, the pointers post-incremented)::

    copy:  vld1.32 {d0-d3}, [x]!;  vld1.32 {d4-d7}, [x]!;  vst1.32 {d0-d3}, [o]!;  vst1.32 {d4-d7}, [o]!
           subs n, n, #1;  bne 1b                       6 instructions, 0.375 per float
    zero:  vst1.32 {d0-d3}, [o]!;  vst1.32 {d4-d7}, [o]!;  subs;  bne   4 instructions, 0.25 per float

then 8, 4, 2 and 1 floats more as needed. What LLVM makes of the same loop in TIR: a
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

COPY_BLOCK = 16  # floats per loop step: q0-q3
_TAIL = ((8, "{d0-d3}"), (4, "{d0-d1}"), (2, "{d0}"), (1, "{d0[0]}"))
_NAME = re.compile(r"edgetvm_neon_f32_(copy|zero)_n(\d+)")


def copy_name(floats: int, zero: bool) -> str:
    return f"edgetvm_neon_f32_{'zero' if zero else 'copy'}_n{floats}"


def copy_asm(floats: int, zero: bool) -> list[str]:
    """The assembly copying ``floats`` floats from ``$1`` to ``$0`` (``zero``: storing zeros to ``$0``);
    ``$2`` counts the 16-float steps down (the call passes ``floats // 16``)."""
    registers = ["{d0-d3}", "{d4-d7}"]
    step = [f"vst1.32 {r}, [$0]!" for r in registers]
    if zero:
        lines = ["vmov.i32 q0, #0", "vmov.i32 q1, #0", "vmov.i32 q2, #0", "vmov.i32 q3, #0"]
    else:
        lines = []
        step = [f"vld1.32 {r}, [$1]!" for r in registers] + step
    blocks, rest = divmod(floats, COPY_BLOCK)
    if blocks == 1:
        lines += step
    elif blocks > 1:
        lines += ["1:", *step, "subs $2, $2, #1", "bne 1b"]
    for size, register in _TAIL:
        if rest >= size:
            lines += ([] if zero else [f"vld1.32 {register}, [$1]!"]) + [f"vst1.32 {register}, [$0]!"]
            rest -= size
    return lines


@functools.lru_cache(maxsize=None)
def copy_definition(floats: int, zero: bool) -> str:
    return inline_asm_definition(copy_name(floats, zero), ("ptr %o", "ptr %x", "i32 %n"), copy_asm(floats, zero))


def copy_definition_of(name: str) -> str | None:
    """The definition of the copy or zero fill called ``name``; None for another name."""
    match = _NAME.fullmatch(name)
    return copy_definition(int(match.group(2)), match.group(1) == "zero") if match else None


def copy_call(floats: int, out: tirx.PrimExpr, x: tirx.PrimExpr | None) -> tirx.Stmt:
    """The call copying ``floats`` floats from address ``x`` to address ``out`` (``x`` None: zeros)."""
    source = out if x is None else x  # the zero fill never reads its second pointer
    return tirx.Evaluate(tirx.call_extern("int32", copy_name(floats, x is None), out, source,
                                          tirx.const(floats // COPY_BLOCK, "int32")))
