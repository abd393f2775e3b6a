"""A channel pad on a conv's residual path as its own kernel, so the conv's tail is a plain residual add.

BlazeFace's blocks widen the channels as they go: ``relu(conv1x1(dw(x)) + b + pad_c(x))``, the block
input zero-padded from ``C`` to ``C' > C`` channels (TFLite PAD on the last axis). FuseOps puts the pad
into the conv's kernel, where the residual is read as ``if_then_else(c < C, x[p, c], 0)``: a tail the
fused NEON GEMM tile (``schedules.gemm_epilogue``) cannot compute, so the conv fell back to the TIR
register tile (0.86 instructions per MAC for 24 -> 28 channels at 64x64). Kept apart, the pad is one
row-wise copy and fill (``schedules.padding``, 0.31 instructions per float copied on ARMv7) and the conv
runs on the fused tile with the padded tensor as its residual. The arithmetic is the same: the tail
adds ``0.0`` for the padded channels either way.

Measured (cortex-a7, 1 thread, standalone, ``benchmarks/bench_arm.py``): BlazeFace short range
16.68 -> 15.51 M instructions (0.374 -> 0.348x TFLite's armv7 kernels).

Only a pad of the last axis alone (channels last), of more than 4 channels (the stem's RGB -> RGB0
pad stays fused with its spatial pad: ``transform.PadStemChannels``), read by an elementwise kernel
whose other operand a conv computes (through elementwise kernels: its bias add) is kept apart.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .padding import match_constant_pad

# relay/relax OpPatternKind: kElemWise 0, kBroadcast 1, kOutEWiseFusable 4 (conv), kOpaque 8.
_ELEMENTWISE, CONV_PATTERN, OPAQUE_PATTERN = (0, 1), 4, 8


def kernel_pattern(mod: tvm.IRModule, call) -> int | None:
    """The ``op_pattern`` of the kernel ``call`` (a ``call_tir``) runs; None for another expression."""
    if not (isinstance(call, relax.Call) and call.op.same_as(tvm.ir.Op.get("relax.call_tir"))):
        return None
    func = mod[call.args[0]]
    return int(func.attrs["op_pattern"]) if func.attrs is not None and "op_pattern" in func.attrs else None


def _channel_pad(func) -> bool:
    pad = match_constant_pad(func) if isinstance(func, tvm.tirx.PrimFunc) else None
    if pad is None:
        return False
    x_shape, out_shape = [int(d) for d in pad.x.shape], [int(d) for d in pad.out.shape]
    return x_shape[:-1] == out_shape[:-1] and x_shape[-1] > 4 and not any(pad.before[:-1])


def _from_conv(mod: tvm.IRModule, producers: dict, expr, depth: int = 3) -> bool:
    """Whether ``expr`` is a conv's output, directly or through up to ``depth`` elementwise kernels."""
    call = producers.get(expr)
    pattern = kernel_pattern(mod, call)
    if pattern == CONV_PATTERN:
        return True
    if pattern in _ELEMENTWISE and depth > 0:
        return any(_from_conv(mod, producers, arg, depth - 1) for arg in call.args[1].fields)
    return False


@tvm.transform.module_pass(opt_level=0, name="KeepResidualChannelPadsApart")
def keep_residual_channel_pads_apart(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """After ``AnnotateTIROpPattern``: such pads' kernels marked opaque, so ``FuseOps`` leaves them alone."""
    main = mod["main"]
    producers, users = {}, {}
    for block in main.body.blocks:
        for binding in block.bindings:
            producers[binding.var] = binding.value
            if kernel_pattern(mod, binding.value) is not None:
                for arg in binding.value.args[1].fields:
                    users.setdefault(arg, []).append(binding.value)
    apart = set()
    for var, call in producers.items():
        if kernel_pattern(mod, call) is None or not _channel_pad(mod[call.args[0]]):
            continue
        for user in users.get(var, []):
            others = [arg for arg in user.args[1].fields if not arg.same_as(var)]
            if kernel_pattern(mod, user) in _ELEMENTWISE and any(_from_conv(mod, producers, arg) for arg in others):
                apart.add(call.args[0])
    return marked_opaque(mod, apart)


def marked_opaque(mod: tvm.IRModule, gvars) -> tvm.IRModule:
    """``mod`` with the kernels ``gvars`` marked opaque (``FuseOps`` fuses nothing into or after them),
    on a copy: the caller's module stays as it was."""
    if gvars:
        mod = mod.clone()
        for gvar in gvars:
            mod[gvar] = mod[gvar].with_attr("op_pattern", OPAQUE_PATTERN)
    return mod
