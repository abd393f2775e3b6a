"""Fold Relax ops on constants with numpy, before legalization.

TVM's ``FoldConstant`` evaluates a constant subexpression by compiling it with LLVM and running it:
fine for one op, but a CNN has one weight layout change (``permute_dims``), one bias ``reshape`` and
a batch-norm ``sqrt(var + eps)`` per conv, and compiling each of them takes most of a minute for
MobileNetV2. These ops are exact in numpy (data movement, or one IEEE operation per element in the
tensor's own dtype), so folding them here gives the same constants in milliseconds. Anything not
listed is left for TVM's ``FoldConstant``.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..relax_utils import bound_constant, op_name
from .base import GraphPass, graph_pass

_UNARY = {
    "relax.isnan": np.isnan,
    "relax.sqrt": np.sqrt,
    "relax.rsqrt": lambda x: (1 / np.sqrt(x)).astype(x.dtype),
    "relax.negative": np.negative,
    "relax.exp": np.exp,
    "relax.abs": np.abs,
}
_BINARY = {
    "relax.add": np.add,
    "relax.subtract": np.subtract,
    "relax.multiply": np.multiply,
    "relax.divide": np.divide,
    "relax.maximum": np.maximum,
    "relax.minimum": np.minimum,
}


def _evaluate(call: relax.Call, values: list[np.ndarray]) -> np.ndarray | None:
    name = op_name(call)
    if name in _UNARY:
        return _UNARY[name](values[0])
    if name in _BINARY:
        return _BINARY[name](values[0], values[1])
    if name == "relax.where":
        return np.where(values[0], values[1], values[2])
    if name == "relax.permute_dims":
        axes = call.attrs.axes
        return np.transpose(values[0], None if axes is None else [int(a) for a in axes])
    if name == "relax.expand_dims":
        return np.expand_dims(values[0], tuple(int(a) for a in call.attrs.axis))
    if name == "relax.astype":
        return values[0].astype(str(call.attrs.dtype))
    return None


@relax.expr_functor.mutator
class _NumpyConstantFolder(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.folded = 0

    def _value(self, expr) -> np.ndarray | None:
        if isinstance(expr, relax.Var):
            bound = self.lookup_binding(expr)
            return bound_constant(bound) if bound is not None else None
        return bound_constant(expr)

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        name = op_name(call)
        if name is None:
            return call
        if name == "relax.reshape" and isinstance(call.args[1], relax.ShapeExpr):
            data = self._value(call.args[0])
            shape = [int(v) for v in call.args[1].values] if data is not None else None
            if shape is None or any(not isinstance(v, tvm.tirx.IntImm) for v in call.args[1].values):
                return call
            self.folded += 1
            return relax.const(data.reshape(shape))
        values = [self._value(a) for a in call.args]
        if not values or any(v is None for v in values):
            return call
        result = _evaluate(call, values)
        if result is None:
            return call
        dtype = getattr(call.ty, "dtype", None)
        result = np.asarray(result)
        if dtype is not None and str(dtype) != "":
            result = result.astype(str(dtype))
        self.folded += 1
        return relax.const(result)


@graph_pass("FoldConstantsWithNumpy")
class FoldConstantsWithNumpy(GraphPass):
    """Replace layout/arithmetic ops whose inputs are all constants by their (numpy) result.

    After running, ``findings`` holds ``{"folded"}``: the ops replaced by constants.
    """

    def new_findings(self) -> dict:
        return {"folded": 0}

    def visits(self, gvar, func) -> bool:
        return isinstance(func, relax.Function)  # fused kernels too: their constants fold the same way

    def rewrite_function(self, gvar, func: relax.Function, mod: tvm.IRModule) -> relax.Function:
        folder = _NumpyConstantFolder(mod)
        rewritten = folder.visit_expr(func)
        self.findings["folded"] += folder.folded
        return rewritten
