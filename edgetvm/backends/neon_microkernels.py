"""The LLVM IR rewrite that places edgetvm's hand-scheduled ARMv7 NEON microkernels (``kernels/``)
into TVM's LLVM module as inline assembly.

A TIR kernel calls a microkernel by name (``tirx.call_extern``); TVM's LLVM code then declares it.
:func:`with_microkernels` replaces each such declaration with an ``alwaysinline`` definition whose
body is one inline-assembly statement, so LLVM inlines the loop into the calling kernel: no call,
no extra object file, and the same rewrite serves the TVM-runtime ``.so`` and the standalone one.
The microkernels themselves, and why they are assembly: ``kernels/neon_q8_gemm.py`` and
``kernels/neon_q8_dwconv.py`` (int8) and
``kernels/neon_f32_gemm.py``, ``kernels/neon_f32_dwconv.py`` and ``kernels/neon_f32_copy.py`` (fp32).
"""

from __future__ import annotations

import re
from pathlib import Path

import tvm

from ..kernels import neon_f32_gemm, neon_q8_dwconv, neon_q8_gemm
from ..kernels.neon_f32_copy import copy_definition_of
from ..kernels.neon_f32_dwconv import dwconv_definition_of
from .neon_mla import fusable_kernels, with_vmla

DEFINITIONS = {**neon_q8_gemm.DEFINITIONS, **neon_q8_dwconv.DEFINITIONS, **neon_f32_gemm.DEFINITIONS}


def microkernel_definition(name: str) -> str | None:
    """The LLVM IR definition of the microkernel ``name`` (the depthwise ones exist per row width)."""
    return (DEFINITIONS.get(name) or neon_f32_gemm.f32_gemm_tile_definition_of(name) or dwconv_definition_of(name)
            or copy_definition_of(name))

_DECLARE = re.compile(r"^declare [^@\n]*@(edgetvm_neon_\w+)\(([^)\n]*)\)[^\n]*$", re.M)


def microkernel_calls(ir: str) -> set[str]:
    """The microkernels TVM's LLVM IR ``ir`` declares (calls without a definition yet)."""
    return {m.group(1) for m in _DECLARE.finditer(ir)}


def with_microkernels(ir: str, *, inline: bool = True) -> str:
    """``ir`` with every declared microkernel defined and, with ``inline``, each call replaced by the
    definition's inline-assembly statement. Without it (the size-first build, ``optimize="size"``)
    each microkernel is one function that every tile calls: LLVM's cost model counts an assembly
    statement as one instruction, so it fully unrolls the loops around an inlined tile and copies
    the assembly per channel block (RetinaFace 320: 1280 vmla in one 1x1 conv kernel); a call per
    tile costs its d8-d15 saves, measured no slower in total (see benchmarks/bench_compression.py)."""
    def define(match: re.Match) -> str:
        name = match.group(1)
        definition = microkernel_definition(name)
        if definition is None:
            raise ValueError(f"the kernels call an unknown NEON microkernel {name!r}")
        return definition

    defined = _DECLARE.sub(define, ir)
    return _inline_calls(defined) if inline else defined


# A module loaded from LLVM IR is compiled without LLVM's pass pipeline, so ``alwaysinline`` alone
# leaves a real call (and a callee saving d8-d15 around every tile). Every call site takes the
# definition's assembly statement directly; the definition stays for any call left. The int8
# microkernels, inlined this way before their accumulator tile was a whole-buffer access pointer
# (``kernels.int8_nhwc``), overflowed that tile into a later kernel's arguments; inlined now,
# MobileFaceNet int8 is bit-exact with the host and runs 79.1 -> 77.8 M instructions, 156.4 -> 153.0 M
# a7 cycles.
_CALL = re.compile(r"^(\s*)(?:(%[\w.]+) = )?(?:tail |notail )?call i32 @(edgetvm_neon_\w+)\((.*)\)((?:, !dbg !\d+)?)$",
                   re.M)
_ASM_CALL = re.compile(r'^\s*%\w+ = (call (?:\{[^}]*\}|\w+) asm sideeffect ".*", "[^"]*")\((.*)\)$', re.M)
_PARAMETERS = re.compile(r"^define [^(]*\(([^)]*)\)", re.M)


def _split_arguments(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char in "([{<"
        depth -= char in ")]}>"
        if char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return parts + [text[start:].strip()] if text.strip() else parts


def _inline_calls(ir: str) -> str:
    count = 0

    def inline(match: re.Match) -> str:
        nonlocal count
        indent, result, name, arguments, dbg = match.groups()
        definition = microkernel_definition(name) or ""
        asm, parameters = _ASM_CALL.search(definition), _PARAMETERS.search(definition)
        actual = _split_arguments(arguments)
        if asm is None or parameters is None or len(actual) != len(_split_arguments(parameters.group(1))):
            return match.group(0)
        # The statement takes the parameters in its own order (tied ones first, then read-only ones).
        names = [parameter.split()[-1] for parameter in _split_arguments(parameters.group(1))]
        ordered = [actual[names.index(argument.split()[-1])] for argument in _split_arguments(asm.group(2))]
        count += 1
        lines = [f"{indent}%edgetvm.asm.{count} = {asm.group(1)}({', '.join(ordered)}){dbg}"]
        if result:
            lines.append(f"{indent}{result} = add i32 0, 0")
        return "\n".join(lines)

    return _CALL.sub(inline, ir)


def recompile_for_neon(lib: tvm.runtime.Module, workdir: Path, *, inline: bool = True) -> tvm.runtime.Module:
    """``lib`` (``tvm.tirx.build`` for ARM) recompiled from its LLVM IR with the
    microkernels defined (inlined at each call with ``inline``) and every float kernel
    multiplying-accumulating unfused (``neon_mla``); ``lib`` itself when neither applies."""
    ir = lib.inspect_source("ll")
    fusable = fusable_kernels(ir)
    if not fusable and not microkernel_calls(ir):
        return lib
    path = Path(workdir) / "kernels_neon.ll"
    path.write_text(with_microkernels(with_vmla(ir, fusable), inline=inline))
    return tvm.runtime.load_module(str(path))
