"""The host build rounds every product before adding it, as the ARMv7 build does
(``backends/unfused_products.py``): the IR rewrite itself, and a host kernel checked bit for bit
against numpy's float32 multiply-then-add."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import edgetvm
from edgetvm.backends.unfused_products import with_unfused_products

BEFORE = """\
define internal fastcc i32 @dense_compute_(ptr %x) {
  %4 = tail call <16 x float> @llvm.fmuladd.v16f32(<16 x float> %1, <16 x float> %2, <16 x float> %3), !dbg !7
  %5 = fmul <16 x float> %4, splat (float 2.000000e+00), !dbg !7
  %6 = fadd <16 x float> %5, %3
  %7 = fadd float %a, %b
}
declare <16 x float> @llvm.fmuladd.v16f32(<16 x float>, <16 x float>, <16 x float>)
"""

EXPECTED = """\
define internal fastcc i32 @dense_compute_(ptr %x) {
  %edgetvm.product.2 = fmul <16 x float> %1, %2
  %edgetvm.fenced.2 = call <16 x float> @llvm.arithmetic.fence.v16f32(<16 x float> %edgetvm.product.2)
  %4 = fadd <16 x float> %edgetvm.fenced.2, %3, !dbg !7
  %edgetvm.product.1 = fmul <16 x float> %4, splat (float 2.000000e+00), !dbg !7
  %5 = call <16 x float> @llvm.arithmetic.fence.v16f32(<16 x float> %edgetvm.product.1)
  %6 = fadd <16 x float> %5, %3
  %7 = fadd float %a, %b
}
declare <16 x float> @llvm.fmuladd.v16f32(<16 x float>, <16 x float>, <16 x float>)

declare <16 x float> @llvm.arithmetic.fence.v16f32(<16 x float>)
"""


def test_products_are_fenced_from_the_additions_that_take_them():
    assert with_unfused_products(BEFORE) == EXPECTED


def test_ir_without_float_products_is_unchanged():
    ir = "define i32 @copy_compute_(ptr %x) {\n  %1 = fadd float %a, %b\n  %2 = mul i32 %c, %d\n}\n"
    assert with_unfused_products(ir) == ir


def _dense(x_features: int, units: int, rng: np.random.Generator):
    w = rng.standard_normal((units, x_features)).astype(np.float32)
    b = rng.standard_normal(units).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "w", "b"], ["output"], transB=1)], "dense",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, x_features])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, units])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), w, b


def test_host_dense_rounds_each_product_as_numpy_float32():
    rng = np.random.default_rng(0)
    model, w, b = _dense(64, 32, rng)
    x = rng.standard_normal((1, 64)).astype(np.float32)
    got = edgetvm.compile(model, "host").run_dict(x)["output"]
    # The kernel sums the features in order; each product rounded (what ARM's vmla.f32 does) or
    # not (an FMA): the build must give the first bit for bit.
    unfused, fused = np.zeros(32, np.float32), np.zeros(32, np.float32)
    for k in range(64):
        unfused = unfused + x[0, k] * w[:, k]
        fused = (fused + x[0, k].astype(np.float64) * w[:, k]).astype(np.float32)
    assert not np.array_equal(unfused, fused)
    np.testing.assert_array_equal(got[0], unfused + b)
