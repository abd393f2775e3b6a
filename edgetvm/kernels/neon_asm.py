"""How edgetvm's ARMv7 NEON microkernels (``neon_f32_gemm``, ``neon_f32_dwconv``, ``neon_q8_gemm``) are
written down for LLVM: one ``alwaysinline`` function whose body is a single inline-assembly statement
that takes every operand in a general register, tied to an output so the assembly may step it, and
clobbers every NEON register (``backends.neon_microkernels`` puts the statement at each call site)."""

from __future__ import annotations

import re

NEON_CLOBBERS = ",".join([f"~{{d{i}}}" for i in range(32)] + ["~{memory}", "~{cc}"])


def llvm_asm_string(lines: list[str]) -> str:
    """The assembly ``lines`` as one LLVM IR string constant's contents (newline-tab separated)."""
    return "\\0A\\09".join(line.replace('"', '\\22') for line in lines)


def inline_asm_definition(name: str, operands: tuple[str, ...], lines: list[str], read_only: frozenset[int] = frozenset()) -> str:
    """The LLVM IR definition of microkernel ``name(operands)`` (``"ptr %c"``, ``"i32 %n"``, ...)
    whose body is the assembly ``lines``; operand ``i`` is ``$i`` in them. Returns i32 0, as the
    ``tirx.call_extern`` of the kernels declares. Every operand is tied to an output (the assembly
    may step it) except those in ``read_only``, which it must not write: LLVM may then keep them in
    a register across calls instead of copying them into a fresh one for each."""
    tied = [i for i in range(len(operands)) if i not in read_only]
    inputs = [i for i in range(len(operands)) if i in read_only]
    # LLVM numbers the outputs, then the inputs (the tied copies first).
    number = {i: k for k, i in enumerate(tied)} | {i: 2 * len(tied) + k for k, i in enumerate(inputs)}
    lines = [re.sub(r"\$(\d+)", lambda m: f"${number[int(m.group(1))]}", line) for line in lines]
    types = ", ".join(operands[i].split()[0] for i in tied)
    # LLVM returns one tied output as a plain value, several as a struct.
    returned = types if len(tied) == 1 else f"{{ {types} }}"
    # Early-clobber outputs when there are read-only inputs: written before the last read of those.
    output = "=&r" if inputs else "=r"
    constraints = ",".join([output] * len(tied) + [str(k) for k in range(len(tied))] + ["r"] * len(inputs))
    arguments = ", ".join(operands[i] for i in tied + inputs)
    return (
        f"define internal i32 @{name}({', '.join(operands)}) alwaysinline nounwind {{\n"
        f"  %r = call {returned} asm sideeffect \"{llvm_asm_string(lines)}\", "
        f"\"{constraints},{NEON_CLOBBERS}\"({arguments})\n"
        f"  ret i32 0\n}}"
    )
