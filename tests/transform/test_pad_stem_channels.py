"""PadStemChannels: a conv of 3 input channels gets a zero 4th channel in its input and weight, exactly;
other convs stay."""

from __future__ import annotations

import numpy as np
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from edgetvm.transform import PadStemChannels

from .relax_numerics import bind, run_relax


def run_pass(mod):
    rewrite = PadStemChannels()
    return rewrite(mod), rewrite.findings


@I.ir_module
class Stem:
    @R.function
    def main(x: R.Tensor((1, 3, 16, 16), "float32"), w: R.Tensor((8, 3, 3, 3), "float32")):
        with R.dataflow():
            y = R.nn.conv2d(x, w, strides=[2, 2], padding=[1, 1, 1, 1])
            R.output(y)
        return y


@I.ir_module
class PaddedStem:
    @R.function
    def main(x: R.Tensor((1, 3, 16, 16), "float32"), w: R.Tensor((8, 4, 3, 3), "float32")):
        with R.dataflow():
            xp = R.nn.pad(x, [0, 0, 0, 1, 0, 0, 0, 0])
            y = R.nn.conv2d(xp, w, strides=[2, 2], padding=[1, 1, 1, 1], out_dtype="float32")
            R.output(y)
        return y


@I.ir_module
class Pointwise:
    @R.function
    def main(x: R.Tensor((1, 3, 16, 16), "float32"), w: R.Tensor((8, 3, 1, 1), "float32")):
        with R.dataflow():
            y = R.nn.conv2d(x, w)
            R.output(y)
        return y


@I.ir_module
class EightChannels:
    @R.function
    def main(x: R.Tensor((1, 8, 16, 16), "float32"), w: R.Tensor((8, 8, 3, 3), "float32")):
        with R.dataflow():
            y = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            R.output(y)
        return y


def test_stem_gets_a_zero_fourth_channel(rng):
    weight = rng.standard_normal((8, 3, 3, 3)).astype("float32")
    after, findings = run_pass(bind(Stem, w=weight))
    padded = np.concatenate([weight, np.zeros((8, 1, 3, 3), "float32")], axis=1)
    tvm.ir.assert_structural_equal(after, bind(PaddedStem, w=padded))
    assert findings == {"rewritten": 1, "declined": []}


def test_pointwise_deep_and_non_constant_convs_stay(rng):
    for module, shape in ((Pointwise, (8, 3, 1, 1)), (EightChannels, (8, 8, 3, 3))):
        before = bind(module, w=rng.standard_normal(shape).astype("float32"))
        after, _ = run_pass(before)
        tvm.ir.assert_structural_equal(after, before)
    after, findings = run_pass(Stem)
    tvm.ir.assert_structural_equal(after, Stem)
    assert findings == {"rewritten": 0, "declined": []}
    _, findings = run_pass(bind(Pointwise, w=rng.standard_normal((8, 3, 1, 1)).astype("float32")))
    assert findings["declined"][0]["reason"].startswith("a 1x1 conv")


def test_padded_stem_computes_the_same(rng):
    before = bind(Stem, w=rng.standard_normal((8, 3, 3, 3)).astype("float32"))
    after, _ = run_pass(before)
    x = rng.standard_normal((1, 3, 16, 16)).astype("float32")
    np.testing.assert_allclose(run_relax(after, x), run_relax(before, x), rtol=1e-6, atol=1e-6)


@I.ir_module
class StemNHWC:
    """How the TFLite importer writes a stem: NHWC activations, OHWI weight."""

    @R.function
    def main(x: R.Tensor((1, 16, 16, 3), "float32"), w: R.Tensor((8, 5, 5, 3), "float32")):
        with R.dataflow():
            y = R.nn.conv2d(x, w, strides=[2, 2], padding=[1, 1, 2, 2], data_layout="NHWC", kernel_layout="OHWI")
            R.output(y)
        return y


def test_channels_last_stem_is_padded_on_its_channel_axes(rng):
    before = bind(StemNHWC, w=rng.standard_normal((8, 5, 5, 3)).astype("float32"))
    after, findings = run_pass(before)
    assert findings["rewritten"] == 1
    assert list(after["main"].body.blocks[0].bindings[-1].value.args[1].value.numpy().shape) == [8, 5, 5, 4]
    x = rng.standard_normal((1, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(run_relax(after, x), run_relax(before, x), rtol=1e-6, atol=1e-6)
