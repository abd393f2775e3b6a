"""A 1x1 conv padded to whole output vectors (``transform.PadConvOutputChannels``) keeps its channel slice
out of its kernel on ARMv7 (``schedules/conv_channel_slices.py``), so it runs on the fused NEON GEMM tile:
Iris's last two convs, a 2x2 window over a 2x2 input into 213 and 15 channels."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import edgetvm
from edgetvm.schedules.conv_channel_slices import channel_prefix_slice, keep_conv_channel_slices_apart

from ..kernels.arm_checks import ARM, assert_arm_matches_reference_and_host, schedule_rule
from .nets import NetBuilder


def whole_window_net(cin: int = 8, cout: int = 29):
    """ONNX 2x2 conv over a 2x2 input (stride 1, no padding) with a bias, and its float64 reference."""
    b = NetBuilder((1, cin, 2, 2), seed=5)
    model = b.build(b.conv("input", cin, cout, 2, 1, pad=0), (1, cout, 1, 1))
    consts = {t.name: np.frombuffer(t.raw_data, np.float32).reshape(t.dims).astype(np.float64)
              for t in model.graph.initializer}
    weight, bias = (consts[name] for name in model.graph.node[0].input[1:])

    def reference(x: np.ndarray) -> np.ndarray:
        return (np.einsum("nchw,ochw->no", x.astype(np.float64), weight) + bias).reshape(1, cout, 1, 1)

    return model, reference


def test_arm_conv_into_29_channels_takes_the_fused_tile_and_the_slice_is_its_own_kernel():
    model, _ = whole_window_net()
    compiled = edgetvm.compile(model, ARM, num_threads=1)
    assert "fused tile p5x8 microkernel" in schedule_rule(compiled, "neon-gemm")
    kernels = compiled.report.details["schedules"]["kernels"]
    assert [name for name in kernels if name.startswith("strided_slice")], kernels
    assert schedule_rule(edgetvm.compile(model, "host", num_threads=1), "neon-gemm") is None


def _slice_after(producer: str) -> tvm.IRModule:
    """``strided_slice(producer(x), :13)`` legalized and annotated, as FuseOps sees it."""
    x = relax.Var("x", relax.TensorType([1, 4, 4, 8], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            if producer == "conv":
                w = relax.const(np.ones((1, 1, 8, 16), "float32"))
                y = bb.emit(relax.op.nn.conv2d(x, w, data_layout="NHWC", kernel_layout="HWIO"))
            else:
                y = bb.emit(relax.op.nn.relu(relax.op.concat([x, x], axis=3)))
            out = bb.emit_output(bb.emit(relax.op.strided_slice(y, axes=[3], begin=[0], end=[13])))
        bb.emit_func_output(out)
    return relax.transform.AnnotateTIROpPattern()(relax.transform.LegalizeOps()(bb.get()))


def _slice_pattern(mod: tvm.IRModule) -> int:
    gvar = next(g for g in mod.functions if g.name_hint == "strided_slice")
    return int(mod[gvar].attrs["op_pattern"])


def test_only_a_slice_of_a_conv_output_turns_opaque():
    conv = _slice_after("conv")
    assert _slice_pattern(conv) == 0  # elementwise: FuseOps would put it into the conv's kernel
    assert channel_prefix_slice(conv[next(g for g in conv.functions if g.name_hint == "strided_slice")])
    assert _slice_pattern(keep_conv_channel_slices_apart(conv)) == 8
    assert _slice_pattern(conv) == 0, "the caller's module is left as it was"
    other = _slice_after("relu")
    assert _slice_pattern(keep_conv_channel_slices_apart(other)) == 0


@pytest.mark.arm
@pytest.mark.parametrize("cout", [29, 15])  # padded to 32 and 16: 4 and 2 one-pixel tiles of 8 channels
def test_arm_padded_conv_is_the_host_build_bit_for_bit(cout, tmp_path):
    model, reference = whole_window_net(cout=cout)
    x = np.random.default_rng(2).uniform(-1, 1, (1, 8, 2, 2)).astype(np.float32)
    compiled = edgetvm.compile(model, ARM, num_threads=1)
    assert schedule_rule(compiled, "neon-gemm")
    assert_arm_matches_reference_and_host(compiled, model, reference, x, 1, tmp_path, bit_exact=True)
