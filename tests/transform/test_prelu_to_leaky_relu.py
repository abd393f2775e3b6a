"""PReLUToLeakyReLU: a shared constant slope becomes LeakyReLU; per-channel and non-constant slopes stay."""

from __future__ import annotations

import numpy as np
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from edgetvm.transform import PReLUToLeakyReLU

from .relax_numerics import bind, run_relax


def run_pass(mod):
    rewrite = PReLUToLeakyReLU()
    return rewrite(mod), rewrite.findings


@I.ir_module
class SharedSlope:
    """How the ONNX importer writes ``PRelu(x, slope[1])``: the slope reshaped to (1,)."""

    @R.function
    def main(x: R.Tensor((1, 8, 4, 4), "float32"), a: R.Tensor((1, 1, 1), "float32")):
        with R.dataflow():
            slope = R.reshape(a, R.shape([1]))
            y = R.nn.prelu(x, slope, axis=3)
            R.output(y)
        return y


@I.ir_module
class Leaky:
    @R.function
    def main(x: R.Tensor((1, 8, 4, 4), "float32")):
        with R.dataflow():
            y = R.nn.leakyrelu(x, alpha=0.25)
            R.output(y)
        return y


@I.ir_module
class PerChannel:
    @R.function
    def main(x: R.Tensor((1, 8, 4, 4), "float32"), a: R.Tensor((8,), "float32")):
        with R.dataflow():
            y = R.nn.prelu(x, a, axis=1)
            R.output(y)
        return y


def test_shared_constant_slope_becomes_leaky_relu():
    before = bind(SharedSlope, a=np.full((1, 1, 1), 0.25, "float32"))
    after, findings = run_pass(before)
    tvm.ir.assert_structural_equal(after, Leaky)
    assert findings["rewritten"] == 1


def test_equal_per_channel_slopes_are_shared_too(rng):
    before = bind(PerChannel, a=np.full(8, 0.25, "float32"))
    after, _ = run_pass(before)
    tvm.ir.assert_structural_equal(after, Leaky)


def test_distinct_slopes_stay_prelu(rng):
    before = bind(PerChannel, a=rng.uniform(0, 0.5, 8).astype("float32"))
    after, findings = run_pass(before)
    tvm.ir.assert_structural_equal(after, before)
    assert findings == {"rewritten": 0, "per_channel": 1, "declined": []}


def test_non_constant_slope_is_declined_with_reason():
    after, findings = run_pass(PerChannel)
    tvm.ir.assert_structural_equal(after, PerChannel)
    assert findings["declined"] == [{"prelu": "y", "reason": "the slope is not a compile-time constant"}]


def test_leaky_relu_computes_the_same_as_prelu(rng):
    # An awkward float32 slope: the alpha attribute (float64) must round-trip exactly.
    slope = np.float32(rng.uniform(0.01, 0.5))
    before = bind(SharedSlope, a=np.full((1, 1, 1), slope, "float32"))
    after, _ = run_pass(before)
    x = rng.standard_normal((1, 8, 4, 4)).astype("float32")
    np.testing.assert_allclose(run_relax(after, x), run_relax(before, x), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(run_relax(after, x), np.where(x > 0, x, x * slope))
