"""QuantizeAnnotate and FoldQuantScales as IR: Before/Expected modules, the chains they must leave alone, numerics.

The expected constants are computed here from the documented formulas, not with the passes' helpers:

* activations, per tensor: ``[lo, hi]`` widened to hold 0, ``s = (hi - lo) / 255``,
  ``z = -128 - round(lo / s)``;
* weights, per output channel: ``s_w = max|W[oc]| / 127``, ``W_q = round(W / s_w)``;
* int32 bias ``round(b / (s_x s_w)) - z_x sum W_q``, requantize multiplier
  ``M = s_x s_w / s_y = m 2^(e - 31)`` with ``m in [2^30, 2^31)``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from edgetvm.quantization.fold_quant_scales import FoldQuantScales
from edgetvm.relax_utils import is_tensor_constant
from edgetvm.quantization.quantize import float_ops
from edgetvm.quantization.annotate import QuantizeAnnotate, plan_quantization
from edgetvm.kernels.int8_nchw import int8_conv2d_requantize
from edgetvm.kernels.int8_nhwc import REDUCED_WEIGHT_MAX, KERNEL_ATTR, make_kernel, pack_epilogue, pack_gemm_weights

from tests.transform.relax_numerics import bind, has_op, run_relax


# ----------------------------------------------------------------------------------------------
# The documented formulas, written out independently of edgetvm.kernels.fixed_point


def activation_scale(lo: float, hi: float) -> tuple[np.float32, int]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0
    return np.float32(scale), int(np.clip(-128 - round(lo / scale), -128, 127))


def weight_per_channel(w: np.ndarray, axis: int, qmax: int = REDUCED_WEIGHT_MAX) -> tuple[np.ndarray, np.ndarray]:
    """(int8 W_q, float32 s_w) with s_w along ``axis``, W_q in [-qmax, qmax] (a dense conv's: 7 bits)."""
    others = tuple(a for a in range(w.ndim) if a != axis)
    scale = (np.abs(w.astype(np.float64)).max(axis=others) / float(qmax)).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w.astype(np.float64) / scale.astype(np.float64).reshape(shape)), -qmax, qmax)
    return q.astype(np.int8), scale


def fixed_point(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``real = m 2^(e - 31)``, ``m in [2^30, 2^31)``, per element: (int32 m, int32 e)."""
    mantissas, exponents = [], []
    for value in np.ravel(real):
        frac, exp = math.frexp(float(value))  # value = frac 2^exp, frac in [0.5, 1)
        m = round(frac * 2**31)
        if m == 2**31:
            m, exp = m // 2, exp + 1
        mantissas.append(m)
        exponents.append(exp)
    return np.array(mantissas, dtype=np.int32), np.array(exponents, dtype=np.int32)


def scalars(**values) -> dict[str, np.ndarray]:
    """0-d arrays for ``bind``: a scale as float32, a zero point as int8."""
    return {name: np.array(v, dtype="float32" if name.startswith("s_") else "int8") for name, v in values.items()}


# ================================================================================================
# QuantizeAnnotate: float graph -> QDQ graph


@I.ir_module
class ConvReluConv:
    """conv3x3 + bias + ReLU feeding a 1x1 conv: the first chain's output is read by the second."""

    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w1: R.Tensor((4, 3, 3, 3), "float32"),
             b1: R.Tensor((1, 4, 1, 1), "float32"), w2: R.Tensor((4, 4, 1, 1), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w1, padding=[1, 1, 1, 1])
            cb = R.add(c, b1)
            r = R.nn.relu(cb)
            y = R.nn.conv2d(r, w2)
            R.output(y)
        return y


@I.ir_module
class ConvReluConvQDQ:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"),
             s_x: R.Tensor((), "float32"), z_x: R.Tensor((), "int8"),
             w1_q: R.Tensor((4, 3, 3, 3), "int8"), s_w1: R.Tensor((4,), "float32"), z_w1: R.Tensor((4,), "int8"),
             b1: R.Tensor((1, 4, 1, 1), "float32"),
             s_r: R.Tensor((), "float32"), z_r: R.Tensor((), "int8"),
             w2_q: R.Tensor((4, 4, 1, 1), "int8"), s_w2: R.Tensor((4,), "float32"), z_w2: R.Tensor((4,), "int8")):
        with R.dataflow():
            x_q = R.quantize(x, s_x, z_x, axis=1, out_dtype="int8")
            x_dq = R.dequantize(x_q, s_x, z_x, axis=1, out_dtype="float32")
            w1 = R.dequantize(w1_q, s_w1, z_w1, axis=0, out_dtype="float32")
            c = R.nn.conv2d(x_dq, w1, padding=[1, 1, 1, 1], out_dtype="float32")
            cb = R.add(c, b1)
            r = R.nn.relu(cb)
            # The first chain's output, read by the second chain ...
            r_q = R.quantize(r, s_r, z_r, axis=1, out_dtype="int8")
            r_dq = R.dequantize(r_q, s_r, z_r, axis=1, out_dtype="float32")
            # ... which quantizes its input again with the same parameters (FoldQuantScales folds
            # that pair as an identity requantize).
            r_q2 = R.quantize(r_dq, s_r, z_r, axis=1, out_dtype="int8")
            r_dq2 = R.dequantize(r_q2, s_r, z_r, axis=1, out_dtype="float32")
            w2 = R.dequantize(w2_q, s_w2, z_w2, axis=0, out_dtype="float32")
            # No other chain reads y: it stays float, and no bias add appears for a chain without one.
            conv = R.nn.conv2d(r_dq2, w2, out_dtype="float32")
            y = conv
            R.output(y)
        return y


X_RANGE = (-0.8, 1.3)
R_RANGE = (0.0, 4.2)


def conv_relu_conv(rng):
    weights = {"w1": rng.standard_normal((4, 3, 3, 3)).astype("float32"),
               "b1": rng.standard_normal((1, 4, 1, 1)).astype("float32"),
               "w2": rng.standard_normal((4, 4, 1, 1)).astype("float32")}
    return bind(ConvReluConv, **weights), weights


