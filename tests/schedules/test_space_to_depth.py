"""The space-to-depth copy of ``transform.SpaceToDepthConv`` on ARMv7 (``schedules/space_to_depth.py``):
taken only when its gather is proven to be s2d's, then one NEON copy per output pixel and window row."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import edgetvm
from edgetvm.schedules.space_to_depth import match_space_to_depth

from ..kernels.arm_checks import ARM, assert_arm_matches_reference_and_host, schedule_rule
from .nets import NetBuilder


def _fused_copy(order: str) -> tvm.tirx.PrimFunc:
    """The one kernel FuseOps makes of a 2x2 space-to-depth of a (1, 8, 6, 16) NHWC tensor, channels
    in ``order``: "yxc" (s2d's, the HWIO weight's row order) or "cyx" (a pixel shuffle's)."""
    x = relax.Var("x", relax.TensorType([1, 8, 6, 16], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            if order == "yxc":
                y = relax.op.permute_dims(relax.op.reshape(x, [1, 4, 2, 3, 32]), [0, 1, 3, 2, 4])
            else:
                y = relax.op.permute_dims(relax.op.reshape(x, [1, 4, 2, 3, 2, 16]), [0, 1, 3, 5, 2, 4])
            out = bb.emit_output(bb.emit(relax.op.reshape(y, [1, 4, 3, 64])))
        bb.emit_func_output(out)
    mod = relax.transform.LegalizeOps()(bb.get())
    mod = relax.transform.FuseTIR()(relax.transform.FuseOps()(relax.transform.AnnotateTIROpPattern()(mod)))
    (func,) = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    return func


def conv_then_patchify_net(c: int = 16, hw: int = 12):
    """ONNX 1x1 conv then 2x2 stride-2 conv (Iris's downsampling: the copy reads a kernel's output, not
    the model input, whose layout transpose would fuse with it), and its float64 reference."""
    b = NetBuilder((1, c, hw, hw), seed=7)
    model = b.build(b.conv(b.conv("input", c, c, 1), c, c, 2, 2, pad=0), (1, c, hw // 2, hw // 2))
    consts = {t.name: np.frombuffer(t.raw_data, np.float32).reshape(t.dims).astype(np.float64)
              for t in model.graph.initializer}
    (w1, b1), (w2, b2) = ([consts[name] for name in node.input[1:]] for node in model.graph.node[:2])

    def reference(x: np.ndarray) -> np.ndarray:
        y = np.einsum("nchw,oc->nohw", x.astype(np.float64), w1[:, :, 0, 0]) + b1.reshape(1, -1, 1, 1)
        z = sum(np.einsum("nchw,oc->nohw", y[:, :, ky::2, kx::2], w2[:, :, ky, kx]) for ky in range(2) for kx in range(2))
        return z + b2.reshape(1, -1, 1, 1)

    return model, reference


def test_the_s2d_gather_is_matched_and_a_pixel_shuffle_is_not():
    matched = match_space_to_depth(_fused_copy("yxc"))
    assert matched is not None and matched[2:] == (2, 2)
    assert match_space_to_depth(_fused_copy("cyx")) is None  # same shapes, other gather


def test_arm_patchify_copy_takes_the_neon_copies_and_the_host_does_not():
    model, _ = conv_then_patchify_net()
    assert "one NEON copy per window row" in schedule_rule(edgetvm.compile(model, ARM, num_threads=1), "space-to-depth")
    assert schedule_rule(edgetvm.compile(model, "host", num_threads=1), "space-to-depth") is None


@pytest.mark.arm
@pytest.mark.parametrize("hw,threads", [(12, 1), (24, 2)])  # 24: 12x12x64 outputs, the copies' rows in parallel
def test_arm_patchify_with_neon_copies_is_the_host_build_bit_for_bit(hw, threads, tmp_path):
    model, reference = conv_then_patchify_net(hw=hw)  # rows of 2 x 16 = 32 floats: one copy step each
    x = np.random.default_rng(4).uniform(-1, 1, (1, 16, hw, hw)).astype(np.float32)
    compiled = edgetvm.compile(model, ARM, num_threads=threads)
    assert schedule_rule(compiled, "space-to-depth")
    assert_arm_matches_reference_and_host(compiled, model, reference, x, threads, tmp_path, bit_exact=True)
