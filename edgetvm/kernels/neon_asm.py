"""How edgetvm's ARMv7 NEON microkernels (``neon_f32_gemm``, ``neon_f32_dwconv``, ``neon_q8_gemm``) are
written down for LLVM: one ``alwaysinline`` function whose body is a single inline-assembly statement
that takes every operand in a general register, tied to an output so the assembly may step it, and
clobbers every NEON register (``backends.neon_microkernels`` puts the statement at each call site)."""

from __future__ import annotations

NEON_CLOBBERS = ",".join([f"~{{d{i}}}" for i in range(32)] + ["~{memory}", "~{cc}"])


def llvm_asm_string(lines: list[str]) -> str:
    """The assembly ``lines`` as one LLVM IR string constant's contents (newline-tab separated)."""
    return "\\0A\\09".join(line.replace('"', '\\22') for line in lines)


def inline_asm_definition(name: str, operands: tuple[str, ...], lines: list[str]) -> str:
    """The LLVM IR definition of microkernel ``name(operands)`` (``"ptr %c"``, ``"i32 %n"``, ...)
    whose body is the assembly ``lines``; operand ``i`` is ``$i`` in them. Returns i32 0, as the
    ``tirx.call_extern`` of the kernels declares."""
    types = ", ".join(op.split()[0] for op in operands)
    # LLVM returns one tied output as a plain value, several as a struct.
    returned = types if len(operands) == 1 else f"{{ {types} }}"
    outputs = ",".join(["=r"] * len(operands))
    tied = ",".join(str(i) for i in range(len(operands)))
    return (
        f"define internal i32 @{name}({', '.join(operands)}) alwaysinline nounwind {{\n"
        f"  %r = call {returned} asm sideeffect \"{llvm_asm_string(lines)}\", "
        f"\"{outputs},{tied},{NEON_CLOBBERS}\"({', '.join(operands)})\n"
        f"  ret i32 0\n}}"
    )