def annotate(mod, x_range=X_RANGE, r_range=R_RANGE, channel_means=None, reduce_range=True):
    """Plan ``mod``'s chains and annotate them, with ``x_range`` for the model input and ``r_range``
    for every other tensor the plan calibrates."""
    plan = plan_quantization(mod["main"])
    x = mod["main"].params[0]
    ranges = {var: (x_range if var.same_as(x) else r_range) for var in plan.tensors_to_calibrate()}
    means = {x: channel_means} if channel_means is not None else None
    return QuantizeAnnotate(plan, ranges, means, reduce_range)(mod), plan


def expected_qdq(weights, b1=None):
    s_x, z_x = activation_scale(*X_RANGE)
    s_r, z_r = activation_scale(*R_RANGE)
    w1_q, s_w1 = weight_per_channel(weights["w1"], 0)
    w2_q, s_w2 = weight_per_channel(weights["w2"], 0)
    return bind(ConvReluConvQDQ, w1_q=w1_q, s_w1=s_w1, z_w1=np.zeros(4, "int8"),
                b1=weights["b1"] if b1 is None else b1, w2_q=w2_q, s_w2=s_w2, z_w2=np.zeros(4, "int8"),
                **scalars(s_x=s_x, z_x=z_x, s_r=s_r, z_r=z_r))


def test_annotate_conv_bias_relu_becomes_qdq(rng):
    before, weights = conv_relu_conv(rng)
    after, plan = annotate(before)
    assert [(chain.kind, chain.tail.name) for chain in plan.chains] == [("conv2d", "r"), ("conv2d", "y")]
    assert plan.skipped == []
    tvm.ir.assert_structural_equal(after, expected_qdq(weights))
    # Dense convs' weights in the reduced range the GEMM's 4-products-per-int16-lane tile needs, each
    # channel's largest weight at its end.
    weights_q = []
    relax.analysis.post_order_visit(after["main"], lambda e: weights_q.append(e.value.numpy()) if (
        is_tensor_constant(e) and e.value.dtype == "int8" and e.value.ndim == 4) else None)
    assert len(weights_q) == 2
    for q in weights_q:
        assert np.all(np.abs(q.astype(np.int16)).reshape(4, -1).max(axis=1) == REDUCED_WEIGHT_MAX)
    # reduce_range=False (quantize_options): full-range weights, for the accuracy 7 bits cost.
    full, _ = annotate(before, reduce_range=False)
    w1_q, s_w1 = weight_per_channel(weights["w1"], 0, 127)
    w2_q, s_w2 = weight_per_channel(weights["w2"], 0, 127)
    s_x, z_x = activation_scale(*X_RANGE)
    s_r, z_r = activation_scale(*R_RANGE)
    tvm.ir.assert_structural_equal(full, bind(ConvReluConvQDQ, w1_q=w1_q, s_w1=s_w1, z_w1=np.zeros(4, "int8"),
                                              b1=weights["b1"], w2_q=w2_q, s_w2=s_w2, z_w2=np.zeros(4, "int8"),
                                              **scalars(s_x=s_x, z_x=z_x, s_r=s_r, z_r=z_r)))



def test_annotate_bias_correction_subtracts_the_weight_rounding_mean(rng):
    """With calibrated input channel means ``mu``: ``b' = b - sum_{c,r,s} (s_w W_q - W)[o, c, r, s] mu[c]``
    (Nagel et al. 2019); only the first chain has means, the second keeps its (absent) bias."""
    before, weights = conv_relu_conv(rng)
    means = np.array([0.3, -0.2, 0.7])
    after, _ = annotate(before, channel_means=means)
    w1 = weights["w1"].astype(np.float64)
    w1_q, s_w1 = weight_per_channel(weights["w1"], 0)
    error = w1_q * s_w1.astype(np.float64).reshape(-1, 1, 1, 1) - w1
    corrected = weights["b1"].reshape(-1) - (error * means.reshape(1, 3, 1, 1)).sum(axis=(1, 2, 3))
    assert np.all(np.abs(corrected - weights["b1"].reshape(-1)) > 0)
    tvm.ir.assert_structural_equal(after, expected_qdq(weights, b1=corrected.reshape(1, 4, 1, 1).astype("float32")))


@I.ir_module
class ConvBNRelu:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((4, 3, 3, 3), "float32"),
             gamma: R.Tensor((4,), "float32"), beta: R.Tensor((4,), "float32"),
             mean: R.Tensor((4,), "float32"), var: R.Tensor((4,), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            bn = R.nn.batch_norm(c, gamma, beta, mean, var, axis=1, epsilon=1e-5)
            n = bn[0]
            y = R.nn.relu(n)
            R.output(y)
        return y


@I.ir_module
class ConvBNReluQDQ:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"),
             s_x: R.Tensor((), "float32"), z_x: R.Tensor((), "int8"),
             w_q: R.Tensor((4, 3, 3, 3), "int8"), s_w: R.Tensor((4,), "float32"), z_w: R.Tensor((4,), "int8"),
             b: R.Tensor((1, 4, 1, 1), "float32")):
        with R.dataflow():
            x_q = R.quantize(x, s_x, z_x, axis=1, out_dtype="int8")
            x_dq = R.dequantize(x_q, s_x, z_x, axis=1, out_dtype="float32")
            w = R.dequantize(w_q, s_w, z_w, axis=0, out_dtype="float32")
            c = R.nn.conv2d(x_dq, w, padding=[1, 1, 1, 1], out_dtype="float32")
            cb = R.add(c, b)
            r = R.nn.relu(cb)
            y = r
            R.output(y)
        return y


