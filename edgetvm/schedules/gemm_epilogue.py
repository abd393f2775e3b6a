"""Reads a 1x1 conv kernel's elementwise tail as the epilogue a fused GEMM tile computes in registers
(``kernels.neon_f32_gemm.Epilogue``): the bias add, PReLU, ReLU/ReLU6 (max/min by a constant) and the
residual add that MobileFaceNet, MobileNetV2 and the MediaPipe models fuse into their 1x1 convs.

The tail is one expression of the accumulator ``acc[n, h, w, c]`` (the reduction's output, read at
the tail's own iterators) after ``FuseTIR`` and the schedule's inlining, for example::

    select(0 < acc + b[0, 0, 0, c], acc + b[0, 0, 0, c], (acc + b[0, 0, 0, c]) * s[c])   # bias, prelu
    max(acc, acc * 0.1)                                                                 # leaky
    min(6, max(0, acc + b[0, 0, 0, c]))                                                 # bias, max 0, min 6
    acc + b[0, 0, 0, c] + r[n, h, w, c]                                                 # bias, res

Anything else (another op, a bias after the activation, a per-channel scale, a third constant) is
declined: the kernel then keeps the tensorized tile whose tail TIR computes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import tirx

from ..kernels.neon_f32_gemm import EPILOGUE_CONSTANTS, Epilogue


@dataclass(frozen=True)
class MatchedEpilogue:
    """The epilogue, and the loads of its tensor operands (``bias``, ``slope``, ``res``: the names of
    ``Epilogue.operands``) at the tail's iterators."""

    epilogue: Epilogue
    loads: dict[str, tvm.ir.TensorLoad]


def _float_bits(expr) -> int | None:
    if isinstance(expr, tirx.FloatImm) and str(expr.ty) == "float32":
        return struct.unpack("<I", struct.pack("<f", expr.value))[0]
    return None


def _leaky_slope(expr) -> bool:
    """A constant ``a`` in [0, 1]: then ``select(0 < v, v, v * a) = max(v, v * a)``."""
    return _float_bits(expr) is not None and 0.0 <= expr.value <= 1.0


class _TailReader:
    """Matches the tail's value against the grammar of the module docstring, outermost op last."""

    def __init__(self, acc, store: tirx.BufferStore, extents: list[int]):
        self.acc = acc
        self.store = store
        # An iterator of extent 1 is always 0: a bias indexed by it is still a channel vector.
        self.unit = [index for index, extent in zip(store.indices, extents) if extent == 1]
        self.channel = store.indices[-1]
        self.channels = extents[-1]

    def _index(self, index):
        if isinstance(index, tirx.IntImm) and index.value == 0:
            return 0
        if isinstance(index, tirx.Var) and any(index.same_as(v) for v in self.unit):
            return 0
        return index

    def _pattern(self, indices) -> list:
        return [self._index(i) for i in indices]

    def _same_indices(self, a, b) -> bool:
        pa, pb = self._pattern(a), self._pattern(b)
        return len(pa) == len(pb) and all(
            (x == 0 and y == 0) or (not isinstance(x, int) and not isinstance(y, int) and x.same_as(y))
            for x, y in zip(pa, pb))

    def is_acc(self, expr) -> bool:
        return (isinstance(expr, tvm.ir.TensorLoad) and expr.source.same_as(self.acc)
                and self._same_indices(expr.indices, self.store.indices))

    def is_channel_vector(self, expr) -> bool:
        """A load of ``channels`` floats indexed by the output channel alone."""
        if not isinstance(expr, tvm.ir.TensorLoad) or str(expr.ty) != "float32":
            return False
        pattern = self._pattern(expr.indices)
        size = 1
        for dim in expr.source.shape:
            size *= int(dim)
        return (size == self.channels and all(p == 0 for p in pattern[:-1])
                and not isinstance(pattern[-1], int) and pattern[-1].same_as(self.channel))

    def is_pixel_tensor(self, expr) -> bool:
        """A load of a tensor shaped like the output, at the output's element."""
        return (isinstance(expr, tvm.ir.TensorLoad) and str(expr.ty) == "float32"
                and [int(d) for d in expr.source.shape] == [int(d) for d in self.store.buffer.shape]
                and self._same_indices(expr.indices, self.store.indices))

    def read(self, expr):
        """(bias load or None, [(kind, bits, load or None)]) of ``expr``, or None."""
        if self.is_acc(expr):
            return None, []
        if isinstance(expr, tirx.Add):
            for value, other in ((expr.a, expr.b), (expr.b, expr.a)):
                inner = self.read(value)
                if inner is None:
                    continue
                bias, ops = inner
                if not ops and bias is None and self.is_channel_vector(other):
                    return other, ops
                if self.is_pixel_tensor(other):
                    return bias, ops + [("res", None, other)]
            return None
        if isinstance(expr, tirx.Select):
            cond, value = expr.condition, expr.true_value
            if not (isinstance(cond, tirx.LT) and _float_bits(cond.a) == 0 and tvm_ffi.structural_equal(cond.b, value)):
                return None
            product = expr.false_value
            if not isinstance(product, tirx.Mul):
                return None
            for v, slope in ((product.a, product.b), (product.b, product.a)):
                if not tvm_ffi.structural_equal(v, value):
                    continue
                inner = self.read(value)
                if inner is None:
                    return None
                bias, ops = inner
                if self.is_channel_vector(slope):
                    return bias, ops + [("prelu", None, slope)]
                if _leaky_slope(slope):
                    return bias, ops + [("leaky", _float_bits(slope), None)]
            return None
        if isinstance(expr, tirx.Max):
            # TVM's LeakyReLU: max(v, v * a).
            for value, product in ((expr.a, expr.b), (expr.b, expr.a)):
                if not isinstance(product, tirx.Mul):
                    continue
                for v, slope in ((product.a, product.b), (product.b, product.a)):
                    if tvm_ffi.structural_equal(v, value) and _leaky_slope(slope):
                        inner = self.read(value)
                        if inner is not None:
                            return inner[0], inner[1] + [("leaky", _float_bits(slope), None)]
        if isinstance(expr, (tirx.Max, tirx.Min)):
            kind = "max" if isinstance(expr, tirx.Max) else "min"
            for constant, value in ((expr.a, expr.b), (expr.b, expr.a)):
                if _float_bits(constant) is not None:
                    inner = self.read(value)
                    if inner is None:
                        return None
                    bias, ops = inner
                    return bias, ops + [(kind, _float_bits(constant), None)]
        return None


def match_gemm_epilogue(tail: tvm.s_tir.SBlock, acc, extents: list[int]) -> MatchedEpilogue | None:
    """The epilogue of the tail block ``tail`` (its value an expression of the buffer ``acc``, its
    output of spatial ``extents``, channels last); None when the tail is not of that form."""
    store = tail.body
    if not isinstance(store, tirx.BufferStore) or not all(isinstance(i, tirx.Var) for i in store.indices):
        return None
    read = _TailReader(acc, store, extents).read(store.value)
    if read is None:
        return None
    bias, ops = read
    kinds = [kind for kind, _, _ in ops]
    if kinds.count("prelu") > 1 or kinds.count("res") > 1:
        return None
    epilogue = Epilogue(bias is not None, tuple((kind, bits) for kind, bits, _ in ops))
    if len(epilogue.constants) > EPILOGUE_CONSTANTS:
        return None
    loads = {"slope" if kind == "prelu" else kind: load for kind, _, load in ops if load is not None}
    if bias is not None:
        loads["bias"] = bias
    return MatchedEpilogue(epilogue, loads)
