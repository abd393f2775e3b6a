"""FoldBatchNorm: Before/Expected IR for each producer shape, the declines with their reasons, numerics."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from edgetvm.transform import FoldBatchNorm

from .relax_numerics import bind, has_op, run_relax

EPS = 1e-5


def bn_params(rng, channels: int) -> dict[str, np.ndarray]:
    return {
        "gamma": rng.uniform(0.5, 1.5, channels).astype("float32"),
        "beta": rng.standard_normal(channels).astype("float32"),
        "mean": rng.standard_normal(channels).astype("float32"),
        "var": rng.uniform(0.5, 1.5, channels).astype("float32"),
    }


def folded(weight, p, out_axis: int, bias=None):
    """The textbook fold, computed independently of the pass: w * s, (b - mean) * s + beta."""
    s = p["gamma"].astype(np.float64) / np.sqrt(p["var"].astype(np.float64) + EPS)
    shape = [1] * weight.ndim
    shape[out_axis] = -1
    w = (weight.astype(np.float64) * s.reshape(shape)).astype("float32")
    b = 0.0 if bias is None else bias.reshape(-1).astype(np.float64)
    return w, (b * s + (p["beta"].astype(np.float64) - p["mean"].astype(np.float64) * s)).astype("float32")


def run_pass(mod, **kwargs):
    fold = FoldBatchNorm(**kwargs)
    return fold(mod), fold.findings


# ----------------------------------------------------------------------------------------------
# conv2d + batch_norm, NCHW / OIHW


@I.ir_module
class ConvBN:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((8, 3, 3, 3), "float32"),
             gamma: R.Tensor((8,), "float32"), beta: R.Tensor((8,), "float32"),
             mean: R.Tensor((8,), "float32"), var: R.Tensor((8,), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            bn = R.nn.batch_norm(c, gamma, beta, mean, var, axis=1, epsilon=1e-5, training=False)
            y = bn[0]
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


def conv_bn_case(rng):
    w = rng.standard_normal((8, 3, 3, 3)).astype("float32")
    p = bn_params(rng, 8)
    before = bind(ConvBN, w=w, **p)
    wf, bf = folded(w, p, 0)
    return before, bind(ConvBias, w=wf, b=bf.reshape(1, 8, 1, 1)), (1, 3, 8, 8)


def test_conv_bn_folds_to_conv_plus_bias(rng):
    before, expected, _ = conv_bn_case(rng)
    after, findings = run_pass(before)
    tvm.ir.assert_structural_equal(after, expected)
    assert findings["folded"] == 1 and findings["folded_into"] == {"conv2d": 1} and not findings["declined"]


# ----------------------------------------------------------------------------------------------
# conv2d + bias add (as the ONNX importer writes Conv's bias) + batch_norm


@I.ir_module
class ConvBiasBN:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((8, 3, 3, 3), "float32"),
             b: R.Tensor((8,), "float32"),
             gamma: R.Tensor((8,), "float32"), beta: R.Tensor((8,), "float32"),
             mean: R.Tensor((8,), "float32"), var: R.Tensor((8,), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            rb = R.reshape(b, R.shape([1, 8, 1, 1]))
            cb = R.add(c, rb)
            bn = R.nn.batch_norm(cb, gamma, beta, mean, var, axis=1, epsilon=1e-5, training=False)
            y = bn[0]
            R.output(y)
        return y


def conv_bias_bn_case(rng):
    w = rng.standard_normal((8, 3, 3, 3)).astype("float32")
    b = rng.standard_normal(8).astype("float32")
    p = bn_params(rng, 8)
    wf, bf = folded(w, p, 0, bias=b)
    return bind(ConvBiasBN, w=w, b=b, **p), bind(ConvBias, w=wf, b=bf.reshape(1, 8, 1, 1)), (1, 3, 8, 8)


def test_conv_bias_bn_folds_the_bias_through(rng):
    before, expected, _ = conv_bias_bn_case(rng)
    after, findings = run_pass(before)
    tvm.ir.assert_structural_equal(after, expected)
    assert findings["folded"] == 1


# ----------------------------------------------------------------------------------------------
# depthwise and grouped conv2d: the scale still goes along the weight's O axis


@I.ir_module
class DepthwiseBN:
    @R.function
    def main(x: R.Tensor((1, 8, 8, 8), "float32"), w: R.Tensor((8, 1, 3, 3), "float32"),
             gamma: R.Tensor((8,), "float32"), beta: R.Tensor((8,), "float32"),
             mean: R.Tensor((8,), "float32"), var: R.Tensor((8,), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, strides=[2, 2], padding=[1, 1, 1, 1], groups=8)
            bn = R.nn.batch_norm(c, gamma, beta, mean, var, axis=1, epsilon=1e-5, training=False)
            y = bn[0]
            R.output(y)
        return y


@I.ir_module
class DepthwiseBias:
    @R.function
    def main(x: R.Tensor((1, 8, 8, 8), "float32"), w: R.Tensor((8, 1, 3, 3), "float32"),
             b: R.Tensor((1, 8, 1, 1), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, strides=[2, 2], padding=[1, 1, 1, 1], groups=8)
            y = R.add(c, b)
            R.output(y)
        return y


def depthwise_case(rng):
    w = rng.standard_normal((8, 1, 3, 3)).astype("float32")
    p = bn_params(rng, 8)
    wf, bf = folded(w, p, 0)
    return bind(DepthwiseBN, w=w, **p), bind(DepthwiseBias, w=wf, b=bf.reshape(1, 8, 1, 1)), (1, 8, 8, 8)


@I.ir_module
class GroupedBN:
    @R.function
    def main(x: R.Tensor((1, 8, 8, 8), "float32"), w: R.Tensor((16, 4, 3, 3), "float32"),
             gamma: R.Tensor((16,), "float32"), beta: R.Tensor((16,), "float32"),
             mean: R.Tensor((16,), "float32"), var: R.Tensor((16,), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1], groups=2)
            bn = R.nn.batch_norm(c, gamma, beta, mean, var, axis=1, epsilon=1e-5, training=False)
            y = bn[0]
            R.output(y)
        return y


@I.ir_module
class GroupedBias:
    @R.function
    def main(x: R.Tensor((1, 8, 8, 8), "float32"), w: R.Tensor((16, 4, 3, 3), "float32"),
             b: R.Tensor((1, 16, 1, 1), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1], groups=2)
            y = R.add(c, b)
            R.output(y)
        return y


def grouped_case(rng):
    w = rng.standard_normal((16, 4, 3, 3)).astype("float32")
    p = bn_params(rng, 16)
    wf, bf = folded(w, p, 0)
    return bind(GroupedBN, w=w, **p), bind(GroupedBias, w=wf, b=bf.reshape(1, 16, 1, 1)), (1, 8, 8, 8)


@pytest.mark.parametrize("case", [depthwise_case, grouped_case], ids=["depthwise", "grouped"])
def test_grouped_and_depthwise_conv_bn_fold(rng, case):
    before, expected, _ = case(rng)
    after, findings = run_pass(before)
    tvm.ir.assert_structural_equal(after, expected)
    assert findings["folded"] == 1


# ----------------------------------------------------------------------------------------------
# NHWC activations, HWIO weights: channels on the last axis of both output and weight


@I.ir_module
class NhwcBN:
    @R.function
    def main(x: R.Tensor((1, 8, 8, 3), "float32"), w: R.Tensor((3, 3, 3, 8), "float32"),
             gamma: R.Tensor((8,), "float32"), beta: R.Tensor((8,), "float32"),
             mean: R.Tensor((8,), "float32"), var: R.Tensor((8,), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1], data_layout="NHWC", kernel_layout="HWIO")
            bn = R.nn.batch_norm(c, gamma, beta, mean, var, axis=3, epsilon=1e-5, training=False)
            y = bn[0]
            R.output(y)
        return y


@I.ir_module
class NhwcBias:
    @R.function
    def main(x: R.Tensor((1, 8, 8, 3), "float32"), w: R.Tensor((3, 3, 3, 8), "float32"),
             b: R.Tensor((8,), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1], data_layout="NHWC", kernel_layout="HWIO")
            y = R.add(c, b)
            R.output(y)
        return y


def nhwc_case(rng):
    w = rng.standard_normal((3, 3, 3, 8)).astype("float32")
    p = bn_params(rng, 8)
    wf, bf = folded(w, p, 3)
    return bind(NhwcBN, w=w, **p), bind(NhwcBias, w=wf, b=bf), (1, 8, 8, 3)


def test_nhwc_hwio_conv_bn_folds_along_the_last_axis(rng):
    before, expected, _ = nhwc_case(rng)
    after, _ = run_pass(before)
    tvm.ir.assert_structural_equal(after, expected)


# ----------------------------------------------------------------------------------------------
# Gemm (matmul with a transposed constant weight) + bias + 1-D batch norm, as at SFace's end


@I.ir_module
class DenseBN:
    @R.function
    def main(x: R.Tensor((2, 16), "float32"), w: R.Tensor((8, 16), "float32"), b: R.Tensor((8,), "float32"),
             gamma: R.Tensor((8,), "float32"), beta: R.Tensor((8,), "float32"),
             mean: R.Tensor((8,), "float32"), var: R.Tensor((8,), "float32")):
        with R.dataflow():
            wt = R.permute_dims(w, axes=[1, 0])
            mm = R.matmul(x, wt)
            mb = R.add(mm, b)
            bn = R.nn.batch_norm(mb, gamma, beta, mean, var, axis=1, epsilon=1e-5, training=False)
            y = bn[0]
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
    w = rng.standard_normal((8, 16)).astype("float32")
    b = rng.standard_normal(8).astype("float32")
    p = bn_params(rng, 8)
    wf, bf = folded(w.T.copy(), p, 1, bias=b)
    return bind(DenseBN, w=w, b=b, **p), bind(DenseBias, w=wf, b=bf), (2, 16)


def test_matmul_bias_bn1d_folds(rng):
    before, expected, _ = dense_case(rng)
    after, findings = run_pass(before)
    tvm.ir.assert_structural_equal(after, expected)
    assert findings["folded_into"] == {"matmul": 1}


FOLD_CASES = [conv_bn_case, conv_bias_bn_case, depthwise_case, grouped_case, nhwc_case, dense_case]


@pytest.mark.parametrize("case", FOLD_CASES, ids=[c.__name__ for c in FOLD_CASES])
def test_folded_graph_computes_the_same(rng, case):
    before, _, in_shape = case(rng)
    after, findings = run_pass(before)
    assert findings["folded"] == 1 and not has_op(after, "relax.nn.batch_norm")
    x = rng.standard_normal(in_shape).astype("float32")
    np.testing.assert_allclose(run_relax(after, x), run_relax(before, x), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Must not fold: each reason


@I.ir_module
class ConvSharedBN:
    """The conv output is read by the batch norm and by the second output."""

    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((8, 3, 3, 3), "float32"),
             gamma: R.Tensor((8,), "float32"), beta: R.Tensor((8,), "float32"),
             mean: R.Tensor((8,), "float32"), var: R.Tensor((8,), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            bn = R.nn.batch_norm(c, gamma, beta, mean, var, axis=1, epsilon=1e-5, training=False)
            y = bn[0]
            out = (y, c)
            R.output(out)
        return out


@I.ir_module
class ConvSharedScaleShift:
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


@I.ir_module
class TrainingBN:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((8, 3, 3, 3), "float32"),
             gamma: R.Tensor((8,), "float32"), beta: R.Tensor((8,), "float32"),
             mean: R.Tensor((8,), "float32"), var: R.Tensor((8,), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            bn = R.nn.batch_norm(c, gamma, beta, mean, var, axis=1, epsilon=1e-5, training=True)
            y = bn[0]
            R.output(y)
        return y


@I.ir_module
class WrongAxisBN:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((8, 3, 3, 3), "float32"),
             gamma: R.Tensor((8,), "float32"), beta: R.Tensor((8,), "float32"),
             mean: R.Tensor((8,), "float32"), var: R.Tensor((8,), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            bn = R.nn.batch_norm(c, gamma, beta, mean, var, axis=2, epsilon=1e-5, training=False)
            y = bn[0]
            R.output(y)
        return y


@I.ir_module
class ResidualBN:
    """A residual add, not a constant bias, sits between the conv and the batch norm."""

    @R.function
    def main(x: R.Tensor((1, 8, 8, 8), "float32"), w: R.Tensor((8, 8, 3, 3), "float32"),
             gamma: R.Tensor((8,), "float32"), beta: R.Tensor((8,), "float32"),
             mean: R.Tensor((8,), "float32"), var: R.Tensor((8,), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            r = R.add(c, x)
            bn = R.nn.batch_norm(r, gamma, beta, mean, var, axis=1, epsilon=1e-5, training=False)
            y = bn[0]
            R.output(y)
        return y


@I.ir_module
class StatsReadBN:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((8, 3, 3, 3), "float32"),
             gamma: R.Tensor((8,), "float32"), beta: R.Tensor((8,), "float32"),
             mean: R.Tensor((8,), "float32"), var: R.Tensor((8,), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            bn = R.nn.batch_norm(c, gamma, beta, mean, var, axis=1, epsilon=1e-5, training=False)
            y = bn[0]
            m = bn[1]
            out = (y, m)
            R.output(out)
        return out


def _declined(findings) -> str:
    assert findings["folded"] == 0 and len(findings["declined"]) == 1, findings
    return findings["declined"][0]["reason"]


def _weights(rng, **shapes):
    return {k: rng.standard_normal(s).astype("float32") for k, s in shapes.items()}


@pytest.mark.parametrize(
    "module, unbound, reason",
    [
        (ConvSharedBN, (), "other reader"),
        (TrainingBN, (), "training mode"),
        (WrongAxisBN, (), "axis 2"),
        (ResidualBN, (), "not a constant bias"),
        (StatsReadBN, (), "running-statistics outputs are read"),
        (ConvBN, ("w",), "weight is not a compile-time constant"),
        (ConvBN, ("gamma", "var"), "gamma, moving variance are not compile-time constant"),
    ],
    ids=["conv-output-shared", "training", "wrong-axis", "residual-add", "stats-read", "weight-param",
         "stats-param"],
)
def test_must_not_fold(rng, module, unbound, reason):
    wshape = [int(d) for d in module["main"].params[1].ty.shape]
    params = {**_weights(rng, w=wshape), **bn_params(rng, 8)}
    before = bind(module, **{k: v for k, v in params.items() if k not in unbound})
    after, findings = run_pass(before, decompose_unfoldable=False)
    tvm.ir.assert_structural_equal(after, before)
    assert reason in _declined(findings)
    assert findings["declined"][0]["action"] == "left as batch_norm"


def test_unfoldable_inference_bn_becomes_scale_shift(rng):
    """The conv output is shared, so no fold, but the batch norm still turns into x * s + t."""
    w = rng.standard_normal((8, 3, 3, 3)).astype("float32")
    p = bn_params(rng, 8)
    before = bind(ConvSharedBN, w=w, **p)
    after, findings = run_pass(before)
    s = p["gamma"].astype(np.float64) / np.sqrt(p["var"].astype(np.float64) + EPS)
    t = p["beta"].astype(np.float64) - p["mean"].astype(np.float64) * s
    expected = bind(ConvSharedScaleShift, w=w, s=s.astype("float32").reshape(1, 8, 1, 1),
                    t=t.astype("float32").reshape(1, 8, 1, 1))
    tvm.ir.assert_structural_equal(after, expected)
    assert "other reader" in _declined(findings) and findings["scale_shift"] == 1
    x = rng.standard_normal((1, 3, 8, 8)).astype("float32")
    for got, want in zip(run_relax(after, x), run_relax(before, x)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_training_bn_is_never_rewritten(rng):
    params = {**_weights(rng, w=(8, 3, 3, 3)), **bn_params(rng, 8)}
    before = bind(TrainingBN, **params)
    after, findings = run_pass(before)  # decomposition on: still untouched
    tvm.ir.assert_structural_equal(after, before)
    assert findings["scale_shift"] == 0 and "training mode" in _declined(findings)


@I.ir_module
class ConvBNAliased:
    """``z = y`` after the batch norm: the alias must not be matched (and folded) a second time."""

    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((8, 3, 3, 3), "float32"),
             gamma: R.Tensor((8,), "float32"), beta: R.Tensor((8,), "float32"),
             mean: R.Tensor((8,), "float32"), var: R.Tensor((8,), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            bn = R.nn.batch_norm(c, gamma, beta, mean, var, axis=1, epsilon=1e-5, training=False)
            y = bn[0]
            z = y
            R.output(z)
        return z


def test_alias_of_the_batch_norm_output_is_not_folded_twice(rng):
    params = {**_weights(rng, w=(8, 3, 3, 3)), **bn_params(rng, 8)}
    after, findings = run_pass(bind(ConvBNAliased, **params))
    assert findings["batch_norms"] == 1 and findings["folded"] == 1
    assert not has_op(after, "relax.nn.batch_norm")
    assert str(after["main"]).count("R.nn.conv2d") == 1


@I.ir_module
class HalfWeightConvBN:
    """fp16 weights cast to float32 before the conv, as TFLite models with fp16 weights import."""

    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((8, 3, 3, 3), "float16"),
             gamma: R.Tensor((8,), "float32"), beta: R.Tensor((8,), "float32"),
             mean: R.Tensor((8,), "float32"), var: R.Tensor((8,), "float32")):
        with R.dataflow():
            w32 = R.astype(w, "float32")
            c = R.nn.conv2d(x, w32, padding=[1, 1, 1, 1])
            bn = R.nn.batch_norm(c, gamma, beta, mean, var, axis=1, epsilon=1e-5, training=False)
            y = bn[0]
            R.output(y)
        return y


def test_weights_cast_from_fp16_are_constants_too(rng):
    w = rng.standard_normal((8, 3, 3, 3)).astype("float16")
    p = bn_params(rng, 8)
    wf, bf = folded(w.astype("float32"), p, 0)
    after, findings = run_pass(bind(HalfWeightConvBN, w=w, **p))
    tvm.ir.assert_structural_equal(after, bind(ConvBias, w=wf, b=bf.reshape(1, 8, 1, 1)))