def test_annotate_folds_batch_norm_into_the_quantized_weight(rng):
    """``W' = W k``, ``b' = (0 - mean) k + beta``, ``k = gamma / sqrt(var + eps)``, then W' per channel."""
    p = {"w": rng.standard_normal((4, 3, 3, 3)).astype("float32"),
         "gamma": rng.uniform(0.5, 1.5, 4).astype("float32"), "beta": rng.standard_normal(4).astype("float32"),
         "mean": rng.standard_normal(4).astype("float32"), "var": rng.uniform(0.5, 1.5, 4).astype("float32")}
    after, plan = annotate(bind(ConvBNRelu, **p))
    assert [(chain.tail.name, chain.batch_norm is not None) for chain in plan.chains] == [("y", True)]
    k = p["gamma"].astype(np.float64) / np.sqrt(p["var"].astype(np.float64) + 1e-5)
    w_q, s_w = weight_per_channel(p["w"].astype(np.float64) * k.reshape(-1, 1, 1, 1), 0)
    b = (p["beta"] - p["mean"].astype(np.float64) * k).astype("float32").reshape(1, 4, 1, 1)
    s_x, z_x = activation_scale(*X_RANGE)
    expected = bind(ConvBNReluQDQ, w_q=w_q, s_w=s_w, z_w=np.zeros(4, "int8"), b=b, **scalars(s_x=s_x, z_x=z_x))
    tvm.ir.assert_structural_equal(after, expected)


def test_annotated_output_stays_a_block_output(rng):
    """Regression: the chain producing the function's result was remapped to a DataflowVar used
    after its dataflow block (ill-formed IR that WellFormed rejects)."""
    before, _ = conv_relu_conv(rng)
    after, _ = annotate(before)
    result = after["main"].body.body
    assert isinstance(result, relax.Var) and not isinstance(result, relax.DataflowVar)
    assert relax.analysis.check_well_formed(after)


@I.ir_module
class ConvSigmoidConv:
    """Sigmoid has no integer rule: the conv before it ends its chain and keeps a float output."""

    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w1: R.Tensor((4, 3, 3, 3), "float32"),
             w2: R.Tensor((4, 4, 1, 1), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w1, padding=[1, 1, 1, 1])
            g = R.sigmoid(c)
            y = R.nn.conv2d(g, w2)
            R.output(y)
        return y


@I.ir_module
class ConvSigmoidConvQDQ:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"),
             s_x: R.Tensor((), "float32"), z_x: R.Tensor((), "int8"),
             w1_q: R.Tensor((4, 3, 3, 3), "int8"), s_w1: R.Tensor((4,), "float32"), z_w1: R.Tensor((4,), "int8"),
             s_g: R.Tensor((), "float32"), z_g: R.Tensor((), "int8"),
             w2_q: R.Tensor((4, 4, 1, 1), "int8"), s_w2: R.Tensor((4,), "float32"), z_w2: R.Tensor((4,), "int8")):
        with R.dataflow():
            x_q = R.quantize(x, s_x, z_x, axis=1, out_dtype="int8")
            x_dq = R.dequantize(x_q, s_x, z_x, axis=1, out_dtype="float32")
            w1 = R.dequantize(w1_q, s_w1, z_w1, axis=0, out_dtype="float32")
            c = R.nn.conv2d(x_dq, w1, padding=[1, 1, 1, 1], out_dtype="float32")
            g = R.sigmoid(c)
            g_q = R.quantize(g, s_g, z_g, axis=1, out_dtype="int8")
            g_dq = R.dequantize(g_q, s_g, z_g, axis=1, out_dtype="float32")
            w2 = R.dequantize(w2_q, s_w2, z_w2, axis=0, out_dtype="float32")
            conv = R.nn.conv2d(g_dq, w2, out_dtype="float32")
            y = conv
            R.output(y)
        return y


def test_annotate_leaves_an_unquantizable_op_float_between_chains(rng):
    w1 = rng.standard_normal((4, 3, 3, 3)).astype("float32")
    w2 = rng.standard_normal((4, 4, 1, 1)).astype("float32")
    after, plan = annotate(bind(ConvSigmoidConv, w1=w1, w2=w2), r_range=(0.0, 1.0))
    assert [chain.tail.name for chain in plan.chains] == ["c", "y"]
    s_x, z_x = activation_scale(*X_RANGE)
    s_g, z_g = activation_scale(0.0, 1.0)
    w1_q, s_w1 = weight_per_channel(w1, 0)
    w2_q, s_w2 = weight_per_channel(w2, 0)
    expected = bind(ConvSigmoidConvQDQ, w1_q=w1_q, s_w1=s_w1, z_w1=np.zeros(4, "int8"), w2_q=w2_q, s_w2=s_w2,
                    z_w2=np.zeros(4, "int8"), **scalars(s_x=s_x, z_x=z_x, s_g=s_g, z_g=z_g))
    tvm.ir.assert_structural_equal(after, expected)


@I.ir_module
class Dense:
    """A classifier matmul no other chain reads."""

    @R.function
    def main(x: R.Tensor((2, 8), "float32"), w: R.Tensor((8, 6), "float32"), b: R.Tensor((1, 6), "float32")):
        with R.dataflow():
            m = R.matmul(x, w)
            y = R.add(m, b)
            R.output(y)
        return y


@I.ir_module
class DenseWeightOnly:
    @R.function
    def main(x: R.Tensor((2, 8), "float32"), w_q: R.Tensor((8, 6), "int8"), s_w: R.Tensor((6,), "float32"),
             z_w: R.Tensor((6,), "int8"), b: R.Tensor((1, 6), "float32")):
        with R.dataflow():
            w = R.dequantize(w_q, s_w, z_w, axis=1, out_dtype="float32")
            m = R.matmul(x, w)
            mb = R.add(m, b)
            y = mb
            R.output(y)
        return y


def test_annotate_final_matmul_gets_int8_weights_and_a_float_input(rng):
    """The classifier/embedding matmul: weights per output column (axis 1 of K x M), input left float."""
    w = rng.standard_normal((8, 6)).astype("float32")
    b = rng.standard_normal((1, 6)).astype("float32")
    after, plan = annotate(bind(Dense, w=w, b=b))
    assert [(chain.kind, chain.tail.name) for chain in plan.chains] == [("matmul", "y")]
    w_q, s_w = weight_per_channel(w, 1, 127)
    tvm.ir.assert_structural_equal(after, bind(DenseWeightOnly, w_q=w_q, s_w=s_w, z_w=np.zeros(6, "int8"), b=b))


