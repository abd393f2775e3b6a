"""The host's kernels with every product rounded before it is added, as the ARMv7 build rounds it.

ARMv7 NEON multiplies by a vector lane only unfused (``vmla.f32 q, q, d[x]``: ``a * b`` rounded,
then ``+ c`` rounded), and most of an ARM build's multiply-accumulates go through it: the 1x1 conv
and stem GEMM microkernels, the depthwise microkernels (``kernels/``) and the lane-broadcast conv
tiles. The fused ``vfma.f32`` takes whole vectors only, so fusing there would cost a ``vdup`` or a
broadcast load per multiply-accumulate (the 1x4x8 GEMM step: 53 instructions per 128 MACs instead of
41). The ARM build therefore compiles every kernel unfused (``neon_mla``), and the host does the same
here: TVM emits ``a * b + c`` as ``llvm.fmuladd`` and compiles with fast FP-op fusion, which on an
FMA machine rounds once. With both unfused, the kernels of the two builds compute the same float32
operations in the same order (the schedules sum every reduction in the same sequence) and their
outputs agree bit for bit: the selfie segmenter's ARM build under qemu was 1.22e-5 from the host
build, measured kernel by kernel from its first kernel on; now every kernel's output is identical.

The rewrite, on TVM's LLVM IR: ``%r = call @llvm.fmuladd(a, b, c)`` becomes ``fmul a, b``, an
``llvm.arithmetic.fence`` of the product, ``fadd`` of it and ``c``; every other ``fmul``'s result
passes through the fence too. The fence emits no instruction; LLVM cannot contract across it.
"""

from __future__ import annotations

import re
from pathlib import Path

import tvm

from .float_products import FMUL, FMULADD

_FENCE_DECLARATION = re.compile(r"^declare [^@\n]*@llvm\.arithmetic\.fence\.(\w+)\(", re.M)


def _suffix(ty: str) -> str:
    lanes = re.match(r"<(\d+) x float>", ty)
    return f"v{lanes.group(1)}f32" if lanes else "f32"


def with_unfused_products(ir: str) -> str:
    """``ir`` (TVM's LLVM IR) with no product that LLVM may fuse into an addition (see the module
    docstring); ``ir`` itself when it has none."""
    fences: dict[str, str] = {}
    count = 0

    def fenced(indent: str, result: str, ty: str, multiply: str) -> str:
        """``result = fence(multiply)``: the product under a new name, fenced under ``result``."""
        nonlocal count
        count += 1
        fences[_suffix(ty)] = ty
        product = f"%edgetvm.product.{count}"
        return (f"{indent}{product} = {multiply}\n"
                f"{indent}{result} = call {ty} @llvm.arithmetic.fence.{_suffix(ty)}({ty} {product})")

    def fence_fmul(match: re.Match) -> str:
        indent, result, flags, ty, operands = match.groups()
        return fenced(indent, result, ty, f"fmul {flags}{ty} {operands}")

    def split_fmuladd(match: re.Match) -> str:
        indent, result, ty, a, b, c, rest = match.groups()
        product = f"%edgetvm.fenced.{count + 1}"
        multiply = fenced(indent, product, ty, f"fmul {ty} {a}, {b}")
        return f"{multiply}\n{indent}{result} = fadd {ty} {product}, {c}{rest}"

    # Plain products first: the ones split out of fmuladd below are fenced as they are written.
    ir = FMULADD.sub(split_fmuladd, FMUL.sub(fence_fmul, ir))
    declared = set(_FENCE_DECLARATION.findall(ir))
    missing = [f"declare {ty} @llvm.arithmetic.fence.{suffix}({ty})" for suffix, ty in fences.items()
               if suffix not in declared]
    return ir + "\n" + "\n".join(missing) + "\n" if missing else ir


def recompile_unfused(lib: tvm.runtime.Module, workdir: Path) -> tvm.runtime.Module:
    """``lib`` (``tvm.tirx.build`` for the host) recompiled from its LLVM IR without fused products;
    ``lib`` itself when nothing changes."""
    ir = lib.inspect_source("ll")
    unfused = with_unfused_products(ir)
    if unfused == ir:
        return lib
    path = Path(workdir) / "kernels_unfused.ll"
    path.write_text(unfused)
    return tvm.runtime.load_module(str(path))
