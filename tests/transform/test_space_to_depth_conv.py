"""SpaceToDepthConv: an NHWC conv whose window is its stride becomes a space-to-depth copy and a 1x1 conv,
exactly; other convs stay; on ARMv7 the 1x1 conv runs on the NEON GEMM tile, equal to the host build."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

import edgetvm
from edgetvm.transform import SpaceToDepthConv

from ..kernels.arm_checks import ARM, assert_arm_matches_reference_and_host, schedule_rule
from ..schedules.nets import NetBuilder
from .relax_numerics import assert_left_alone, bind, nhwc_conv, run_relax


def run_pass(mod):
    rewrite = SpaceToDepthConv()
    return rewrite(mod), rewrite.findings


@I.ir_module
class Patchify:
    @R.function
    def main(x: R.Tensor((1, 8, 12, 8), "float32"), w: R.Tensor((2, 2, 8, 16), "float32")):
        with R.dataflow():
            y = R.nn.conv2d(x, w, strides=[2, 2], data_layout="NHWC", kernel_layout="HWIO")
            R.output(y)
        return y


@I.ir_module
class SpaceToDepthThen1x1:
    @R.function
    def main(x: R.Tensor((1, 8, 12, 8), "float32"), w: R.Tensor((1, 1, 32, 16), "float32")):
        with R.dataflow():
            blocks = R.reshape(x, [1, 4, 2, 6, 16])
            rows = R.permute_dims(blocks, [0, 1, 3, 2, 4])
            data = R.reshape(rows, [1, 4, 6, 32])
            y = R.nn.conv2d(data, w, data_layout="NHWC", kernel_layout="HWIO", out_dtype="float32")
            R.output(y)
        return y


def test_window_equal_to_stride_becomes_space_to_depth_and_1x1(rng):
    weight = rng.standard_normal((2, 2, 8, 16)).astype("float32")
    after, findings = run_pass(bind(Patchify, w=weight))
    tvm.ir.assert_structural_equal(after, bind(SpaceToDepthThen1x1, w=weight.reshape(1, 1, 32, 16)))
    assert findings == {"rewritten": 1, "declined": []}


@I.ir_module
class WholeInputWindow:
    @R.function
    def main(x: R.Tensor((1, 2, 2, 8), "float32"), w: R.Tensor((2, 2, 8, 13), "float32")):
        with R.dataflow():
            y = R.nn.conv2d(x, w, strides=[1, 1], data_layout="NHWC", kernel_layout="HWIO")
            R.output(y)
        return y


@I.ir_module
class ReshapeThen1x1:
    @R.function
    def main(x: R.Tensor((1, 2, 2, 8), "float32"), w: R.Tensor((1, 1, 32, 13), "float32")):
        with R.dataflow():
            data = R.reshape(x, [1, 1, 1, 32])
            y = R.nn.conv2d(data, w, data_layout="NHWC", kernel_layout="HWIO", out_dtype="float32")
            R.output(y)
        return y


def test_window_as_large_as_the_input_becomes_a_reshape_and_1x1_whatever_the_stride(rng):
    """Iris's last two convs: a 2x2 window over a 2x2 input at stride 1, one block, no copy."""
    weight = rng.standard_normal((2, 2, 8, 13)).astype("float32")
    after, findings = run_pass(bind(WholeInputWindow, w=weight))
    tvm.ir.assert_structural_equal(after, bind(ReshapeThen1x1, w=weight.reshape(1, 1, 32, 13)))
    assert findings == {"rewritten": 1, "declined": []}
    x = rng.standard_normal((1, 2, 2, 8)).astype("float32")
    want = np.einsum("nhwc,hwco->no", x.astype(np.float64), weight.astype(np.float64)).reshape(1, 1, 1, 13)
    np.testing.assert_allclose(run_relax(after, x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_shape,w_shape,attrs,reason", [
    ((1, 8, 8, 8), (2, 2, 8, 16), dict(strides=[2, 2], padding=[0, 0, 1, 1]), "padded or dilated"),
    ((1, 8, 8, 8), (2, 2, 8, 16), dict(strides=[1, 1]), None),                      # overlapping windows
    ((1, 8, 8, 8), (3, 3, 8, 16), dict(strides=[2, 2]), None),
    ((1, 9, 8, 8), (2, 2, 8, 16), dict(strides=[2, 2]), "input (1, 9, 8, 8)"),      # a row left over
    ((1, 8, 8, 2), (2, 2, 2, 16), dict(strides=[2, 2]), "depth 8"),                 # too shallow for the tile
    ((1, 8, 8, 3), (2, 2, 3, 16), dict(strides=[2, 2]), "depth 12"),
    ((1, 8, 8, 8), (2, 2, 4, 16), dict(strides=[2, 2], groups=2), "groups 2"),
])
def test_other_convs_stay_and_say_why(rng, x_shape, w_shape, attrs, reason):
    before = bind(nhwc_conv(x_shape, w_shape, **attrs), w=rng.standard_normal(w_shape).astype("float32"))
    assert_left_alone(SpaceToDepthConv(), before, reason)


