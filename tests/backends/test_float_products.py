"""The one reading of TVM's LLVM IR that both builds' rounding rests on (``backends/float_products.py``):
every product LLVM may fuse is found, in real IR as TVM writes it and in the forms it may take."""

from __future__ import annotations

import re

import tvm
from tvm import te

from edgetvm.backends.float_products import FMULADD, adds_a_product
from edgetvm.backends.unfused_products import with_unfused_products


def _host_ir_of_a_vectorized_matmul() -> str:
    a = te.placeholder((16, 32), name="a")
    b = te.placeholder((32, 8), name="b")
    k = te.reduce_axis((0, 32), name="k")
    c = te.compute((16, 8), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    func = te.create_prim_func([a, b, c])
    sch = tvm.s_tir.Schedule(func)
    block = sch.get_sblock("c")
    i, j, kk = sch.get_loops(block)
    sch.reorder(i, kk, j)
    sch.vectorize(j)
    return tvm.tirx.build(sch.mod, target="llvm").inspect_source("ll")


def test_every_fmuladd_call_of_real_ir_is_read_and_split():
    ir = _host_ir_of_a_vectorized_matmul()
    calls = re.findall(r"^\s*%[\w.]+ = .*call .*@llvm\.fmuladd\.", ir, re.M)
    assert calls, "TVM no longer writes llvm.fmuladd: the scanner's premise changed"
    assert len(FMULADD.findall(ir)) == len(calls)
    unfused = with_unfused_products(ir)
    assert not re.search(r"^\s*%[\w.]+ = .*call .*@llvm\.fmuladd\.", unfused, re.M)


def test_forms_of_a_product_that_llvm_may_fuse():
    assert adds_a_product("  %4 = call fast <4 x float> @llvm.fmuladd.v4f32(<4 x float> %1, "
                          "<4 x float> <float 1.0, float 2.0, float 3.0, float 4.0>, <4 x float> zeroinitializer)")
    assert adds_a_product("  %3 = fmul nnan float %1, 2.000000e+00\n  %5 = fsub float %4, %3\n")
    assert not adds_a_product("  %3 = fmul float %1, %2\n  %5 = fadd float %4, %6\n  store float %3, ptr %p\n")
    assert not adds_a_product("  %3 = fadd float %1, %2\n  %4 = mul i32 %a, %b\n")
