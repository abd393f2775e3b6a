"""The LLVM IR rewrite that places edgetvm's hand-scheduled ARMv7 NEON microkernels (``kernels/``)
into TVM's LLVM module as inline assembly.

A TIR kernel calls a microkernel by name (``tirx.call_extern``); TVM's LLVM code then declares it.
:func:`with_microkernels` replaces each such declaration with an ``alwaysinline`` definition whose
body is one inline-assembly statement, so LLVM inlines the loop into the calling kernel: no call,
no extra object file, and the same rewrite serves the TVM-runtime ``.so`` and the standalone one.
The microkernels themselves, and why they are assembly: ``kernels/neon_q8_gemm.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import tvm

from ..kernels.neon_q8_gemm import DEFINITIONS
from .neon_mla import lane_mla_kernels, with_lane_mla

_DECLARE = re.compile(r"^declare [^@\n]*@(edgetvm_neon_\w+)\(([^)\n]*)\)[^\n]*$", re.M)


def microkernel_calls(ir: str) -> set[str]:
    """The microkernels TVM's LLVM IR ``ir`` declares (calls without a definition yet)."""
    return {m.group(1) for m in _DECLARE.finditer(ir)}


def with_microkernels(ir: str) -> str:
    """``ir`` with every declared microkernel defined (and inlined by LLVM where it is called)."""
    def define(match: re.Match) -> str:
        name = match.group(1)
        if name not in DEFINITIONS:
            raise ValueError(f"the kernels call an unknown NEON microkernel {name!r}")
        return DEFINITIONS[name]

    return _DECLARE.sub(define, ir)


def recompile_for_neon(lib: tvm.runtime.Module, kernels: tvm.IRModule, workdir: Path) -> tvm.runtime.Module:
    """``lib`` (``tvm.tirx.build`` of ``kernels`` for ARM) recompiled from its LLVM IR with the
    microkernels defined and the lane-MLA kernels' attributes (``neon_mla``); ``lib`` itself when
    neither applies."""
    ir = lib.inspect_source("ll")
    lane_kernels = lane_mla_kernels(kernels)
    if not lane_kernels and not microkernel_calls(ir):
        return lib
    path = Path(workdir) / "kernels_neon.ll"
    path.write_text(with_microkernels(with_lane_mla(ir, lane_kernels)))
    return tvm.runtime.load_module(str(path))