def test_a_weight_that_is_not_a_constant_stays():
    assert_left_alone(SpaceToDepthConv(), nhwc_conv((1, 8, 12, 8), (2, 2, 8, 16), strides=[2, 2]), "the weight is not a constant")


@pytest.mark.parametrize("k,channels", [(2, 8), (2, 4), (4, 4)])
def test_rewritten_conv_computes_the_numpy_conv(rng, k, channels):
    weight = rng.standard_normal((k, k, channels, 16)).astype("float32")
    before = bind(nhwc_conv((1, 4 * k, 3 * k, channels), weight.shape, strides=[k, k]), w=weight)
    after, findings = run_pass(before)
    assert findings["rewritten"] == 1
    x = rng.standard_normal((1, 4 * k, 3 * k, channels)).astype("float32")
    # float64 reference: the sum over taps of the strided input slices.
    want = sum(np.einsum("nhwc,co->nhwo", x[:, ky::k, kx::k, :].astype(np.float64), weight[ky, kx].astype(np.float64))
               for ky in range(k) for kx in range(k))
    np.testing.assert_allclose(run_relax(after, x), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(run_relax(after, x), run_relax(before, x))


def patchify_net(cin: int, cout: int, hw: int):
    """ONNX conv 2x2 stride 2 + bias + PReLU, as Iris's downsampling convs, and its float64 reference."""
    b = NetBuilder((1, cin, hw, hw), seed=3)
    model = b.build(b.prelu(b.conv("input", cin, cout, 2, 2, pad=0), cout), (1, cout, hw // 2, hw // 2))
    consts = {t.name: np.frombuffer(t.raw_data, np.float32).reshape(t.dims).astype(np.float64)
              for t in model.graph.initializer}
    weight, bias = (consts[name] for name in model.graph.node[0].input[1:])
    slope = consts[model.graph.node[1].input[1]].reshape(1, -1, 1, 1)

    def reference(x: np.ndarray) -> np.ndarray:
        xs = x.astype(np.float64)
        y = sum(np.einsum("nchw,oc->nohw", xs[:, :, ky::2, kx::2], weight[:, :, ky, kx]) for ky in range(2) for kx in range(2))
        y = y + bias.reshape(1, -1, 1, 1)
        return np.where(y > 0, y, y * slope)

    return model, reference


def test_arm_patchify_conv_takes_the_fused_gemm_tile():
    model, _ = patchify_net(8, 16, 12)
    compiled = edgetvm.compile(model, ARM, num_threads=1)
    assert "fused tile p5x8_b_prelu" in schedule_rule(compiled, "neon-gemm")
    assert schedule_rule(edgetvm.compile(model, "host", num_threads=1), "neon-gemm") is None


@pytest.mark.arm
@pytest.mark.parametrize("cin,cout,hw", [(8, 16, 12), (16, 12, 10)])   # 5x8 tiles; 7x4 tiles and a 4-pixel rest
def test_arm_patchify_conv_is_the_host_build_bit_for_bit(cin, cout, hw, tmp_path):
    model, reference = patchify_net(cin, cout, hw)
    x = np.random.default_rng(1).uniform(-1, 1, (1, cin, hw, hw)).astype(np.float32)
    compiled = edgetvm.compile(model, ARM, num_threads=1)
    assert schedule_rule(compiled, "neon-gemm")
    assert_arm_matches_reference_and_host(compiled, model, reference, x, 1, tmp_path, bit_exact=True)


@pytest.mark.arm
def test_iris_on_arm_matches_litert_and_the_host_build(zoo, tmp_path):
    """Iris's six 2x2 stride-2 convs rewritten, the model under qemu against LiteRT on a real eye."""
    from PIL import Image

    from edgetvm import emulate
    from edgetvm.zoo import load_astronaut

    from ..frontends.checks import litert_outputs, relative_error

    eye = Image.fromarray(load_astronaut()[160:240, 180:260]).resize((64, 64), Image.BILINEAR)
    x = (np.asarray(eye, np.float32) / 255)[None]
    path = zoo("iris")
    arm = edgetvm.compile(path, ARM, num_threads=1)
    copies = [name for name in arm.report.details["schedules"]["kernels"] if "reshape" in name and "transpose" in name]
    assert len(copies) == 4  # six convs, four distinct shapes
    so = arm.export(tmp_path / "iris.so", standalone=True)
    got = emulate.run_standalone_arm(so, [x], cpu=arm.target.qemu_cpu).outputs
    host = edgetvm.compile(path, "host", num_threads=1)(x)
    for ours, on_host, theirs in zip(got, host, litert_outputs(path, x).values()):
        assert relative_error(ours, np.asarray(on_host)) < 1e-5
        assert relative_error(ours, theirs) < 1e-4
