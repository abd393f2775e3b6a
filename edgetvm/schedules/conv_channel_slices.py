"""A slice of a conv's first output channels as its own kernel, so the conv runs on the fused NEON GEMM tile.

``transform.PadConvOutputChannels`` gives a 1x1 conv into ``O`` channels (``O % 4 != 0``) zero weight
columns up to whole vectors and slices its output back: ``conv(x, [w | 0])[..., :O]``. That slice reads
``y[p, c]`` for ``c < O``, the same indices it writes, so ``AnnotateTIROpPattern`` calls it elementwise
and ``FuseOps`` puts it into the conv's kernel, whose tail then stores ``O`` of the tile's ``O'``
channels: not an epilogue the fused tile computes (``schedules.gemm_epilogue``), so the conv went back to
the generic schedule. Marked opaque, the slice is one copy of ``O`` floats per pixel and the conv the
tile's.
"""

from __future__ import annotations

import tvm
from tvm import relax, s_tir, tirx

from .residual_pads import CONV_PATTERN, kernel_pattern, marked_opaque


def channel_prefix_slice(func) -> bool:
    """Whether ``func`` copies the first channels of its input, ``out[..., c] = x[..., c]`` with
    ``out``'s last axis shorter and the others equal."""
    if not (isinstance(func, tirx.PrimFunc) and isinstance(func.body, s_tir.SBlockRealize) and len(func.params) == 2):
        return False
    x, out = func.params  # the buffers themselves: TVM 0.27's PrimFunc has no buffer_map
    if not (isinstance(x, tirx.Buffer) and isinstance(out, tirx.Buffer)) or len(x.shape) != len(out.shape) or not x.shape:
        return False
    x_shape, out_shape = [int(d) for d in x.shape], [int(d) for d in out.shape]
    if x_shape[:-1] != out_shape[:-1] or out_shape[-1] >= x_shape[-1]:
        return False
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    if len(blocks) != 1:
        return False
    store = sch.get(blocks[0]).body
    return (isinstance(store, tirx.BufferStore) and store.buffer.same_as(out)
            and isinstance(store.value, tvm.ir.TensorLoad) and store.value.source.same_as(x)
            and len(store.indices) == len(store.value.indices)
            and all(a.same_as(b) for a, b in zip(store.indices, store.value.indices)))


@tvm.transform.module_pass(opt_level=0, name="KeepConvChannelSlicesApart")
def keep_conv_channel_slices_apart(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """After ``AnnotateTIROpPattern``: the kernels slicing a conv's first channels marked opaque, so
    ``FuseOps`` leaves them out of the conv's kernel."""
    producers = {}
    apart = set()
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            producers[binding.var] = binding.value
            call = binding.value
            if kernel_pattern(mod, call) is None or not channel_prefix_slice(mod[call.args[0]]):
                continue
            source = call.args[1].fields[0] if isinstance(call.args[1], relax.Tuple) else None
            if kernel_pattern(mod, producers.get(source)) == CONV_PATTERN:
                apart.add(call.args[0])
    return marked_opaque(mod, apart)
