"""ARMv7 NEON multiply-accumulate by lane (``vmla.f32 q, q, d[x]``) for the kernels that ask for it.

The lane-broadcast conv tiles of :mod:`edgetvm.schedules.cpu` multiply a weight vector by one lane
of an input vector. ARMv7 has that instruction only as the unfused ``vmla.f32 Qd, Qn, Dm[x]``: the
fused ``vfma.f32`` takes whole vectors, so LLVM would spend a ``vdup.32`` per multiply-accumulate.
LLVM selects VMLA only when the function may not fuse (no fast FP-op fusion, or ``minsize``) and
the core is not declared slow at it; TVM's LLVM backend always compiles with fast fusion. So the
kernels marked with :data:`LANE_MLA_ATTR` are recompiled from TVM's LLVM IR with their compute
functions (and the parallel lambdas they launch) given ``minsize`` and ``+slowfpvfmx``: their
``a * b + c`` becomes ``vmla.f32`` (by lane where the scheme asks for it), every other kernel keeps
``vfma.f32`` and its speed-oriented code. VMLA rounds the product before the add, as a separate
multiply and add would; the kernels stay within 1e-5 of onnxruntime.
"""

from __future__ import annotations

import re

import tvm
from tvm import tirx

from ..schedules.cpu import LANE_MLA_ATTR


_DEFINE = re.compile(r"^define [^@]*@([\w.$]+)\(.*\)[^{#]*#(\d+)[^{]*\{$", re.M)
_ATTRIBUTES = re.compile(r"^attributes #(\d+) = \{ (.*) \}$", re.M)
_LAMBDA = re.compile(r"@(__tvm_parallel_lambda[\w.]*)")


def lane_mla_kernels(mod: tvm.IRModule) -> set[str]:
    """Names of the TIR kernels of ``mod`` scheduled for multiply-accumulate by lane."""
    return {
        gvar.name_hint
        for gvar, func in mod.functions.items()
        if isinstance(func, tirx.PrimFunc) and func.attrs is not None and bool(func.attrs.get(LANE_MLA_ATTR, False))
    }


def _function_bodies(ir: str) -> dict[str, tuple[re.Match, str]]:
    bodies = {}
    for match in _DEFINE.finditer(ir):
        end = ir.find("\n}\n", match.end())
        bodies[match.group(1)] = (match, ir[match.end():end])
    return bodies


def with_lane_mla(ir: str, kernels: set[str]) -> str:
    """``ir`` (TVM's LLVM IR) with the compute functions of ``kernels`` compiled for VMLA.

    Each such function (``<kernel>_compute_``) and every parallel lambda it references gets a copy
    of its attribute group with ``minsize`` added and ``-slowfpvfmx`` turned into ``+slowfpvfmx``.
    """
    bodies = _function_bodies(ir)
    targets = set()
    for kernel in kernels:
        name = f"{kernel}_compute_"
        if name in bodies:
            targets.add(name)
            targets.update(_LAMBDA.findall(bodies[name][1]))
    if not targets:
        return ir
    groups = {int(m.group(1)): m.group(2) for m in _ATTRIBUTES.finditer(ir)}
    new_group: dict[int, int] = {}
    spans = []  # (start, end, group) of each target's attribute group reference
    for name in targets:
        match = bodies[name][0]
        group = int(match.group(2))
        if group not in new_group:
            content = groups[group].replace(",-slowfpvfmx", "").replace('"target-features"="-slowfpvfmx,', '"target-features"="')
            if '"target-features"="' in content:
                content = content.replace('"target-features"="', '"target-features"="+slowfpvfmx,', 1)
            else:
                content += ' "target-features"="+slowfpvfmx"'
            new_group[group] = max([*groups, *new_group.values()]) + 1
            groups[new_group[group]] = f"minsize {content}"
        spans.append((*match.span(2), new_group[group]))
    pieces, last = [], 0
    for start, end, group in sorted(spans):
        pieces += [ir[last:start], str(group)]
        last = end
    pieces.append(ir[last:])
    added = "".join(f"attributes #{g} = {{ {groups[g]} }}\n" for g in sorted(new_group.values()))
    return "".join(pieces).rstrip("\n") + "\n" + added