@I.ir_module
class ConvNonConstantWeight:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((4, 3, 3, 3), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            y = R.nn.relu(c)
            R.output(y)
        return y


@I.ir_module
class ConvNHWC:
    @R.function
    def main(x: R.Tensor((1, 8, 8, 3), "float32"), w: R.Tensor((4, 3, 3, 3), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1], data_layout="NHWC", kernel_layout="OHWI")
            y = R.nn.relu(c)
            R.output(y)
        return y


@I.ir_module
class MatmulBatched:
    """A 3-D matmul input: the integer dense kernel is 2-D only."""

    @R.function
    def main(x: R.Tensor((2, 5, 8), "float32"), w: R.Tensor((8, 6), "float32")):
        with R.dataflow():
            y = R.matmul(x, w)
            R.output(y)
        return y


@pytest.mark.parametrize("before, constant, skipped", [
    (ConvNonConstantWeight, False, "c: conv2d with a non-constant weight stays float"),
    (ConvNHWC, True, "c: conv2d layout NHWC/OHWI stays float"),
    (MatmulBatched, True, None),
], ids=["non-constant-weight", "nhwc-conv", "3d-matmul"])
def test_annotate_declines_and_leaves_the_module_unchanged(rng, before, constant, skipped):
    if constant:
        before = bind(before, w=rng.standard_normal([int(d) for d in before["main"].params[1].ty.shape])
                      .astype("float32"))
    after, plan = annotate(before)
    assert plan.chains == []
    assert plan.skipped == ([skipped] if skipped else [])
    tvm.ir.assert_structural_equal(after, before)


@I.ir_module
class ConvOutputReadTwice:
    """The conv's output is also a model output: its ReLU cannot join the chain."""

    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((4, 3, 3, 3), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            y = R.nn.relu(c)
            R.output(c, y)
        return (c, y)


@I.ir_module
class ConvPReLU:
    @R.function
    def main(x: R.Tensor((1, 3, 8, 8), "float32"), w: R.Tensor((4, 3, 3, 3), "float32"),
             a: R.Tensor((4,), "float32")):
        with R.dataflow():
            c = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
            y = R.nn.prelu(c, a, axis=1)
            R.output(y)
        return y


def test_annotate_chain_stops_at_a_tensor_with_two_users_or_a_non_constant_slope(rng):
    w = rng.standard_normal((4, 3, 3, 3)).astype("float32")
    plan = plan_quantization(bind(ConvOutputReadTwice, w=w)["main"])
    assert [(chain.tail.name, chain.activation) for chain in plan.chains] == [("c", None)]
    plan = plan_quantization(bind(ConvPReLU, w=w, a=np.full(4, 0.1, "float32"))["main"])
    assert [(chain.tail.name, str(chain.activation.op.name)) for chain in plan.chains] == [("y", "relax.nn.prelu")]
    plan = plan_quantization(bind(ConvPReLU, w=w)["main"])
    assert [(chain.tail.name, chain.activation) for chain in plan.chains] == [("c", None)]


def conv2d_nchw(x: np.ndarray, w: np.ndarray, pad: int) -> np.ndarray:
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oc, _, kh, kw = w.shape
    oh, ow = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    out = np.zeros((x.shape[0], oc, oh, ow))
    for r in range(kh):
        for s in range(kw):
            out += np.einsum("nchw,oc->nohw", x[:, :, r:r + oh, s:s + ow], w[:, :, r, s])
    return out


def test_annotated_module_tracks_the_float_module(rng):
    """Lossy within the quantization steps: calibrated on the input itself, the QDQ module (compiled
    for the host) stays within a few quantization steps of the float module."""
    before, weights = conv_relu_conv(rng)
    x = rng.uniform(*X_RANGE, (1, 3, 8, 8)).astype("float32")
    r = np.maximum(conv2d_nchw(x, weights["w1"], 1) + weights["b1"], 0)
    after, _ = annotate(before, x_range=(float(x.min()), float(x.max())), r_range=(0.0, float(r.max())))
    ref, got = run_relax(before, x), run_relax(after, x)
    # y = W2 r: r rounded by at most s_r / 2, plus what x's and W1's rounding moved r (measured: about
    # as much again), each weighted by W2's L1 norm per output channel; W2's own rounding is smaller.
    s_r = r.max() / 255
    w2_l1 = np.abs(weights["w2"]).sum(axis=(1, 2, 3)).max()
    err = np.abs(got - ref).max()
    assert 0 < err < 2 * s_r * w2_l1, (err, s_r * w2_l1)


# ================================================================================================
# FoldQuantScales: QDQ chains -> integer kernels

# The integer kernels are generated PrimFuncs: the Expected modules below hold a stub in their place,
# replaced by the kernel generated with the parameters the test expects (the generators are checked
# bit for bit against numpy in test_int8_kernels.py / test_int8_nhwc_kernels.py).
KERNEL_ATTRS = {"op_pattern": 8}


def with_kernel(mod: tvm.IRModule, name: str, kernel: tvm.tirx.PrimFunc) -> tvm.IRModule:
    """``mod`` (not modified) with its stub PrimFunc ``name`` replaced by ``kernel``."""
    mod = mod.clone()
    mod.update_func(mod.get_global_var(name), kernel)
    return mod


def te_kernel(te_func, inputs, name: str, *args, **params) -> tvm.tirx.PrimFunc:
    """The PrimFunc ``call_te(te_func, ...)`` writes for ``inputs`` (Relax vars / constants)."""
    bb = relax.BlockBuilder()
    params_vars = [v for v in inputs if isinstance(v, relax.Var)]
    with bb.function("f", params_vars):
        out = bb.emit(bb.call_te(te_func, *inputs, *args, primfunc_name_hint=name, primfunc_attrs=KERNEL_ATTRS,
                                 **params))
        bb.emit_func_output(out)
    return bb.get()[name]


def int32_bias(b, s_x, s_w, z_x, w_q):
    """``round(b / (s_x s_w)) - z_x sum W_q`` per output channel."""
    acc_scale = np.float64(s_x) * s_w.astype(np.float64)
    w_sum = w_q.astype(np.int64).reshape(w_q.shape[0], -1).sum(axis=1)
    return (np.rint(b.reshape(-1).astype(np.float64) / acc_scale) - z_x * w_sum).astype(np.int32)


@I.ir_module
class StridedConvLeakyQDQ:
    """uint8 input (no int8 x int8 pairs): the NCHW kernel."""

    @R.function
    def main(x: R.Tensor((1, 3, 6, 6), "uint8"), s_x: R.Tensor((), "float32"), z_x: R.Tensor((), "uint8"),
             w_q: R.Tensor((6, 3, 3, 3), "int8"), s_w: R.Tensor((6,), "float32"), z_w: R.Tensor((6,), "int8"),
             b: R.Tensor((1, 6, 1, 1), "float32"), s_y: R.Tensor((), "float32"), z_y: R.Tensor((), "int8")):
        with R.dataflow():
            x_dq = R.dequantize(x, s_x, z_x, axis=1, out_dtype="float32")
            w = R.dequantize(w_q, s_w, z_w, axis=0, out_dtype="float32")
            c = R.nn.conv2d(x_dq, w, strides=[2, 2], padding=[1, 1, 1, 1], out_dtype="float32")
            cb = R.add(c, b)
            a = R.nn.leakyrelu(cb, alpha=0.1)
            y = R.quantize(a, s_y, z_y, axis=1, out_dtype="int8")
            R.output(y)
        return y


@I.ir_module(check_well_formed=False)  # the stub kernel: see with_kernel
class StridedConvLeakyInt8:
    @T.prim_func(private=True)
    def int8_conv2d():
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((1, 3, 6, 6), "uint8"), w_q: R.Tensor((6, 3, 3, 3), "int8"), bias: R.Tensor((6,), "int32"),
             m_pos: R.Tensor((6,), "int32"), e_pos: R.Tensor((6,), "int32"),
             m_neg: R.Tensor((6,), "int32"), e_neg: R.Tensor((6,), "int32")):
        cls = StridedConvLeakyInt8
        with R.dataflow():
            y = R.call_tir(cls.int8_conv2d, (x, w_q, bias, m_pos, e_pos, m_neg, e_neg),
                           out_ty=R.Tensor((1, 6, 3, 3), "int8"))
            R.output(y)
        return y


def strided_conv_leaky(rng):
    p = {"w_q": rng.integers(-127, 128, (6, 3, 3, 3)).astype(np.int8),
         "s_w": rng.uniform(0.002, 0.01, 6).astype(np.float32), "z_w": np.zeros(6, np.int8),
         "b": rng.normal(0, 0.2, (1, 6, 1, 1)).astype(np.float32),
         "s_x": np.array(0.02, np.float32), "z_x": np.array(128, np.uint8), **scalars(s_y=0.05, z_y=-20)}
    return bind(StridedConvLeakyQDQ, **p), p


def test_fold_conv_bias_leaky_relu_becomes_the_nchw_kernel(rng):
    before, p = strided_conv_leaky(rng)
    folder = FoldQuantScales()
    after = folder(before)
    assert folder.report.kernels == {"conv2d": 1} and folder.report.channels_last == {}
    assert folder.report.declined == []

    real = np.float64(p["s_x"]) * p["s_w"].astype(np.float64) / np.float64(p["s_y"])  # M = s_x s_w / s_y
    m_pos, e_pos = fixed_point(real)
    m_neg, e_neg = fixed_point(real * 0.1)  # LeakyReLU: alpha M for negative accumulators
    consts = {"w_q": p["w_q"], "bias": int32_bias(p["b"], p["s_x"], p["s_w"], 128, p["w_q"]),
              "m_pos": m_pos, "e_pos": e_pos, "m_neg": m_neg, "e_neg": e_neg}
    x = relax.Var("x", relax.TensorType((1, 3, 6, 6), "uint8"))
    kernel = te_kernel(int8_conv2d_requantize, [x] + [relax.const(v) for v in consts.values()], "int8_conv2d",
                       strides=[2, 2], padding=[1, 1, 1, 1], dilation=[1, 1], groups=1, x_zero_point=128,
                       y_zero_point=-20, clamp=(-128, 127), out_dtype="int8", pair_products=False)
    expected = with_kernel(bind(StridedConvLeakyInt8, **consts), "int8_conv2d", kernel)
    tvm.ir.assert_structural_equal(after, expected)


@I.ir_module
class PointwiseConvReluQDQ:
    """int8 input, 16 input channels, 1x1 stride 1: the channels-last GEMM."""

    @R.function
    def main(x: R.Tensor((1, 16, 4, 4), "int8"), s_x: R.Tensor((), "float32"), z_x: R.Tensor((), "int8"),
             w_q: R.Tensor((8, 16, 1, 1), "int8"), s_w: R.Tensor((8,), "float32"), z_w: R.Tensor((8,), "int8"),
             b: R.Tensor((1, 8, 1, 1), "float32"), s_y: R.Tensor((), "float32"), z_y: R.Tensor((), "int8")):
        with R.dataflow():
            x_dq = R.dequantize(x, s_x, z_x, axis=1, out_dtype="float32")
            w = R.dequantize(w_q, s_w, z_w, axis=0, out_dtype="float32")
            c = R.nn.conv2d(x_dq, w, out_dtype="float32")
            cb = R.add(c, b)
            r = R.nn.relu(cb)
            y = R.quantize(r, s_y, z_y, axis=1, out_dtype="int8")
            R.output(y)
        return y


@I.ir_module(check_well_formed=False)  # the stub kernel: see with_kernel
class PointwiseConvReluInt8:
    @T.prim_func(private=True)
    def int8_conv1x1_nhwc():
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((1, 16, 4, 4), "int8"), w_packed: R.Tensor((1, 2, 4, 16), "int8"),
             epilogue: R.Tensor((2, 3, 4), "int32")):
        cls = PointwiseConvReluInt8
        with R.dataflow():
            x_nhwc = R.permute_dims(x, axes=[0, 2, 3, 1])
            y_nhwc = R.call_tir(cls.int8_conv1x1_nhwc, (x_nhwc, w_packed, epilogue),
                                out_ty=R.Tensor((1, 4, 4, 8), "int8"))
            y_nchw = R.permute_dims(y_nhwc, axes=[0, 3, 1, 2])
            y = y_nchw
            R.output(y)
        return y


