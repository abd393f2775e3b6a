"""schedules/gemm_epilogue.py: which TIR tails of a 1x1 conv the fused GEMM tile computes in registers,
read off tail blocks written in TVMScript (the forms FuseTIR and the NaN-keeping legalizations give)."""

from __future__ import annotations

import pytest
from tvm.script import tirx as T

from edgetvm.kernels.neon_f32_gemm import Epilogue
from edgetvm.schedules.gemm_epilogue import match_gemm_epilogue

SIX, TENTH = 0x40C00000, 0x3DCCCCCD
H, W, C = 2, 4, 8


def tail_block(value):
    """The tail block of a (1, H, W, C) conv whose stored value is ``value(acc, bias, slope, res, index)``,
    and the accumulator buffer."""
    @T.prim_func(s_tir=True)
    def tail(acc: T.Buffer((1, H, W, C), "float32"), bias: T.Buffer((1, 1, 1, C), "float32"),
             slope: T.Buffer((C,), "float32"), res: T.Buffer((1, H, W, C), "float32"),
             out: T.Buffer((1, H, W, C), "float32")):
        for n, h, w, c in T.grid(1, H, W, C):
            with T.sblock("tail"):
                vn, vh, vw, vc = T.axis.remap("SSSS", [n, h, w, c])
                out[vn, vh, vw, vc] = value(acc, bias, slope, res, (vn, vh, vw, vc))

    block = tail.body.block.body.body.body.body.body.block
    return block, tail.params[0]


def b(acc, bias, i):
    return acc[i] + bias[i[0], 0, 0, i[3]]


@pytest.mark.parametrize("value,epilogue,operands", [
    (lambda acc, bias, slope, res, i: acc[i], Epilogue(), []),
    (lambda acc, bias, slope, res, i: T.Select(T.float32(0) < b(acc, bias, i), b(acc, bias, i), b(acc, bias, i) * slope[i[3]]),
     Epilogue(True, (("prelu", None),)), ["slope", "bias"]),
    (lambda acc, bias, slope, res, i: T.min(T.float32(6), T.max(T.float32(0), b(acc, bias, i))),
     Epilogue(True, (("max", 0), ("min", SIX))), ["bias"]),
    (lambda acc, bias, slope, res, i: T.max(acc[i], acc[i] * T.float32(0.1)), Epilogue(False, (("leaky", TENTH),)), []),
    (lambda acc, bias, slope, res, i: T.max(T.float32(0), b(acc, bias, i) + res[i]),
     Epilogue(True, (("res", None), ("max", 0))), ["res", "bias"]),
])
def test_tails_the_tile_computes(value, epilogue, operands):
    block, acc = tail_block(value)
    matched = match_gemm_epilogue(block, acc, [1, H, W, C])
    assert matched is not None and matched.epilogue == epilogue and sorted(matched.loads) == sorted(operands)
    assert sorted(matched.loads) == sorted(epilogue.operands)


@pytest.mark.parametrize("value", [
    lambda acc, bias, slope, res, i: T.sigmoid(b(acc, bias, i)),                                 # another op
    lambda acc, bias, slope, res, i: T.max(T.float32(0), acc[i]) + bias[i[0], 0, 0, i[3]],         # bias after ReLU
    lambda acc, bias, slope, res, i: b(acc, bias, i) * slope[i[3]],                                # a scale
    lambda acc, bias, slope, res, i: T.max(acc[i], acc[i] * T.float32(1.5)),                       # max(v, 1.5 v) is no LeakyReLU
    lambda acc, bias, slope, res, i: T.min(T.float32(6), T.max(T.float32(0), T.max(acc[i], acc[i] * T.float32(0.2)))),  # 3 constants
    lambda acc, bias, slope, res, i: acc[i] + res[i[0], i[1], 0, i[3]],                            # not the output's element
])
def test_tails_it_declines(value):
    block, acc = tail_block(value)
    assert match_gemm_epilogue(block, acc, [1, H, W, C]) is None
