"""ARMv7 NEON multiply-accumulate unfused (``vmla.f32``) in every float kernel, as the host rounds.

The lane-broadcast conv tiles of :mod:`edgetvm.schedules.cpu` multiply a weight vector by one lane
of an input vector. ARMv7 has that instruction only as the unfused ``vmla.f32 Qd, Qn, Dm[x]``: the
fused ``vfma.f32`` takes whole vectors, so LLVM would spend a ``vdup.32`` per multiply-accumulate.
The GEMM and depthwise microkernels (``kernels/``) use ``vmla.f32`` for the same reason. So that one
ARM build rounds like the host build (``unfused_products``: the host rounds every product too),
every other kernel's ``a * b + c`` is ``vmla.f32`` as well: it costs what ``vfma.f32`` costs (one
instruction, the same issue cycles on Cortex-A7 and A9, neon_cycles.md), and the kernels of the two
builds then agree bit for bit (the fused ones left the selfie segmenter's ARM build 1.22e-5 from
the host's; now 0).

LLVM selects VMLA only when the function may not fuse (no fast FP-op fusion, or ``minsize``) and
the core is not declared slow at it; TVM's LLVM backend always compiles with fast fusion, and
``+slowfpvfmx`` alone gives a ``vmul.f32`` + ``vadd.f32`` pair. So every kernel with a float
product is recompiled from TVM's LLVM IR with its compute function (and the parallel lambdas it
launches) given ``minsize`` and ``+slowfpvfmx``: its ``a * b + c`` becomes ``vmla.f32`` (by lane
where the schedule asks for it). VMLA rounds the product before the add, as a separate multiply and
add would.
"""

from __future__ import annotations

import re

from .float_products import adds_a_product

_DEFINE = re.compile(r"^define [^@]*@([\w.$]+)\(.*\)[^{#]*#(\d+)[^{]*\{$", re.M)
_ATTRIBUTES = re.compile(r"^attributes #(\d+) = \{ (.*) \}$", re.M)
_LAMBDA = re.compile(r"@(__tvm_parallel_lambda[\w.]*)")


def _function_bodies(ir: str) -> dict[str, tuple[re.Match, str]]:
    bodies = {}
    for match in _DEFINE.finditer(ir):
        end = ir.find("\n}\n", match.end())
        bodies[match.group(1)] = (match, ir[match.end():end])
    return bodies


def fusable_kernels(ir: str) -> set[str]:
    """The kernels of TVM's LLVM IR ``ir`` whose compute function, or a parallel lambda it launches,
    adds a float product: what LLVM would fuse into ``vfma.f32``. The others (the GEMM microkernels'
    tails: bias, PReLU, residual) keep their code: ``minsize`` costs them instructions (MobileFaceNet's
    1x1 convs 73.7 -> 76.6 M)."""
    bodies = _function_bodies(ir)
    kernels = set()
    for name, (_, body) in bodies.items():
        if not name.endswith("_compute_"):
            continue
        lambdas = [bodies[lam][1] for lam in _LAMBDA.findall(body) if lam in bodies]
        if any(adds_a_product(text) for text in (body, *lambdas)):
            kernels.add(name[:-len("_compute_")])
    return kernels


def with_vmla(ir: str, kernels: set[str]) -> str:
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