def pointwise_conv_relu(rng, w_max=127):
    p = {"w_q": rng.integers(-w_max, w_max + 1, (8, 16, 1, 1)).astype(np.int8),
         "s_w": rng.uniform(0.002, 0.01, 8).astype(np.float32), "z_w": np.zeros(8, np.int8),
         "b": rng.normal(0, 0.2, (1, 8, 1, 1)).astype(np.float32), **scalars(s_x=0.02, z_x=-5, s_y=0.05, z_y=-20)}
    return bind(PointwiseConvReluQDQ, **p), p


@pytest.mark.parametrize("w_max", [127, REDUCED_WEIGHT_MAX])
def test_fold_pointwise_conv_relu_becomes_the_channels_last_gemm(rng, w_max):
    """Weights in [-63, 63] (QuantizeAnnotate's) take the reduced-range GEMM tile, packed for it; a QDQ
    model's full-range weights the full-range one."""
    before, p = pointwise_conv_relu(rng, w_max)
    folder = FoldQuantScales()
    after = folder(before)
    assert folder.report.kernels == {"conv2d": 1} and folder.report.channels_last == {"conv1x1": 1}

    m_pos, e_pos = fixed_point(np.float64(p["s_x"]) * p["s_w"].astype(np.float64) / np.float64(p["s_y"]))
    assert np.all(e_pos < 0)  # M < 0.5: only right shifts in the kernel (its fixup ungated: right_shift)
    bias = int32_bias(p["b"], p["s_x"], p["s_w"], -5, p["w_q"])
    # The kernel's recipe: ReLU is the clamp [z_y, 127].
    params = {"x_shape": [1, 4, 4, 16], "channels_out": 8, "out_dtype": "int8", "y_zero_point": -20,
              "clamp": [-20, 127], "negative": False, "float_out": False, "left_shift": False,
              "right_shift": True, "reduced": w_max == REDUCED_WEIGHT_MAX}
    kernel = make_kernel("conv1x1", **params).with_attr("op_pattern", 8).with_attr("tirx.is_scheduled", True) \
        .with_attr("global_symbol", "int8_conv1x1_nhwc")
    assert json.loads(str(after["int8_conv1x1_nhwc"].attrs[KERNEL_ATTR])) == {"kind": "conv1x1", "params": params}
    # Weights and epilogue in the microkernel's packed order (per 4 channels: bias, m, e rows).
    expected = bind(PointwiseConvReluInt8, w_packed=pack_gemm_weights(p["w_q"].reshape(8, 16), params["reduced"]),
                    epilogue=pack_epilogue(bias, m_pos, e_pos))
    tvm.ir.assert_structural_equal(after, with_kernel(expected, "int8_conv1x1_nhwc", kernel))


