"""A 1x1 conv whose output channels are not whole NEON vectors gets zero weight columns up to the next
multiple of 4, and its output the channels it had sliced back, so that ARMv7 runs it on the fused GEMM tile.

The fused tile (``kernels/neon_f32_gemm.py``) steps the output channels 4 (or 8) at a time. With
``O' = 4 ceil(O / 4)`` and ``w`` given ``O' - O`` zero columns::

    conv1x1(x, w)[..., o] = conv1x1(x, [w | 0])[..., o]        o < O

exactly (column ``o`` of the product does not read the added ones). The slice is kept out of the conv's
kernel (``schedules.conv_channel_slices``: fused into it, it would be a tail the tile does not compute),
so the bias and activation after it form a kernel of their own.

Measured (cortex-a7, 1 thread, standalone, ``benchmarks/bench_arm.py --per-kernel``): Iris's last two
convs, 2x2x128 -> 213 and 15 channels (a 512-deep 1x1 conv of one pixel after
``transform.SpaceToDepthConv``), 879,213 and 62,522 instructions on the generic schedule; padded to 216
and 16 on the fused tile 47,842 and 4,148 (0.43 and 0.51 per MAC), their slices 1,099 and 588: the model
21.1 -> 20.2 M instructions (0.389 -> 0.373x TFLite's). BlazeFace short range's 36 -> 42 conv (padded to
44, its bias, residual and ReLU then a kernel after the slice): the model 15.1 -> 14.3 M (0.338 -> 0.320x).

Only float32 NHWC/HWIO 1x1 stride-1 ungrouped convs with a constant weight, a depth the tile takes (a multiple
of 4) and at most ``MAX_PADDED_FRACTION`` more multiply-accumulates once padded are rewritten: a conv
into 2 or 6 channels (a detector's score head) would do half or a third again as many, not measured to pay.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ..kernels.neon_f32_gemm import F32_GEMM_DEPTH_STEP
from .base import NHWCConvRewritePass, graph_pass

# The fused tile's channel step (one q register of 4 floats).
CHANNEL_STEP = 4
# Added channels at most this fraction of the conv's own (213 -> 216: 1.4 %, 15 -> 16: 6.7 %).
MAX_PADDED_FRACTION = 1 / 8
WHOLE_VECTORS = "whole vectors already"


@graph_pass("PadConvOutputChannels")
class PadConvOutputChannels(NHWCConvRewritePass):
    """NHWC ``conv1x1(x, w)`` into ``O`` channels, ``O % 4 != 0`` -> ``conv1x1(x, [w | 0])[..., :O]``.

    After running, ``findings`` holds ``{"rewritten", "declined": [{"conv", "reason"}]}``.
    """

    def check(self, call: relax.Call, weight: np.ndarray | None, in_shape) -> str | None:
        """Why this conv is not rewritten; None when it is a 1x1 conv the fused tile takes once its
        output channels are padded to a multiple of 4."""
        attrs = call.attrs
        kh, kw, depth, channels = weight.shape
        if channels % CHANNEL_STEP == 0:
            return WHOLE_VECTORS
        if str(call.ty.dtype) != "float32" or weight.dtype != np.float32:
            # An int8 conv's slice would sit between it and its requantize, which its kernel fuses.
            return f"a {call.ty.dtype} conv: only float32 convs run on the fused GEMM tile"
        if (kh, kw) != (1, 1) or [int(s) for s in attrs.strides] != [1, 1] or attrs.groups != 1:
            return f"a {kh}x{kw} conv: only ungrouped stride-1 1x1 convs run on the fused GEMM tile"
        if any(int(p) for p in attrs.padding) or in_shape is None or len(in_shape) != 4:
            return f"input {in_shape}, padding {[int(p) for p in attrs.padding]}: only unpadded static 4-d inputs"
        if depth % F32_GEMM_DEPTH_STEP:
            return f"depth {depth}: the fused tile steps {F32_GEMM_DEPTH_STEP} input channels at a time"
        added = -channels % CHANNEL_STEP
        if added > MAX_PADDED_FRACTION * channels:
            return (f"{channels} channels: {added} more would add over {MAX_PADDED_FRACTION:.3g} of its "
                    f"multiply-accumulates (not measured to pay)")
        return None

    def not_a_candidate(self, reason: str) -> bool:
        return reason == WHOLE_VECTORS or reason.startswith("a ") or super().not_a_candidate(reason)

    def rewrite_conv(self, call: relax.Call, weight: np.ndarray, in_shape, visit) -> relax.Expr:
        channels = weight.shape[3]
        padded = np.pad(weight, [(0, 0)] * 3 + [(0, -channels % CHANNEL_STEP)]).astype(weight.dtype)
        attrs = call.attrs
        conv = relax.op.nn.conv2d(
            visit(call.args[0]), relax.const(padded), strides=[1, 1], padding=[0, 0, 0, 0], dilation=attrs.dilation,
            groups=1, data_layout="NHWC", kernel_layout="HWIO", out_layout=attrs.out_layout,
            out_dtype=str(call.ty.dtype))
        return relax.op.strided_slice(conv, axes=[3], begin=[0], end=[channels])
