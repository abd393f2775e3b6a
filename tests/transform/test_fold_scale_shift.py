"""FoldScaleShift: exporter-style Mul/Add (and Sub/Div) chains after conv2d/matmul, declines, numerics."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from edgetvm.transform import FoldScaleShift

from .relax_numerics import bind, run_relax


def run_pass(mod):
    fold = FoldScaleShift()
    return fold(mod), fold.findings


@I.ir_module
class ConvMulAdd:
    """Batch norm as an exporter writes it: Mul by a (1,C,1,1) scale, Add a (1,C,1,1) shift."""

    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((8, 3, 3, 3), "float32"),
             s: R.Tensor((1, 8, 1, 1), "float32"), t: R.Tensor((1, 8, 1, 1), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            m = R.multiply(c, s)
            y = R.add(m, t)
            R.output(y)
        return y


@I.ir_module
class ConvBias:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((8, 3, 3, 3), "float32"),
             b: R.Tensor((1, 8, 1, 1), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            y = R.add(c, b)
            R.output(y)
        return y


def mul_add_case(rng):
    w = rng.standard_normal((8, 3, 3, 3)).astype("float32")
    s = rng.uniform(0.5, 1.5, (1, 8, 1, 1)).astype("float32")
    t = rng.standard_normal((1, 8, 1, 1)).astype("float32")
    wf = (w.astype(np.float64) * s.reshape(8, 1, 1, 1)).astype("float32")
    before = bind(ConvMulAdd, w=w, s=s, t=t)
    return before, bind(ConvBias, w=wf, b=t.astype(np.float64).astype("float32")), (1, 3, 8, 8)


def test_mul_add_chain_folds_into_conv(rng):
    before, expected, _ = mul_add_case(rng)
    after, findings = run_pass(before)
    tvm.ir.assert_structural_equal(after, expected)
    assert findings == {"folded": 1, "steps_folded": 2, "declined": []}


@I.ir_module
class ConvBiasNormalize:
    """The long form: ((conv + b - mean) / std) * gamma + beta, constants shaped (C, 1, 1)."""

    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((8, 3, 3, 3), "float32"),
             b: R.Tensor((1, 8, 1, 1), "float32"), mean: R.Tensor((8, 1, 1), "float32"),
             std: R.Tensor((8, 1, 1), "float32"), gamma: R.Tensor((8, 1, 1), "float32"),
             beta: R.Tensor((8, 1, 1), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            cb = R.add(c, b)
            centred = R.subtract(cb, mean)
            normed = R.divide(centred, std)
            scaled = R.multiply(gamma, normed)
            y = R.add(beta, scaled)
            R.output(y)
        return y


def normalize_case(rng):
    w = rng.standard_normal((8, 3, 3, 3)).astype("float32")
    b = rng.standard_normal((1, 8, 1, 1)).astype("float32")
    mean = rng.standard_normal((8, 1, 1)).astype("float32")
    std = rng.uniform(0.5, 1.5, (8, 1, 1)).astype("float32")
    gamma = rng.uniform(0.5, 1.5, (8, 1, 1)).astype("float32")
    beta = rng.standard_normal((8, 1, 1)).astype("float32")
    f64 = [a.reshape(-1).astype(np.float64) for a in (b, mean, std, gamma, beta)]
    b64, mean64, std64, gamma64, beta64 = f64
    scale = 1.0 / std64 * gamma64
    wf = (w.astype(np.float64) * scale.reshape(8, 1, 1, 1)).astype("float32")
    bf = ((b64 - mean64) * (1.0 / std64) * gamma64 + beta64).astype("float32")
    before = bind(ConvBiasNormalize, w=w, b=b, mean=mean, std=std, gamma=gamma, beta=beta)
    return before, bind(ConvBias, w=wf, b=bf.reshape(1, 8, 1, 1)), (1, 3, 8, 8)


def test_sub_div_mul_add_chain_with_bias_folds(rng):
    before, expected, _ = normalize_case(rng)
    after, findings = run_pass(before)
    tvm.ir.assert_structural_equal(after, expected)
    assert findings["steps_folded"] == 5


@I.ir_module
class DenseScaleNegate:
    """matmul, a scalar scale, a per-feature scale, then ``c - x`` (a negation and a shift)."""

    @R.function
    def main(x: R.Tensor((2, 16), "float32"), w: R.Tensor((16, 8), "float32"), s: R.Tensor((8,), "float32"),
             t: R.Tensor((1, 8), "float32")):
        with R.dataflow():
            mm = R.matmul(x, w)
            half = R.multiply(mm, R.const(0.5, "float32"))
            scaled = R.multiply(half, s)
            y = R.subtract(t, scaled)
            R.output(y)
        return y


@I.ir_module
class DenseBias:
    @R.function
    def main(x: R.Tensor((2, 16), "float32"), w: R.Tensor((16, 8), "float32"), b: R.Tensor((8,), "float32")):
        with R.dataflow():
            mm = R.matmul(x, w)
            y = R.add(mm, b)
            R.output(y)
        return y


def dense_case(rng):
    w = rng.standard_normal((16, 8)).astype("float32")
    s = rng.uniform(0.5, 1.5, 8).astype("float32")
    t = rng.standard_normal((1, 8)).astype("float32")
    scale = 0.5 * s.astype(np.float64) * -1.0
    wf = (w.astype(np.float64) * scale).astype("float32")
    return bind(DenseScaleNegate, w=w, s=s, t=t), bind(DenseBias, w=wf, b=t.reshape(8)), (2, 16)


def test_matmul_scale_and_negate_fold(rng):
    before, expected, _ = dense_case(rng)
    after, findings = run_pass(before)
    tvm.ir.assert_structural_equal(after, expected)
    assert findings["steps_folded"] == 3


CASES = [mul_add_case, normalize_case, dense_case]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_folded_chain_computes_the_same(rng, case):
    before, _, in_shape = case(rng)
    after, _ = run_pass(before)
    x = rng.standard_normal(in_shape).astype("float32")
    np.testing.assert_allclose(run_relax(after, x), run_relax(before, x), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Must not fold


@I.ir_module
class SpatialScale:
    """The multiplier varies over H and W: not a per-channel scale."""

    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((8, 3, 3, 3), "float32"),
             s: R.Tensor((1, 1, 8, 8), "float32"), t: R.Tensor((1, 8, 1, 1), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            m = R.multiply(c, s)
            y = R.add(m, t)
            R.output(y)
        return y


@I.ir_module
class SharedConvOutput:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((8, 3, 3, 3), "float32"),
             s: R.Tensor((1, 8, 1, 1), "float32"), t: R.Tensor((1, 8, 1, 1), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            m = R.multiply(c, s)
            y = R.add(m, t)
            out = (y, c)
            R.output(out)
        return out


@pytest.mark.parametrize(
    "module, unbound, reason",
    [
        (SpatialScale, (), "varies along axis 2"),
        (SharedConvOutput, (), "read by 2 ops"),
        (ConvMulAdd, ("w",), "weight is not a compile-time constant"),
    ],
    ids=["spatial-scale", "conv-output-shared", "weight-param"],
)
def test_must_not_fold(rng, module, unbound, reason):
    params = {p.name: rng.standard_normal([int(d) for d in p.ty.shape]).astype("float32")
              for p in module["main"].params[1:] if p.name not in unbound}
    before = bind(module, **params)
    after, findings = run_pass(before)
    tvm.ir.assert_structural_equal(after, before)
    assert findings["folded"] == 0 and len(findings["declined"]) == 1
    assert reason in findings["declined"][0]["reason"], findings


def test_a_lone_bias_add_is_left_alone(rng):
    before = bind(ConvBias, w=rng.standard_normal((8, 3, 3, 3)).astype("float32"),
                  b=rng.standard_normal((1, 8, 1, 1)).astype("float32"))
    after, findings = run_pass(before)
    tvm.ir.assert_structural_equal(after, before)
    assert findings == {"folded": 0, "steps_folded": 0, "declined": []}