@I.ir_module
class RequantizeQDQ:
    @R.function
    def main(q: R.Tensor((1, 8, 4, 4), "int8"), s_1: R.Tensor((), "float32"), z_1: R.Tensor((), "int8"),
             s_2: R.Tensor((), "float32"), z_2: R.Tensor((), "int8")):
        with R.dataflow():
            d = R.dequantize(q, s_1, z_1, axis=1, out_dtype="float32")
            y = R.quantize(d, s_2, z_2, axis=1, out_dtype="int8")
            R.output(y)
        return y


@I.ir_module
class RequantizeIdentity:
    @R.function
    def main(q: R.Tensor((1, 8, 4, 4), "int8")):
        with R.dataflow():
            y = q
            R.output(y)
        return y


def test_fold_equal_quantization_parameters_cancel():
    folder = FoldQuantScales()
    after = folder(bind(RequantizeQDQ, **scalars(s_1=0.05, z_1=-3, s_2=0.05, z_2=-3)))
    tvm.ir.assert_structural_equal(after, RequantizeIdentity)
    assert folder.report.kernels == {"identity": 1}


@I.ir_module(check_well_formed=False)  # the stub kernel: see with_kernel
class RequantizeInt8:
    @T.prim_func(private=True)
    def int8_requantize():
        T.evaluate(0)

    @R.function
    def main(q: R.Tensor((1, 8, 4, 4), "int8")):
        cls = RequantizeInt8
        with R.dataflow():
            y = R.call_tir(cls.int8_requantize, (q,), out_ty=R.Tensor((1, 8, 4, 4), "int8"))
            R.output(y)
        return y


def test_fold_consecutive_scales_become_one_rescale():
    """``quantize(dequantize(q, s1, z1), s2, z2) = z2 + (s1 / s2)(q - z1)`` with ``s1 / s2`` in fixed point."""
    from edgetvm.kernels.int8_nchw import int8_requantize_tensor

    folder = FoldQuantScales()
    after = folder(bind(RequantizeQDQ, **scalars(s_1=0.05, z_1=-3, s_2=0.07, z_2=10)))
    assert folder.report.kernels == {"requantize": 1}
    m, e = fixed_point(np.float64(np.float32(0.05)) / np.float64(np.float32(0.07)))
    q = relax.Var("q", relax.TensorType((1, 8, 4, 4), "int8"))
    kernel = te_kernel(int8_requantize_tensor, [q], "int8_requantize", in_zero_point=-3, mult=(int(m[0]), int(e[0])),
                       out_zero_point=10, clamp=(-128, 127), out_dtype="int8")
    tvm.ir.assert_structural_equal(after, with_kernel(RequantizeInt8, "int8_requantize", kernel))


