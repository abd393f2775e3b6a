"""Rewrite a dense 3x3 stride-1 float32 conv (NHWC x HWIO, constant weight) as Winograd F(m x m, 3 x 3).

    conv2d(x, w)  ->  y = output_transform( matmul( input_transform(pad(x)), U ) )

``pad`` zero-pads x by the conv's padding and up to whole tiles (``tiles * m + 2`` rows and
columns); ``input_transform`` gives ``V[t, p, ci] = (B^T d_p B)[t]`` per tile p and transform point
t (``kernels.winograd``); the batched matmul ``(T, tiles, C_in) @ (T, C_in, C_out)`` over the
T = (m + 2)^2 points takes ``U = G w G^T``, computed in float64 at compile time (a constant);
``output_transform`` gives ``A^T M A`` per tile, cropped to the conv's output. The conv's tail
(bias, activation, residual add) stays where it was and fuses with its own elementwise ops.

Exact in real arithmetic; in float32 the transforms' larger sums round more than the direct conv's
(Lavin & Gray 2016). Measured against a float64 conv (uniform [-1, 1] inputs, 20x20, error relative
to the output's largest magnitude): F(6,3) 64 -> 64 channels 7.9e-6 (direct float32 7.7e-7), F(4,3)
132 -> 132 7.1e-6 (direct 1.1e-6); RetinaFace against onnxruntime (max over its outputs): 160 on the
host 4.4e-6 (direct 4.7e-6), 320 on cortex-a7 under qemu 8.2e-6 (direct 5.8e-6), the ARM build
bit-exact with the host build in both.

Which m (ncnn's rule): F(6,3) when both channel counts are <= 128, else F(4,3). The multiplies
drop from 9 per output to (m + 2)^2 / m^2 (2.25 for F(4,3), 1.78 for F(6,3)), but the transforms
cost per tile and channel, so the rewrite is taken only where it measured fewer instructions and a7
cycles on ARMv7 under qemu (``benchmarks/bench_winograd.py``): see ``pays_on_arm``. The same rule
holds on the host, whose build is the ARM build's bit-exact reference (x86, 1 thread, RetinaFace
320: 5.0 ms against 6.0 ms direct, the faster of 40 interleaved runs each). Declines: not 3x3, stride or dilation not 1, grouped or depthwise, not float32,
weight not a constant, layout not NHWC/HWIO (the pass runs after ``channels_last``), channels not
a multiple of 4 (the transforms step 4 channels, the GEMM tile 4 depths).

RetinaFace 320 fp32 (cortex-a7, 1 thread, standalone, ``benchmarks/bench_arm.py --models retinaface``):
121.93 M -> 67.17 M instructions, 226.11 M -> 130.4 M a7 cycles; compile 5.3 s -> 9.7 s. The cost
is size: U stores (m + 2)^2 / 9 times a conv's weights (7.1x for F(6,3)), the standalone artifact
2.41 MB -> 7.67 MB; ``compile(winograd=False)`` (``--no-winograd``) keeps the convs direct, and a
compile asked to compress does (``api.compile``).
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from ..kernels.winograd import KERNEL, TRANSFORM_LANES, input_transform, output_transform, transformed_weight
from ..relax_utils import constant_value, static_shape
from .base import GraphPass, MatchedBindingRewriter, graph_pass

# ncnn's rule for the tile size: F(6,3) when both channel counts are at most this, else F(4,3).
F6_MAX_CHANNELS = 128
# ARMv7: Winograd pays from this many input channels and output rows/columns on (measured, see pays_on_arm).
ARM_MIN_CHANNELS = 8
ARM_MIN_SIDE = 4
# The end of the reason for a conv that is no candidate at all (not listed among the declines).
NOT_3X3 = "kernel: 3x3 only"
# The pass's name: its key in the compile report.
WINOGRAD_PASS = "WinogradConv"


def tile_size(in_channels: int, out_channels: int) -> int:
    """m of F(m, 3): 6 when both channel counts are <= 128 (ncnn's rule), else 4."""
    return 6 if max(in_channels, out_channels) <= F6_MAX_CHANNELS else 4


def pays_on_arm(in_channels: int, out_channels: int, out_h: int, out_w: int) -> str | None:
    """Why Winograd does not pay on ARMv7 for this conv, None when it does.

    Measured (cortex-a7, 1 thread, standalone, ``benchmarks/bench_winograd.py``: one conv + bias +
    LeakyReLU, Winograd's instructions / a7 cycles as a fraction of the direct conv's), CIN x COUT x side:

    - pays: 64x64x40 0.24 / 0.26, 16x16x10 0.45 / 0.46, 8x8x20 0.48 / 0.48, 16x4x20 0.61 / 0.65,
      256x256x10 (F(4,3)) 0.30 / 0.33
    - a 4x4 output still pays: 16x16x4 0.77 / 0.88, 64x64x4 0.54 / 0.69
    - 4 input channels do not: 4x16x20 2.27 / 1.46 (the direct conv of 4 channels is the NEON stem
      tile)
    - a 3x3 output does not: 16x16x3 1.18 / 1.37, 64x64x3 0.86 but 1.13 the a7 cycles (one 6x6 tile
      for 9 pixels)
    """
    if in_channels < ARM_MIN_CHANNELS:
        return (f"{in_channels} input channels: under {ARM_MIN_CHANNELS} the direct conv costs less on ARMv7 "
                f"(measured 2.3x the instructions for 4)")
    if min(out_h, out_w) < ARM_MIN_SIDE:
        return (f"output {out_h}x{out_w}: under {ARM_MIN_SIDE} rows or columns one tile is mostly padding "
                f"(measured 1.1-1.4x the a7 cycles at 3x3)")
    return None


@graph_pass(WINOGRAD_PASS)
class WinogradConv(GraphPass):
    """``conv2d`` 3x3 stride 1 -> pad, input transform, batched matmul with ``U``, output transform.

    ``cost_rule``: rewrite only where the ARMv7 cost rule (``pays_on_arm``) says it pays, on every
    target (the host build is the ARM build's bit-exact reference); False: every conv that fits. After running, ``findings`` holds ``{"rewritten", "f4", "f6", "declined": [{"conv",
    "shape", "reason"}]}``.
    """

    def __init__(self, cost_rule: bool = True):
        super().__init__()
        self.cost_rule = cost_rule
        self.pattern = is_op("relax.nn.conv2d")(wildcard(), wildcard())

    def new_findings(self) -> dict:
        return {"rewritten": 0, "f4": 0, "f6": 0, "declined": []}

    def check(self, call: relax.Call, weight: np.ndarray | None, x_shape) -> str | None:
        """Why this conv is not rewritten; None when it is."""
        attrs = call.attrs
        if str(call.ty.dtype) != "float32":
            return f"{call.ty.dtype} conv: Winograd is float32 only"
        if (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout or attrs.data_layout)) != \
                ("NHWC", "HWIO", "NHWC"):
            return f"layout {attrs.data_layout}/{attrs.kernel_layout}: runs on NHWC/HWIO (after channels_last)"
        if weight is None or x_shape is None or len(x_shape) != 4:
            return "weight not a constant or input shape not static"
        if int(attrs.groups) != 1:
            return f"groups {attrs.groups}: dense convs only"
        if tuple(weight.shape[:2]) != (KERNEL, KERNEL):
            return f"{weight.shape[0]}x{weight.shape[1]} {NOT_3X3}"
        if any(int(s) != 1 for s in attrs.strides) or any(int(d) != 1 for d in attrs.dilation):
            return f"stride {[int(s) for s in attrs.strides]}, dilation {[int(d) for d in attrs.dilation]}: 1 only"
        cin, cout = weight.shape[2:]
        if cin % TRANSFORM_LANES or cout % TRANSFORM_LANES:
            return f"{cin} -> {cout} channels: multiples of {TRANSFORM_LANES} only"
        if self.cost_rule:
            out_shape = static_shape_of(call)
            return pays_on_arm(cin, cout, out_shape[1], out_shape[2])
        return None

    def rewrite_function(self, gvar, func: relax.Function, mod: tvm.IRModule) -> tvm.IRModule | None:
        rewriter = self.rewriter = MatchedBindingRewriter(mod, self.pattern, self.rewrite_binding)
        new_func = rewriter.run(func)
        if new_func is None:
            return None
        out = rewriter.builder_.get()
        out[gvar] = new_func
        return out

    def rewrite_binding(self, binding: relax.VarBinding, var2val, visit) -> relax.Expr | None:
        call = binding.value
        weight = constant_value(call.args[1], var2val)
        x_shape = static_shape(call.args[0])
        reason = self.check(call, weight, x_shape)
        if reason is not None:
            if reason.endswith(NOT_3X3):
                return None  # not a candidate at all: the report lists the 3x3 convs left direct
            self.findings["declined"].append({"conv": str(binding.var.name), "shape": list(x_shape or []),
                                              "reason": reason})
            return None
        batch, height, width, cin = x_shape
        cout = weight.shape[3]
        top, left, bottom, right = (int(p) for p in call.attrs.padding)
        out_h, out_w = height + top + bottom - 2, width + left + right - 2
        m = tile_size(cin, cout)
        tiles_h, tiles_w = math.ceil(out_h / m), math.ceil(out_w / m)
        points = (m + KERNEL - 1) ** 2
        tiles = batch * tiles_h * tiles_w
        builder = self.rewriter.builder_
        x = visit(call.args[0])
        pad_h, pad_w = tiles_h * m + 2 - height - top, tiles_w * m + 2 - width - left
        if (top, left, pad_h, pad_w) != (0, 0, 0, 0):
            x = builder.emit(relax.op.nn.pad(x, [0, 0, top, pad_h, left, pad_w, 0, 0]))
        forward = builder.add_func(input_transform(m, batch, tiles_h, tiles_w, cin), f"winograd_input_f{m}")
        v = builder.emit(relax.call_tir(forward, [x], relax.TensorType((points, tiles, cin), "float32")))
        u = relax.const(transformed_weight(weight, m))
        product = builder.emit(relax.op.matmul(v, u))
        backward = builder.add_func(output_transform(m, batch, tiles_h, tiles_w, out_h, out_w, cout),
                                    f"winograd_output_f{m}")
        self.findings["rewritten"] += 1
        self.findings[f"f{m}"] += 1
        return relax.call_tir(backward, [product], relax.TensorType((batch, out_h, out_w, cout), "float32"))


def static_shape_of(call: relax.Call) -> tuple[int, ...]:
    return tuple(int(d) for d in call.ty.shape)
