"""MinMaxToClip: ``min(max(x, a), b)`` with scalar constant bounds, as Relax ops or as the ONNX
frontend's Clip kernels, becomes one ``clip``; other min/max stay."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax, topi
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from edgetvm.transform import MinMaxToClip

from .relax_numerics import has_op, run_relax


def run_pass(mod):
    rewrite = MinMaxToClip()
    return rewrite(mod), rewrite.findings


@I.ir_module
class MaxThenMin:
    @R.function
    def main(x: R.Tensor((1, 8, 4, 4), "float32")):
        with R.dataflow():
            y = R.maximum(x, R.const(0.0, "float32"))
            z = R.minimum(y, R.const(6.0, "float32"))
            R.output(z)
        return z


@I.ir_module
class Clipped:
    @R.function
    def main(x: R.Tensor((1, 8, 4, 4), "float32")):
        with R.dataflow():
            z = R.clip(x, R.prim_value(T.float64(0.0)), R.prim_value(T.float64(6.0)))
            R.output(z)
        return z


@I.ir_module
class MaxUsedTwice:
    @R.function
    def main(x: R.Tensor((1, 8, 4, 4), "float32")):
        with R.dataflow():
            y = R.maximum(x, R.const(0.0, "float32"))
            z = R.minimum(y, R.const(6.0, "float32"))
            s = R.add(y, z)
            R.output(s)
        return s


@I.ir_module
class MinThenMax:
    @R.function
    def main(x: R.Tensor((1, 8, 4, 4), "float32")):
        with R.dataflow():
            y = R.minimum(x, R.const(6.0, "float32"))
            z = R.maximum(y, R.const(0.0, "float32"))
            R.output(z)
        return z


@I.ir_module
class TensorBound:
    @R.function
    def main(x: R.Tensor((1, 8, 4, 4), "float32"), hi: R.Tensor((), "float32")):
        with R.dataflow():
            y = R.maximum(x, R.const(0.0, "float32"))
            z = R.minimum(y, hi)
            R.output(z)
        return z


def onnx_clip_kernels() -> tvm.IRModule:
    """How TVM's ONNX frontend imports ``Clip(x, 0, 6)`` (opset 13): two ``call_tir`` kernels reading a
    0-d bound tensor each."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 4, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            low = bb.emit_te(topi.maximum, x, relax.const(np.float32(0.0)))
            out = bb.emit_output(bb.emit_te(topi.minimum, low, relax.const(np.float32(6.0))))
        bb.emit_func_output(out)
    return bb.get()


def test_relax_max_then_min_becomes_clip():
    after, findings = run_pass(MaxThenMin)
    tvm.ir.assert_structural_equal(after["main"], Clipped["main"])
    assert findings == {"rewritten": 1}


def test_frontend_clip_kernels_become_one_clip_computing_the_same(rng):
    before = onnx_clip_kernels()
    after, findings = run_pass(before)
    assert findings == {"rewritten": 1}
    assert has_op(after, "relax.clip") and not has_op(after, "relax.call_tir")
    x = rng.uniform(-10, 10, (1, 8, 4, 4)).astype(np.float32)
    x.flat[:4] = [0.0, 6.0, -0.0, 5.999999]
    np.testing.assert_array_equal(run_relax(after, x), run_relax(before, x))
    np.testing.assert_array_equal(run_relax(after, x), np.clip(x, 0.0, 6.0))


@pytest.mark.parametrize("before", [MaxUsedTwice, MinThenMax, TensorBound], ids=["max-used-twice", "min-then-max",
                                                                                "tensor-bound"])
def test_other_min_max_stay(before):
    after, findings = run_pass(before)
    tvm.ir.assert_structural_equal(after, before)
    assert findings == {"rewritten": 0}