def qdq_conv(x_scale_shape=(), w_axis=0, y_scale_shape=(), w_scale_shape=(8,)):
    """``quantize(conv2d(dequantize(x), dequantize(W_q, axis=w_axis)))`` with the scales' shapes chosen
    (8 channels in and out, so a scale vector fits either weight axis)."""

    @I.ir_module
    class QDQConv:
        @R.function
        def main(x: R.Tensor((1, 8, 4, 4), "int8"), s_x: R.Tensor(x_scale_shape, "float32"),
                 z_x: R.Tensor(x_scale_shape, "int8"), w_q: R.Tensor((8, 8, 1, 1), "int8"),
                 s_w: R.Tensor(w_scale_shape, "float32"), z_w: R.Tensor(w_scale_shape, "int8"),
                 s_y: R.Tensor(y_scale_shape, "float32"), z_y: R.Tensor(y_scale_shape, "int8")):
            with R.dataflow():
                x_dq = R.dequantize(x, s_x, z_x, axis=1, out_dtype="float32")
                w = R.dequantize(w_q, s_w, z_w, axis=w_axis, out_dtype="float32")
                c = R.nn.conv2d(x_dq, w, out_dtype="float32")
                y = R.quantize(c, s_y, z_y, axis=1, out_dtype="int8")
                R.output(y)
            return y

    return QDQConv


def qdq_conv_params(rng, x_scale_shape=(), y_scale_shape=(), w_zero=0, constant_weight=True):
    p = {"s_x": np.full(x_scale_shape, 0.02, np.float32), "z_x": np.full(x_scale_shape, -5, np.int8),
         "s_w": rng.uniform(0.002, 0.01, 8).astype(np.float32), "z_w": np.full(8, w_zero, np.int8),
         "s_y": np.full(y_scale_shape, 0.05, np.float32), "z_y": np.full(y_scale_shape, 3, np.int8)}
    if constant_weight:
        p["w_q"] = rng.integers(-127, 128, (8, 8, 1, 1)).astype(np.int8)
    return p


@pytest.mark.parametrize("case, reason", [
    ({"constant_weight": False}, "weight is not a constant int8 tensor"),
    ({"w_zero": 3}, "weight zero point is not 0 (asymmetric weights)"),
    ({"w_axis": 1}, "weight scale is neither per tensor nor per output channel"),
    ({"x_scale_shape": (8,)}, "activation dequantize is not per-tensor with constant parameters"),
    ({"y_scale_shape": (8,)}, "output quantize is not per-tensor"),
], ids=["non-constant-weight", "asymmetric-weight", "weight-scale-on-input-axis", "per-channel-input",
        "per-channel-output"])
def test_fold_declines_and_leaves_the_chain_unchanged(rng, case, reason):
    shapes = {k: v for k, v in case.items() if k in ("x_scale_shape", "y_scale_shape")}
    module = qdq_conv(**shapes, w_axis=case.get("w_axis", 0))
    params = qdq_conv_params(rng, **shapes, **{k: v for k, v in case.items() if k in ("w_zero", "constant_weight")})
    before = bind(module, **params)
    folder = FoldQuantScales()
    after = folder(before)
    tvm.ir.assert_structural_equal(after, before)
    assert folder.report.kernels == {}
    declined = folder.report.declined
    assert len(declined) == 1 and f"linear: {reason};" in declined[0], declined


@pytest.mark.parametrize("w_scale_shape", [(8,), ()], ids=["per-channel-weight", "per-tensor-weight"])
def test_fold_accepts_the_plain_chain_the_declines_perturb(rng, w_scale_shape):
    """The control for the declines above: the same module with per-tensor activations and symmetric
    constant weights, per output channel or per tensor, folds (the 1x1 GEMM wants 16 input channels,
    so im2col + GEMM)."""
    params = qdq_conv_params(rng)
    if w_scale_shape == ():
        params["s_w"], params["z_w"] = np.array(0.005, np.float32), np.array(0, np.int8)
    folder = FoldQuantScales()
    after = folder(bind(qdq_conv(w_scale_shape=w_scale_shape), **params))
    assert folder.report.kernels == {"conv2d": 1} and folder.report.channels_last == {"im2col": 1}
    assert folder.report.declined == []
    assert float_ops(after) == {}


@I.ir_module
class ConvSigmoidQDQ:
    @R.function
    def main(x: R.Tensor((1, 3, 6, 6), "uint8"), s_x: R.Tensor((), "float32"), z_x: R.Tensor((), "uint8"),
             w_q: R.Tensor((6, 3, 3, 3), "int8"), s_w: R.Tensor((6,), "float32"), z_w: R.Tensor((6,), "int8"),
             b: R.Tensor((1, 6, 1, 1), "float32"), s_y: R.Tensor((), "float32"), z_y: R.Tensor((), "int8")):
        with R.dataflow():
            x_dq = R.dequantize(x, s_x, z_x, axis=1, out_dtype="float32")
            w = R.dequantize(w_q, s_w, z_w, axis=0, out_dtype="float32")
            c = R.nn.conv2d(x_dq, w, strides=[2, 2], padding=[1, 1, 1, 1], out_dtype="float32")
            cb = R.add(c, b)
            g = R.sigmoid(cb)
            y = R.quantize(g, s_y, z_y, axis=1, out_dtype="int8")
            R.output(y)
        return y


@I.ir_module(check_well_formed=False)  # the stub kernel: see with_kernel
class ConvSigmoidInt8:
    @T.prim_func(private=True)
    def int8_conv2d_float():
        T.evaluate(0)

    @R.function
    def main(x: R.Tensor((1, 3, 6, 6), "uint8"), w_q: R.Tensor((6, 3, 3, 3), "int8"), bias: R.Tensor((6,), "int32"),
             acc_scale: R.Tensor((6,), "float32"), s_y: R.Tensor((), "float32"), z_y: R.Tensor((), "int8")):
        cls = ConvSigmoidInt8
        with R.dataflow():
            cb = R.call_tir(cls.int8_conv2d_float, (x, w_q, bias, acc_scale), out_ty=R.Tensor((1, 6, 3, 3), "float32"))
            g = R.sigmoid(cb)
            y = R.quantize(g, s_y, z_y, axis=1, out_dtype="int8")
            R.output(y)
        return y


