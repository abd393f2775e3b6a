"""Give an RGB stem conv a fourth, zero input channel, so that ARMv7 runs it on the NEON GEMM microkernel.

A conv whose input has 3 channels (the first conv of every face CNN) is, per window tap, a GEMM of
depth 3; the NEON microkernel (``kernels/neon_f32_gemm.py``) takes the depth 4 channels at a time,
one 4-float load per pixel. With a zero channel appended to the input and to the weight::

    conv(x, w) = conv(pad_c(x), [w | 0])        pad_c(x)[:, 3] = 0, [w | 0][:, 3] = 0

exactly (the added products are 0 * 0). The stem then runs 4/3 of its multiply-accumulates on the
microkernel (``schedules.cpu.schedule_neon_f32_stem``) instead of the TIR schedule's 1.0
instructions per MAC. Measured (MobileFaceNet fp32, cortex-a7, per inference): the stem 5.61 -> 3.24
M instructions, 0.60 per model MAC, 6.56 M a7 cycles; the channel pad is one more pass over the
input image, which FuseOps puts into the input's layout transpose (0.09 M instructions).

Only ungrouped 2-d convs (NCHW or NHWC) with a constant weight of 3 input channels and a window larger than
1x1 are rewritten (a 1x1 conv of depth 3 has too few multiply-accumulates to pay for the copy), and
only when the microkernel's one-row tile divides the output (width by 4, channels by 8): the TIR
schedule would run the added fourth of multiply-accumulates for nothing.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from ..kernels.neon_f32_gemm import F32_STEM_TILE, F32_STEM_WINDOWS
from ..relax_utils import constant_value
from .base import BindingRewritePass, graph_pass

# Input channels of a stem conv, and what the microkernel's depth step needs them padded to.
STEM_CHANNELS = 3
PADDED_CHANNELS = 4
# The one-row tile the stem runs on (schedules.cpu.schedule_neon_f32_stem).
TILE = F32_STEM_TILE


@graph_pass("PadStemChannels")
class PadStemChannels(BindingRewritePass):
    """``conv2d(x, w)`` with 3 input channels -> ``conv2d(pad(x, 1 channel), [w | 0])``.

    After running, ``findings`` holds ``{"rewritten", "declined": [{"conv", "reason"}]}``.
    """

    def __init__(self):
        super().__init__()
        self.data, self.weight = wildcard(), wildcard()
        self.pattern = is_op("relax.nn.conv2d")(self.data, self.weight)

    def check(self, call: relax.Call, weight: np.ndarray | None, out_shape: list[int]) -> str | None:
        """Why this conv is not rewritten; None when it is an RGB stem with a constant weight whose
        output the NEON stem tile divides."""
        attrs = call.attrs
        data_layout, kernel_layout = str(attrs.data_layout), str(attrs.kernel_layout)
        if sorted(data_layout) != sorted("NCHW") or sorted(kernel_layout) != sorted("OIHW"):
            return f"layout {data_layout}/{kernel_layout}: only 2-d NCHW or NHWC with a plain kernel layout"
        if weight is None or weight.ndim != 4 or weight.shape[kernel_layout.index("I")] != STEM_CHANNELS:
            return "not a conv of 3 input channels with a constant weight"
        if attrs.groups != 1:
            return f"groups {attrs.groups}: only ungrouped convs"
        kh, kw = weight.shape[kernel_layout.index("H")], weight.shape[kernel_layout.index("W")]
        if kh * kw == 1:
            return "a 1x1 conv: too few multiply-accumulates to pay for the channel copy"
        if kw not in F32_STEM_WINDOWS:
            return f"a window {kw} wide: the NEON stem microkernel exists for {list(F32_STEM_WINDOWS)}"
        _, tile_w, vectors = TILE
        out_layout = str(attrs.out_layout or data_layout)
        if len(out_shape) != 4 or out_shape[out_layout.index("W")] % tile_w or out_shape[out_layout.index("C")] % (4 * vectors):
            return f"output {out_shape}: the NEON stem tile needs a width divisible by {tile_w}, channels by {4 * vectors}"
        return None

    def rewrite_binding(self, binding: relax.VarBinding, var2val, visit) -> relax.Expr | None:
        call = binding.value
        weight = constant_value(call.args[1], var2val)
        # A symbolic dimension (no ``value``) fails the tile check.
        out_shape = [getattr(d, "value", -1) for d in (call.ty.shape or [])]
        reason = self.check(call, weight, out_shape)
        if reason is not None:
            if not reason.startswith("not a conv of 3"):
                self.findings["declined"].append({"conv": str(binding.var.name), "reason": reason})
            return None
        attrs = call.attrs
        extra = PADDED_CHANNELS - STEM_CHANNELS
        weight_pad = [(0, extra if axis == "I" else 0) for axis in str(attrs.kernel_layout)]
        data_pad = [edge for axis in str(attrs.data_layout) for edge in (0, extra if axis == "C" else 0)]
        data = relax.op.nn.pad(visit(call.args[0]), data_pad)
        weight_const = relax.const(np.pad(weight, weight_pad).astype(weight.dtype))
        self.findings["rewritten"] += 1
        return relax.op.nn.conv2d(
            data, weight_const, strides=attrs.strides, padding=attrs.padding, dilation=attrs.dilation, groups=1,
            data_layout=attrs.data_layout, kernel_layout=attrs.kernel_layout, out_layout=attrs.out_layout,
            out_dtype=str(call.ty.dtype))
