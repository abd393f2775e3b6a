"""The rewrite as IR: a Before module and the Expected pruned one, compared structurally; and
pruning that runs after BN folding (the order must not matter)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from edgetvm.frontends import load_model
from edgetvm.transform import FoldBatchNorm
from edgetvm.pruning.plan import PruningConfig
from edgetvm.pruning.rewrite import prune_function
from edgetvm.host import HostEvaluator

from .nets import Net, run_onnx


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 4, 8, 8), "float32"), w1: R.Tensor((8, 4, 1, 1), "float32"),
             s: R.Tensor((1, 8, 1, 1), "float32"), w2: R.Tensor((4, 8, 3, 3), "float32"),
             w3: R.Tensor((8, 1, 3, 3), "float32"),
             w4: R.Tensor((2, 8, 1, 1), "float32")) -> R.Tensor((1, 2, 8, 8), "float32"):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            a = R.nn.conv2d(x, w1)
            b = R.nn.relu(R.multiply(a, s))
            c = R.nn.conv2d(b, w2, padding=[1, 1, 1, 1])
            d = R.concat((b, b), axis=1)
            e = R.nn.conv2d(b, w3, padding=[1, 1, 1, 1], groups=8)
            f = R.nn.conv2d(R.add(e, R.strided_slice(d, axes=[1], begin=[8], end=[16])), w4)
            R.output(c, f)
        return f


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((1, 4, 8, 8), "float32"), w1: R.Tensor((4, 4, 1, 1), "float32"),
             s: R.Tensor((1, 4, 1, 1), "float32"), w2: R.Tensor((4, 4, 3, 3), "float32"),
             w3: R.Tensor((4, 1, 3, 3), "float32"),
             w4: R.Tensor((2, 4, 1, 1), "float32")) -> R.Tensor((1, 2, 8, 8), "float32"):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            a = R.nn.conv2d(x, w1)
            b = R.nn.relu(R.multiply(a, s))
            c = R.nn.conv2d(b, w2, padding=[1, 1, 1, 1])
            d = R.concat((b, b), axis=1)
            e = R.nn.conv2d(b, w3, padding=[1, 1, 1, 1], groups=4)
            f = R.nn.conv2d(R.add(e, R.strided_slice(d, axes=[1], begin=[4], end=[8])), w4)
            R.output(c, f)
        return f


def test_rewrite_slices_weights_groups_and_slice_bounds():
    func = Before["main"]
    rng = np.random.default_rng(0)
    weights = {str(p.name): rng.normal(size=[int(d) for d in p.ty.shape]).astype("float32") for p in func.params[1:]}
    keep = np.array([1, 0, 1, 0, 1, 0, 1, 0], bool)
    result = prune_function(func, PruningConfig(masks={"w1": keep}), weights=weights)
    tvm.ir.assert_structural_equal(result.func.without_attr("global_symbol"),
                                   Expected["main"].without_attr("global_symbol"))
    np.testing.assert_array_equal(result.weights["w1"], weights["w1"][keep])
    np.testing.assert_array_equal(result.weights["w2"], weights["w2"][:, keep])
    np.testing.assert_array_equal(result.weights["s"], weights["s"][:, keep])
    np.testing.assert_array_equal(result.weights["w3"], weights["w3"][keep])


def test_pruning_after_bn_folding_is_still_lossless():
    # Folding gamma = 0 into the conv leaves a zero filter plus a bias: the same constant channel.
    net = Net(shape=(1, 3, 16, 16))
    gamma = np.ones(16)
    gamma[[0, 5, 6, 9]] = 0.0
    x = net.prelu(net.bn(net.conv("x", 3, 16, k=1, name="expand"), 16, gamma=gamma), 16)
    model = net.model([net.conv(x, 16, 8, k=1, name="project")])
    folded = FoldBatchNorm()(load_model(model).mod)
    evaluate = HostEvaluator()
    result = prune_function(folded["main"], PruningConfig(ratio=0.0, criterion="bn_gamma"), evaluate=evaluate)
    assert [g["kept"] for g in result.plan.report if g["group"].startswith("conv0")] == [12]
    sample = np.random.default_rng(3).normal(size=(1, 3, 16, 16)).astype(np.float32)
    got = evaluate(result.func, result.weights, [[sample]])[0][0]
    np.testing.assert_allclose(got, run_onnx(model, sample)[0], rtol=1e-5, atol=1e-5)
