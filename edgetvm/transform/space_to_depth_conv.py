"""A conv whose window equals its stride (no padding, no dilation) as a space-to-depth and a 1x1 conv,
so that ARMv7 runs it on the NEON GEMM microkernel.

Channels last, a ``k_h x k_w`` conv at stride ``(k_h, k_w)`` reads each input pixel once, and the window
of output pixel ``(i, j)`` is the block ``x[k_h i : +k_h, k_w j : +k_w, :]``. With the block flattened
into channels in (ky, kx, c) order, which is the row-major order of an HWIO weight::

    s2d(x)[n, i, j, (ky k_w + kx) C + c] = x[n, k_h i + ky, k_w j + kx, c]
    conv(x, w)[n, i, j, o] = sum_{ky, kx, c} s2d(x)[n, i, j, (ky k_w + kx) C + c] w[ky, kx, c, o]
                           = conv1x1(s2d(x), reshape(w, [1, 1, k_h k_w C, O]))[n, i, j, o]

exactly: the same products summed in the same order (ky, kx, c). ``s2d`` is
``reshape [N, H/k_h, k_h, W/k_w, k_w C] -> permute (0, 1, 3, 2, 4) -> reshape [N, H/k_h, W/k_w, k_h k_w C]``:
runs of ``k_w C`` contiguous floats, one pass over the input. The 1x1 conv of depth ``k_h k_w C``
then takes the fused GEMM tile (``schedules.cpu.schedule_neon_f32_gemm``, 0.32 instructions per MAC)
instead of the TIR register tile. Measured (Iris, cortex-a7, 1 thread, ``benchmarks/bench_arm.py
--per-kernel``): its six 2x2 stride-2 convs (7.60 M MAC) 5.42 M instructions (0.713 per MAC) and 9.06 M
a7 cycles on the register tile; as 1x1 convs on the fused tile about 2.5 M instructions plus 0.46 M
(0.52 M a7 cycles) for the copies; the model 23.94 -> 21.38 M instructions, 45.96 -> 42.51 M a7 cycles.
The copies then went on the NEON copy assembly (``schedules.space_to_depth``): 0.46 -> 0.17 M instructions
(kernels alone), the model 20.2 -> 19.9 M. Not measured: the GEMM tile reading the strided 2x2 window in
place (no copy; its depth loop would need a jump to the next input row halfway), at most the copies'
0.17 M better.

Only ungrouped NHWC/HWIO convs (after ``transform.layout.channels_last``) with a constant weight, window
= stride > 1, no padding, no dilation, even division of the input, and a depth the microkernel takes
(a multiple of its depth step, at least 4 steps) are rewritten.

A window as large as its whole input (Iris's last two 2x2 convs, stride 1, of a 2x2x128 input into 213
and 15 channels) is the same rewrite with one block, whatever the stride: ``s2d`` is then a plain
reshape to ``[N, 1, 1, k_h k_w C]`` (no copy). Its 1x1 conv of 213 channels then takes the tile once
``transform.PadConvOutputChannels`` pads it to 216: measured (Iris, cortex-a7, 1 thread), the two
convs 0.94 M instructions on the generic schedule.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ..kernels.neon_f32_gemm import F32_GEMM_DEPTH_STEP
from .base import NHWCConvRewritePass, graph_pass

# The fused GEMM tile's loop runs whole steps of 4 depths. It takes any depth from 4, but below 16 its
# per-tile work dominates (0.67 instructions per MAC at depth 8, BlazeFace full's 8 -> 32 convs, against
# ~0.35 from depth 64): the space-to-depth copy is not measured to pay there, so shallower convs stay.
MIN_DEPTH = 4 * F32_GEMM_DEPTH_STEP
NOT_BLOCKS = "not a window equal to its stride"


@graph_pass("SpaceToDepthConv")
class SpaceToDepthConv(NHWCConvRewritePass):
    """NHWC ``conv2d(x, w)`` with window = stride (or = its whole input) -> ``conv2d(s2d(x), reshape(w))``, a 1x1 conv.

    After running, ``findings`` holds ``{"rewritten", "declined": [{"conv", "reason"}]}``.
    """

    def check(self, call: relax.Call, weight: np.ndarray | None, in_shape) -> str | None:
        """Why this conv is not rewritten; None when its window equals its stride (or its whole input) and the 1x1 conv
        it becomes has a depth the NEON GEMM tile takes."""
        attrs = call.attrs
        kh, kw, channels, _ = weight.shape
        strides = [int(s) for s in attrs.strides]
        whole = in_shape is not None and len(in_shape) == 4 and list(in_shape[1:3]) == [kh, kw]
        if kh * kw == 1 or (strides != [kh, kw] and not whole):
            return NOT_BLOCKS
        if attrs.groups != 1:
            return f"groups {attrs.groups}: only ungrouped convs"
        if any(int(p) for p in attrs.padding) or any(int(d) != 1 for d in attrs.dilation):
            return "padded or dilated: the windows are not the input's blocks"
        if in_shape is None or len(in_shape) != 4 or in_shape[1] % kh or in_shape[2] % kw:
            return f"input {in_shape}: not divided into whole {kh}x{kw} blocks"
        depth = kh * kw * channels
        if depth % F32_GEMM_DEPTH_STEP or depth < MIN_DEPTH:
            return (f"depth {depth}: the rewrite takes multiples of {F32_GEMM_DEPTH_STEP} from {MIN_DEPTH} (a shallower "
                    f"1x1 conv spends most of its tile outside the multiply-accumulates; the copy is not measured to pay)")
        return None

    def not_a_candidate(self, reason: str) -> bool:
        return reason == NOT_BLOCKS or super().not_a_candidate(reason)

    def rewrite_conv(self, call: relax.Call, weight: np.ndarray, in_shape, visit) -> relax.Expr:
        kh, kw, channels, out_channels = weight.shape
        n, height, width, _ = in_shape
        if (height, width) == (kh, kw):
            # One block: the permute swaps a unit axis, the input's memory is already s2d's.
            data = relax.op.reshape(visit(call.args[0]), [n, 1, 1, kh * kw * channels])
        else:
            blocks = relax.op.reshape(visit(call.args[0]), [n, height // kh, kh, width // kw, kw * channels])
            blocks = relax.op.permute_dims(blocks, [0, 1, 3, 2, 4])
            data = relax.op.reshape(blocks, [n, height // kh, width // kw, kh * kw * channels])
        attrs = call.attrs
        return relax.op.nn.conv2d(
            data, relax.const(weight.reshape(1, 1, kh * kw * channels, out_channels)), strides=[1, 1],
            padding=[0, 0, 0, 0], dilation=[1, 1], groups=1, data_layout="NHWC", kernel_layout="HWIO",
            out_layout=attrs.out_layout, out_dtype=str(call.ty.dtype))
