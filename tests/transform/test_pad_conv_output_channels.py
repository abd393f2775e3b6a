"""PadConvOutputChannels: a 1x1 conv into channels that are not whole 4-float vectors gets zero weight
columns and its output sliced back, exactly; other convs stay and say why."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from edgetvm.transform import PadConvOutputChannels

from .relax_numerics import assert_left_alone, bind, nhwc_conv, run_relax


def run_pass(mod):
    rewrite = PadConvOutputChannels()
    return rewrite(mod), rewrite.findings


@I.ir_module
class Conv1x1Into30:
    @R.function
    def main(x: R.Tensor((1, 1, 1, 32), "float32"), w: R.Tensor((1, 1, 32, 30), "float32")):
        with R.dataflow():
            y = R.nn.conv2d(x, w, data_layout="NHWC", kernel_layout="HWIO")
            R.output(y)
        return y


@I.ir_module
class PaddedTo32ThenSliced:
    @R.function
    def main(x: R.Tensor((1, 1, 1, 32), "float32"), w: R.Tensor((1, 1, 32, 32), "float32")):
        with R.dataflow():
            conv = R.nn.conv2d(x, w, data_layout="NHWC", kernel_layout="HWIO", out_dtype="float32")
            y = R.strided_slice(conv, axes=[3], begin=[0], end=[30])
            R.output(y)
        return y


def test_channels_padded_to_whole_vectors_and_sliced_back(rng):
    weight = rng.standard_normal((1, 1, 32, 30)).astype("float32")
    after, findings = run_pass(bind(Conv1x1Into30, w=weight))
    padded = np.concatenate([weight, np.zeros((1, 1, 32, 2), "float32")], axis=3)
    tvm.ir.assert_structural_equal(after, bind(PaddedTo32ThenSliced, w=padded))
    assert findings == {"rewritten": 1, "declined": []}


@pytest.mark.parametrize("x_shape,w_shape,attrs,reason", [
    ((1, 4, 4, 8), (1, 1, 8, 16), {}, None),                                   # whole vectors already
    ((1, 4, 4, 8), (3, 3, 8, 30), dict(padding=[1, 1, 1, 1]), None),           # not a 1x1 conv
    ((1, 4, 4, 6), (1, 1, 6, 30), {}, "depth 6"),                               # the tile steps 4 depths
    ((1, 4, 4, 8), (1, 1, 8, 13), {}, "13 channels"),                           # 3 more: over 1/8
    ((1, 4, 4, 8), (1, 1, 8, 6), {}, "6 channels"),                             # a third more MACs
    ((1, 4, 4, 8), (1, 1, 8, 2), {}, "2 channels"),
])
def test_other_convs_stay_and_say_why(rng, x_shape, w_shape, attrs, reason):
    before = bind(nhwc_conv(x_shape, w_shape, **attrs), w=rng.standard_normal(w_shape).astype("float32"))
    assert_left_alone(PadConvOutputChannels(), before, reason)


def test_an_int8_conv_stays():
    from tvm import relax

    x = relax.Var("x", relax.TensorType([1, 4, 4, 8], "int8"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            weight = relax.const(np.ones((1, 1, 8, 30), "int8"))
            y = bb.emit_output(relax.op.nn.conv2d(x, weight, data_layout="NHWC", kernel_layout="HWIO",
                                                  out_dtype="int32"))
        bb.emit_func_output(y)
    assert_left_alone(PadConvOutputChannels(), bb.get(), None)  # silently: not a conv the tile runs


def test_a_weight_that_is_not_a_constant_stays():
    assert_left_alone(PadConvOutputChannels(), nhwc_conv((1, 4, 4, 8), (1, 1, 8, 30)), "the weight is not a constant")


@pytest.mark.parametrize("channels", [15, 30, 213])
def test_padded_conv_computes_the_numpy_conv(rng, channels):
    weight = rng.standard_normal((1, 1, 16, channels)).astype("float32")
    before = bind(nhwc_conv((1, 3, 5, 16), weight.shape), w=weight)
    after, findings = run_pass(before)
    assert findings["rewritten"] == 1
    x = rng.standard_normal((1, 3, 5, 16)).astype("float32")
    want = np.einsum("nhwc,co->nhwo", x.astype(np.float64), weight[0, 0].astype(np.float64))
    np.testing.assert_allclose(run_relax(after, x), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(run_relax(after, x), run_relax(before, x))