def test_fold_conv_before_a_float_op_accumulates_in_int32_and_the_report_lists_the_float_op(rng):
    """Sigmoid has no integer rule: the conv under it gets integer accumulation with a float output
    ``float(acc) s_x s_w``, the sigmoid and its quantize stay, and the report says so."""
    from edgetvm.quantization.quantize import fold_qdq
    from edgetvm.kernels.int8_nchw import int8_conv2d_dequantize

    _, p = strided_conv_leaky(rng)
    after, report = fold_qdq(bind(ConvSigmoidQDQ, **p))
    assert report["int8_kernels"] == {"conv2d_float_out": 1}
    assert report["float_ops"] == {"sigmoid": 1}
    assert report["declined"] == ["linear: no conv2d/matmul under the quantize (found relax.sigmoid); add: not an add; "
                                  "requantize: input is relax.sigmoid, not dequantize"]
    acc_scale = (np.float64(p["s_x"]) * p["s_w"].astype(np.float64)).astype(np.float32)
    consts = {"w_q": p["w_q"], "bias": int32_bias(p["b"], p["s_x"], p["s_w"], 128, p["w_q"]), "acc_scale": acc_scale}
    x = relax.Var("x", relax.TensorType((1, 3, 6, 6), "uint8"))
    kernel = te_kernel(int8_conv2d_dequantize, [x] + [relax.const(v) for v in consts.values()], "int8_conv2d_float",
                       strides=[2, 2], padding=[1, 1, 1, 1], dilation=[1, 1], groups=1, x_zero_point=128,
                       pair_products=False)
    expected = bind(ConvSigmoidInt8, **consts, s_y=p["s_y"], z_y=p["z_y"])
    tvm.ir.assert_structural_equal(after, with_kernel(expected, "int8_conv2d_float", kernel))


@pytest.mark.parametrize("case", ["nchw-uint8-leaky", "nhwc-gemm-relu", "nhwc-im2col"])
def test_folded_integer_module_matches_the_qdq_module_within_one_step(rng, case):
    """Integer-only inference equals the QDQ graph evaluated in float up to the rounding of the bias
    to int32 and of ``M`` to fixed point: at most one unit of the int8 output when ``M < 1``."""
    if case == "nchw-uint8-leaky":
        before, _ = strided_conv_leaky(rng)
        x = rng.integers(0, 256, (1, 3, 6, 6)).astype(np.uint8)
    elif case == "nhwc-gemm-relu":
        before, _ = pointwise_conv_relu(rng)
        x = rng.integers(-128, 128, (1, 16, 4, 4)).astype(np.int8)
    else:
        before = bind(qdq_conv(), **qdq_conv_params(rng))
        x = rng.integers(-128, 128, (1, 8, 4, 4)).astype(np.int8)
    folded = FoldQuantScales()(before)
    assert not any(op in float_ops(folded) for op in ("nn.conv2d", "add"))
    ref = run_relax(before, x).astype(np.int32)
    got = run_relax(folded, x).astype(np.int32)
    assert len(np.unique(ref)) > 8  # not a saturated output
    assert np.abs(got - ref).max() <= 1
    assert np.mean(got == ref) > 0.9


@I.ir_module
class ConvBiasReadTwiceQDQ:
    """The biased conv output is also a model output: folding it into the requantizing kernel would
    compute the conv twice, so the rule (producers with one use each) declines."""

    @R.function
    def main(x: R.Tensor((1, 8, 4, 4), "int8"), s_x: R.Tensor((), "float32"), z_x: R.Tensor((), "int8"),
             w_q: R.Tensor((8, 8, 1, 1), "int8"), s_w: R.Tensor((8,), "float32"), z_w: R.Tensor((8,), "int8"),
             b: R.Tensor((1, 8, 1, 1), "float32"), s_y: R.Tensor((), "float32"), z_y: R.Tensor((), "int8")):
        with R.dataflow():
            x_dq = R.dequantize(x, s_x, z_x, axis=1, out_dtype="float32")
            w = R.dequantize(w_q, s_w, z_w, axis=0, out_dtype="float32")
            c = R.nn.conv2d(x_dq, w, out_dtype="float32")
            cb = R.add(c, b)
            r = R.nn.relu(cb)
            y = R.quantize(r, s_y, z_y, axis=1, out_dtype="int8")
            R.output(cb, y)
        return (cb, y)


def test_fold_declines_a_chain_whose_intermediate_has_two_uses(rng):
    params = qdq_conv_params(rng)
    before = bind(ConvBiasReadTwiceQDQ, **params, b=rng.normal(0, 0.2, (1, 8, 1, 1)).astype(np.float32))
    folder = FoldQuantScales()
    after = folder(before)
    tvm.ir.assert_structural_equal(after, before)
    assert folder.report.kernels == {}
    assert len(folder.report.declined) == 1 and folder.report.declined[0].startswith("linear: cb has 2 uses;")


@I.ir_module
class SharedInputQDQ:
    """One dequantized input read by two convs: each chain folds (the dequantize may have many users)."""

    @R.function
    def main(x: R.Tensor((1, 8, 4, 4), "int8"), s_x: R.Tensor((), "float32"), z_x: R.Tensor((), "int8"),
             w_q: R.Tensor((8, 8, 1, 1), "int8"), s_w: R.Tensor((8,), "float32"), z_w: R.Tensor((8,), "int8"),
             s_y: R.Tensor((), "float32"), z_y: R.Tensor((), "int8")):
        with R.dataflow():
            x_dq = R.dequantize(x, s_x, z_x, axis=1, out_dtype="float32")
            w = R.dequantize(w_q, s_w, z_w, axis=0, out_dtype="float32")
            c1 = R.nn.conv2d(x_dq, w, out_dtype="float32")
            y1 = R.quantize(c1, s_y, z_y, axis=1, out_dtype="int8")
            c2 = R.nn.conv2d(x_dq, w, strides=[2, 2], out_dtype="float32")
            y2 = R.quantize(c2, s_y, z_y, axis=1, out_dtype="int8")
            R.output(y1, y2)
        return (y1, y2)


def test_fold_takes_both_chains_reading_one_dequantize(rng):
    folder = FoldQuantScales()
    after = folder(bind(SharedInputQDQ, **qdq_conv_params(rng)))
    assert folder.report.kernels == {"conv2d": 2} and folder.report.declined == []
    assert float_ops(after) == {} and not has_op(after, "relax.dequantize")
